export * from './greedy.js';
export { type MergeOptions, type MergeResult, mergeCheckpoints } from './merge.js';
export * from './methods.js';
export * from './validate.js';
export * from './weights.js';
