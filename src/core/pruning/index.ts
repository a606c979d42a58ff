export * from './methods.js';
export * from './prunable.js';
export { keyToFloat } from './select.js';
