import type { ArtifactStore } from '../../artifacts/artifact-store.js';
import { openSafetensors } from '../../core/checkpoint/safetensors.js';
import { openTfjsWeights } from '../../core/checkpoint/tfjs.js';
import type { CheckpointReader, TensorEntry } from '../../core/tensors.js';

/** A stored model as tasks name it: enough to open its weights, nothing big. */
export interface StoredModelRef {
  format: 'safetensors' | 'tfjs-layers';
  weightsSha256: string;
  /** The weights layout (absolute offsets): needed for TensorFlow.js weights, informative for safetensors. */
  entries: TensorEntry[];
}

export function openStoredModel(store: ArtifactStore, ref: StoredModelRef): Promise<CheckpointReader> {
  const path = store.pathOf(ref.weightsSha256);
  return ref.format === 'safetensors' ? openSafetensors(path) : openTfjsWeights(path, ref.entries);
}
