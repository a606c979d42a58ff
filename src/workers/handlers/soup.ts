import * as tf from '@tensorflow/tfjs';
import type { ImageDataset } from '../../core/data/dataset.js';
import { type GreedyStep, greedySoup } from '../../core/soups/greedy.js';
import type { Mask } from '../../core/masks/index.js';
import { mergeCheckpoints } from '../../core/soups/merge.js';
import { findSoupMethod, linearSoupWeights } from '../../core/soups/methods.js';
import { validateCandidates } from '../../core/soups/validate.js';
import type { CheckpointReader, TensorEntry } from '../../core/tensors.js';
import { hasBatchNorm } from '../../core/tf/batch-norm.js';
import { recalibrateBatchNorm } from '../../core/tf/bn-recalibration.js';
import { evaluateModel } from '../../core/tf/evaluate.js';
import { namedWeights } from '../../core/tf/model-io.js';
import type { ArtifactStore, StoredArtifact } from '../../storage/artifact-store.js';
import { writeCheckpointArtifact } from '../../storage/checkpoint-output.js';
import type { SoupTask, SoupTaskResult } from '../tasks.js';
import type { TaskContext } from '../shared/context.js';
import { loadDataset } from '../shared/datasets.js';
import { loadStoredLayersModel, openStoredModel, storeLayersModel } from '../shared/stored-models.js';

export async function runSoup(task: SoupTask, ctx: TaskContext): Promise<SoupTaskResult> {
  const store = ctx.store;
  const readers: CheckpointReader[] = [];
  try {
    for (const m of task.models) readers.push(await openStoredModel(store, m));
    const validated = await validateCandidates(readers, { maskHashes: task.maskHashes });
    if (task.validateOnly) return { maskHash: validated.maskHash, weights: [], steps: null, valAccuracy: null, stored: null };

    const layers = task.models[0].format === 'tfjs-layers';
    const ds = task.dataset ? await loadDataset(task.dataset, ctx) : null;
    const method = findSoupMethod(task.method);
    let weights: number[];
    let steps: GreedyStep[] | null = null;
    if (method.kind === 'greedy') {
      if (!layers || !ds) throw new Error('greedy soups need layers models and a dataset (checked by the service)');
      const g = await greedyOverLayersModels(store, task, readers, validated.mask, ds, (done, total) => ctx.progress({ done, total }));
      weights = g.weights;
      steps = g.trace;
    } else {
      weights = linearSoupWeights(method, task.models.length, method.parameters.some((p) => p.name === 'weights') ? { weights: task.weights ?? null } : {});
    }
    // A graph model's soup keeps its graph: the same model.json, merged weights.
    const tfjs = layers || task.models[0].format === 'tfjs-graph';
    const format = task.models[0].format;
    let written = await writeCheckpointArtifact(store, format, readers[0].tensors as never, (sink) =>
      mergeCheckpoints(readers, weights, sink, { format: tfjs ? 'tfjs-weights' : 'safetensors', mask: validated.mask }),
    );
    let topology: StoredArtifact | null = tfjs ? { sha256: task.models[0].topologySha256!, sizeBytes: 0, created: false } : null;
    let valAccuracy: number | null = null;
    if (layers && ds) {
      // BN statistics of an average are not the average's statistics: recompute them, then score.
      const soup = await loadStoredLayersModel(store, { ...task.models[0], weightsSha256: written.weights.sha256, entries: written.entries });
      try {
        if (task.recalibrate && hasBatchNorm(soup)) {
          recalibrateBatchNorm(soup, ds);
          const merged = written.weights;
          const saved = await storeLayersModel(store, soup);
          if (merged.created && merged.sha256 !== saved.model.weights.sha256) await store.delete(merged.sha256);
          written = saved.model;
          topology = saved.topology;
        }
        if (ds.splits.val.length) valAccuracy = evaluateModel(soup, ds, 'val').accuracy;
      } finally {
        soup.dispose();
      }
    }
    return { maskHash: validated.maskHash, weights, steps, valAccuracy, stored: { weights: written, topology } };
  } finally {
    for (const r of readers) await r.close();
  }
}

/**
 * Greedy soup over layers models: a set is scored by merging its members with the same merge that
 * writes the soup (`mergeCheckpoints`: float64 sums, one rounding, the shared mask re-applied) into
 * memory, loading those bytes into a scratch model, recalibrating its batch norm and measuring
 * accuracy on the val split. So the score recorded for the accepted set is the score of the stored soup.
 */
async function greedyOverLayersModels(
  store: ArtifactStore,
  task: SoupTask,
  readers: readonly CheckpointReader[],
  mask: Mask | undefined,
  ds: ImageDataset,
  progress: (done: number, total: number) => void,
) {
  const scratch = await loadStoredLayersModel(store, task.models[0]);
  const recalibrate = task.recalibrate && hasBatchNorm(scratch);
  const variables = namedWeights(scratch);
  let scored = 0;
  try {
    return await greedySoup(
      readers.length,
      async (weights) => {
        const bytes = await mergeIntoMemory(readers, weights, mask);
        setWeightsFromBytes(variables, readers[0].tensors, bytes);
        if (recalibrate) recalibrateBatchNorm(scratch, ds);
        progress(++scored, 2 * readers.length - 1);
        return evaluateModel(scratch, ds, 'val').accuracy;
      },
      { comparison: task.comparison ?? '>=' },
    );
  } finally {
    scratch.dispose();
  }
}

/** The merged TensorFlow.js weights bytes of a weighted set, in memory (the soup writer's arithmetic). */
async function mergeIntoMemory(readers: readonly CheckpointReader[], weights: readonly number[], mask: Mask | undefined): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  await mergeCheckpoints(readers, weights, async (chunk) => {
    chunks.push(chunk.slice()); // the merge reuses its output buffers
    size += chunk.byteLength;
  }, { format: 'tfjs-weights', mask });
  const out = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}

/** Assigns weights bytes laid out as `entries` (TensorFlow.js weights, offsets from 0) to a model's variables. */
function setWeightsFromBytes(variables: Map<string, tf.LayerVariable>, entries: readonly TensorEntry[], bytes: Uint8Array): void {
  for (const e of entries) {
    const v = variables.get(e.name);
    if (!v) throw new Error(`the scratch model has no weight ${e.name}`);
    const slice = bytes.slice(e.byteOffset, e.byteOffset + e.byteLength);
    const values = e.dtype === 'F32' ? new Float32Array(slice.buffer) : e.dtype === 'I32' ? new Int32Array(slice.buffer) : slice;
    const t = tf.tensor(values, e.shape, e.dtype === 'F32' ? 'float32' : e.dtype === 'I32' ? 'int32' : 'bool');
    v.write(t);
    t.dispose();
  }
}
