import type * as tf from '@tensorflow/tfjs';
import { ArtifactStore, type StoredArtifact } from '../../artifacts/artifact-store.js';
import { type WrittenCheckpoint, writeCheckpointArtifact } from '../../artifacts/checkpoint-output.js';
import { parseModelJson } from '../../core/checkpoint/tfjs.js';
import { saveModel } from '../../core/tf/model-io.js';
import { buildTemplate } from '../../core/tf/templates.js';
import type { TaskContext } from '../tasks.js';

export interface TemplateTask {
  type: 'template';
  architecture: string;
  inputShape: [number, number, number];
  classes: number;
  seed: number;
}

export interface StoredLayersModel {
  topology: StoredArtifact;
  model: WrittenCheckpoint;
}

export async function runTemplate(task: TemplateTask, ctx: TaskContext): Promise<StoredLayersModel> {
  const model = buildTemplate(task.architecture, { inputShape: task.inputShape, classes: task.classes, seed: task.seed });
  try {
    return await storeLayersModel(new ArtifactStore(ctx.init.artifactsDir), model);
  } finally {
    model.dispose();
  }
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
