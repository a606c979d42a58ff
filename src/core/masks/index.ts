export * from './codec.js';
export * from './compare.js';
export * from './implied.js';
export * from './mask.js';
export * from './sparse.js';
