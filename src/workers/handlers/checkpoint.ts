import { readFile } from 'node:fs/promises';
import type * as tf from '@tensorflow/tfjs';
import type { ArtifactStore } from '../../artifacts/artifact-store.js';
import { openSafetensors } from '../../core/checkpoint/safetensors.js';
import { openTfjsWeights } from '../../core/checkpoint/tfjs.js';
import type { ImageDataset } from '../../core/data/dataset.js';
import { CoreInputError } from '../../core/errors.js';
import type { CheckpointReader, TensorEntry } from '../../core/tensors.js';
import { loadModel } from '../../core/tf/model-io.js';

/** A stored model as tasks name it: enough to open its weights, nothing big. */
export interface StoredModelRef {
  format: 'safetensors' | 'tfjs-layers' | 'tfjs-graph';
  weightsSha256: string;
  /** The weights layout (absolute offsets): needed for TensorFlow.js weights, informative for safetensors. */
  entries: TensorEntry[];
}

export function openStoredModel(store: ArtifactStore, ref: StoredModelRef): Promise<CheckpointReader> {
  const path = store.pathOf(ref.weightsSha256);
  return ref.format === 'safetensors' ? openSafetensors(path) : openTfjsWeights(path, ref.entries);
}

/** A TensorFlow.js layers model as tasks name it: its model.json and weights artifacts. */
export interface StoredLayersModelRef extends StoredModelRef {
  topologySha256: string | null;
}

/** Loads a stored layers model into this thread's backend. Only layers models carry an architecture. */
export async function loadStoredLayersModel(store: ArtifactStore, ref: StoredLayersModelRef): Promise<tf.LayersModel> {
  if (ref.format === 'tfjs-graph') {
    throw new CoreInputError('no-architecture', 'this needs a TensorFlow.js layers model: a graph model (tfjs-graph) can be pruned, masked and souped here, not trained or evaluated', {}, 422);
  }
  if (ref.format !== 'tfjs-layers' || !ref.topologySha256) {
    throw new CoreInputError('no-architecture', 'this needs a TensorFlow.js layers model: a safetensors checkpoint has no architecture to run', {}, 422);
  }
  const [json, weights] = await Promise.all([readFile(store.pathOf(ref.topologySha256)), readFile(store.pathOf(ref.weightsSha256))]);
  return loadModel(new Uint8Array(json), new Uint8Array(weights));
}

/** Refuses a model whose input does not take the dataset's samples. */
export function checkModelFitsDataset(model: tf.LayersModel, ds: ImageDataset): void {
  const input = model.inputs[0].shape.slice(1);
  const want = ds.inputShape;
  const flat = want[0] * want[1] * want[2];
  const ok = (input.length === 3 && input.every((d, i) => d === null || d === want[i])) || (input.length === 1 && (input[0] === null || input[0] === flat));
  if (!ok) {
    throw new CoreInputError('input-shape-mismatch', `the model takes inputs of shape [${input.join(', ')}]; dataset ${ds.id} has samples of shape [${want.join(', ')}]`, { modelInput: input, datasetInput: want }, 422);
  }
  const out = model.outputs[0].shape;
  if (out[out.length - 1] !== ds.classes) {
    throw new CoreInputError('classes-mismatch', `the model has ${out[out.length - 1]} outputs; dataset ${ds.id} has ${ds.classes} classes`, { modelOutputs: out[out.length - 1], classes: ds.classes }, 422);
  }
}
