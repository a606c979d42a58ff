import type * as tf from '@tensorflow/tfjs';
import { openSafetensors } from '../../core/checkpoint/safetensors.js';
import { openTfjsWeights, parseModelJson } from '../../core/checkpoint/tfjs.js';
import type { ImageDataset } from '../../core/data/dataset.js';
import { CoreInputError } from '../../core/errors.js';
import { type Mask, parseMask } from '../../core/masks/index.js';
import type { CheckpointReader } from '../../core/tensors.js';
import { loadModel, saveModel } from '../../core/tf/model-io.js';
import type { ArtifactStore } from '../../storage/artifact-store.js';
import { writeCheckpointArtifact } from '../../storage/checkpoint-output.js';
import type { StoredLayersModel, StoredLayersModelRef, StoredModelRef } from '../tasks.js';

/** Opens a stored model's weights, one tensor at a time. */
export async function openStoredModel(store: ArtifactStore, ref: StoredModelRef): Promise<CheckpointReader> {
  const source = await store.randomAccess(ref.weightsSha256);
  return ref.format === 'safetensors' ? openSafetensors(source) : openTfjsWeights(source, ref.entries);
}

/** Loads a stored layers model into this thread's backend. Only layers models carry an architecture. */
export async function loadStoredLayersModel(store: ArtifactStore, ref: StoredLayersModelRef): Promise<tf.LayersModel> {
  if (ref.format === 'tfjs-graph') {
    throw new CoreInputError('no-architecture', 'this needs a TensorFlow.js layers model: a graph model (tfjs-graph) can be pruned, masked and souped here, not trained or evaluated', {}, 422);
  }
  if (ref.format !== 'tfjs-layers' || !ref.topologySha256) {
    throw new CoreInputError('no-architecture', 'this needs a TensorFlow.js layers model: a safetensors checkpoint has no architecture to run', {}, 422);
  }
  const [json, weights] = await Promise.all([store.readBytes(ref.topologySha256), store.readBytes(ref.weightsSha256)]);
  return loadModel(json, weights);
}

/**
 * Saves a layers model as two artifacts (model.json and the weights), the same shape an upload
 * through tf.io.http takes, checked by the same parsers.
 */
export async function storeLayersModel(store: ArtifactStore, model: tf.LayersModel): Promise<StoredLayersModel> {
  const saved = await saveModel(model);
  const jsonBytes = new TextEncoder().encode(JSON.stringify(saved.modelJson));
  const parsed = parseModelJson(jsonBytes);
  const topology = await store.put(jsonBytes);
  try {
    const weights = new Uint8Array(saved.weightData);
    const written = await writeCheckpointArtifact(store, 'tfjs-layers', parsed.entries, (sink) => sink(weights));
    return { topology, model: written };
  } catch (err) {
    if (topology.created) await store.delete(topology.sha256);
    throw err;
  }
}

/** Reads and parses a stored mask. */
export async function readStoredMask(store: ArtifactStore, sha256: string): Promise<Mask> {
  return parseMask(await store.readBytes(sha256));
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
