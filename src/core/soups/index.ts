export { CachedCheckpoint } from './cached-reader.js';
export * from './greedy.js';
export { type MergeOptions, type MergeResult, mergeCheckpoints, releaseMergeMemory } from './merge.js';
export * from './methods.js';
export * from './validate.js';
export * from './weights.js';
