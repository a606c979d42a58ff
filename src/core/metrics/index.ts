export * from './classification.js';
export * from './ensemble.js';
export * from './weights.js';
