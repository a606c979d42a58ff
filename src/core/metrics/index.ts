export * from './classification.js';
export * from './weights.js';
export * from './ensemble.js';
