import type { StoredLayersModelRef } from '../workers/tasks.js';
import type { ModelEntity } from './model.entity.js';

/** What a worker task needs to open a stored model: artifact addresses and the weights layout. */
export function modelRef(e: ModelEntity): StoredLayersModelRef {
  return {
    format: e.format,
    weightsSha256: e.weightsSha256,
    topologySha256: e.topologySha256,
    entries: e.tensors.map(({ name, dtype, shape, byteOffset, byteLength }) => ({ name, dtype, shape, byteOffset, byteLength })),
  };
}
