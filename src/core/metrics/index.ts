export * from './classification.js';
export * from './weights.js';
