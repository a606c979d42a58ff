export * from './codec.js';
export * from './compare.js';
export * from './implied.js';
export * from './implied-stream.js';
export * from './mask.js';
export * from './sparse.js';
