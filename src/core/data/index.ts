// The data core's public surface, so callers import one module.
export * from './builtin.js';
export * from './corruptions.js';
export * from './dataset.js';
export * from './idx.js';
export * from './npz.js';
export * from './splits.js';
export * from './upload.js';
