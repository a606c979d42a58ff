export * from './dtype.js';
export * from './file-reader.js';
export * from './safetensors.js';
export * from './stats.js';
export * from './tensor-writer.js';
export * from './tfjs.js';
export * from './write-like.js';
export * from './tfjs-quantization.js';
