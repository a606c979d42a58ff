import * as tf from '@tensorflow/tfjs';
import type { ImageDataset } from '../../core/data/dataset.js';
import type { Mask } from '../../core/masks/index.js';
import { CachedCheckpoint } from '../../core/soups/cached-reader.js';
import { type GreedyStep, greedySoup } from '../../core/soups/greedy.js';
import { mergeCheckpoints } from '../../core/soups/merge.js';
import { findSoupMethod, linearSoupWeights } from '../../core/soups/methods.js';
import { validateCandidates } from '../../core/soups/validate.js';
import type { CheckpointReader } from '../../core/tensors.js';
import { hasBatchNorm } from '../../core/tf/batch-norm.js';
import { assignBatchNormStatistics, type BatchMoments, batchNormMoments, recalibrateBatchNorm, recalibrationIndices } from '../../core/tf/bn-recalibration.js';
import { evaluateModel } from '../../core/tf/evaluate.js';
import { namedWeights, setWeightsFromBytes } from '../../core/tf/model-io.js';
import type { ArtifactStore, StoredArtifact } from '../../storage/artifact-store.js';
import { writeCheckpointArtifact } from '../../storage/checkpoint-output.js';
import { type ScoreHelper, startScoreHelper } from '../score-helper.js';
import type { TaskContext } from '../shared/context.js';
import { loadDataset } from '../shared/datasets.js';
import { loadStoredLayersModel, openStoredModel, storeLayersModel } from '../shared/stored-models.js';
import type { SoupTask, SoupTaskResult } from '../tasks.js';

export async function runSoup(task: SoupTask, ctx: TaskContext): Promise<SoupTaskResult> {
  const store = ctx.store;
  const readers: CheckpointReader[] = [];
  let greedy: GreedyLayersResult | null = null;
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
      const helper = (ctx.idleThreads ?? 0) >= 1 && ctx.backend.name === 'wasm';
      greedy = await greedyOverLayersModels(store, task, readers, validated.mask, ds, (done, total) => ctx.progress({ done, total }), { helper });
      weights = greedy.weights;
      steps = greedy.trace;
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
      // A greedy soup's final set was recalibrated and scored already: its scratch model is the soup.
      const soup = greedy?.model ?? (await loadStoredLayersModel(store, { ...task.models[0], weightsSha256: written.weights.sha256, entries: written.entries }));
      try {
        if (task.recalibrate && hasBatchNorm(soup)) {
          if (!greedy) recalibrateBatchNorm(soup, ds, { fraction: task.recalibrationFraction ?? DEFAULT_RECALIBRATION_FRACTION });
          const merged = written.weights;
          const saved = await storeLayersModel(store, soup);
          if (merged.created && merged.sha256 !== saved.model.weights.sha256) await store.delete(merged.sha256);
          written = saved.model;
          topology = saved.topology;
        }
        if (greedy) valAccuracy = greedy.score;
        else if (ds.splits.val.length) valAccuracy = evaluateModel(soup, ds, 'val', { batchSize: EVAL_BATCH }).accuracy;
      } finally {
        if (!greedy) soup.dispose();
      }
    }
    return { maskHash: validated.maskHash, weights, steps, valAccuracy, stored: { weights: written, topology } };
  } finally {
    greedy?.model.dispose();
    for (const r of readers) await r.close();
  }
}

/**
 * Greedy soup over layers models: a set is scored by merging its members with the same merge that
 * writes the soup (`mergeCheckpoints`: float64 sums, one rounding, the shared mask re-applied) into
 * one reused buffer, writing those bytes into one scratch model's variables, recalibrating its
 * batch norm (the configured fraction of the train split) and measuring accuracy on the val split.
 * So the score recorded for the accepted set is the score of the stored soup.
 *
 * Nothing is reloaded per set: each candidate's tensors are read from disk once and held in memory
 * (`CachedCheckpoint`), the model is built once, and each scored set's recalibrated BN statistics
 * are kept (a few floats per channel) so the final soup is the scratch model as scored, without a
 * further recalibration and evaluation.
 */
export interface GreedyLayersResult {
  weights: number[];
  trace: GreedyStep[];
  score: number;
  /** The scratch model holding the final soup (merged weights, its recalibrated statistics); the caller disposes it. */
  model: tf.LayersModel;
  /** 2 when a score helper ran part of every scoring on a second thread, else 1. */
  scoringThreads: number;
}

export async function greedyOverLayersModels(
  store: ArtifactStore,
  task: Pick<SoupTask, 'models' | 'recalibrate' | 'comparison' | 'recalibrationFraction'>,
  readers: readonly CheckpointReader[],
  mask: Mask | undefined,
  ds: ImageDataset,
  progress: (done: number, total: number) => void,
  options: { helper?: boolean } = {},
): Promise<GreedyLayersResult> {
  const scratch = await loadStoredLayersModel(store, task.models[0]);
  const recalibrate = task.recalibrate && hasBatchNorm(scratch);
  const variables = namedWeights(scratch);
  const cached = readers.map((r) => new CachedCheckpoint(r));
  const buffer = new Uint8Array(Math.max(0, ...readers[0].tensors.map((e) => e.byteOffset + e.byteLength)));
  const bnNames = [...variables.keys()].filter((n) => /moving_(mean|variance)$/.test(n));
  const bnStats = new Map<string, Float32Array[]>();
  const keyOf = (weights: readonly number[]) => weights.map((w) => (w > 0 ? 1 : 0)).join('');
  const load = async (weights: readonly number[]) => {
    await mergeIntoBuffer(cached, weights, mask, buffer);
    setWeightsFromBytes(variables, readers[0].tensors, buffer);
  };
  const recalIndices = recalibrate ? recalibrationIndices(ds, { fraction: task.recalibrationFraction ?? DEFAULT_RECALIBRATION_FRACTION }) : new Uint32Array(0);
  const val = ds.splits.val;
  let helper: ScoreHelper | null = null;
  if (options.helper && val.length >= 2 * EVAL_BATCH) {
    helper = await startScoreHelper(scratch, {
      backend: 'wasm',
      entries: readers[0].tensors,
      dataset: ds,
      recalibration: recalIndices,
      recalibrationBatch: RECALIBRATION_BATCH,
      evalBatch: EVAL_BATCH,
    }).catch(() => null); // score on one thread rather than fail
  }
  // Each part a whole number of batches: the parts' batches are the single-thread ones.
  const cut = (n: number, batch: number) => Math.min(n, Math.round(n / 2 / batch) * batch);
  const score = async (): Promise<number> => {
    if (recalibrate) {
      let batches: BatchMoments[][];
      if (helper) {
        const at = cut(recalIndices.length, RECALIBRATION_BATCH);
        const theirs = helper.moments(at, recalIndices.length);
        theirs.catch(() => {}); // awaited below; a local failure must not leave it unhandled
        const mine = batchNormMoments(scratch, ds, recalIndices.subarray(0, at), RECALIBRATION_BATCH);
        batches = [...mine, ...(await theirs)];
      } else {
        batches = batchNormMoments(scratch, ds, recalIndices, RECALIBRATION_BATCH);
      }
      assignBatchNormStatistics(scratch, batches);
      if (helper) await helper.stats(batches);
    }
    if (!helper) return evaluateModel(scratch, ds, 'val', { batchSize: EVAL_BATCH }).accuracy;
    const at = cut(val.length, EVAL_BATCH);
    const theirs = helper.evaluate(at, val.length);
    theirs.catch(() => {});
    const mine = evaluateModel(scratch, ds, val.subarray(0, at), { batchSize: EVAL_BATCH });
    return (Math.round(mine.accuracy * mine.count) + (await theirs)) / val.length;
  };
  let scored = 0;
  try {
    const g = await greedySoup(
      readers.length,
      async (weights) => {
        await load(weights);
        if (helper) await helper.load(buffer);
        const s = await score();
        if (recalibrate) bnStats.set(keyOf(weights), bnNames.map((n) => variables.get(n)!.read().dataSync() as Float32Array));
        progress(++scored, 2 * readers.length - 1);
        return s;
      },
      { comparison: task.comparison ?? '>=' },
    );
    // The final set was scored (greedySoup scores every set it accepts): restore it as scored.
    await load(g.weights);
    const stats = bnStats.get(keyOf(g.weights));
    if (recalibrate && !stats) throw new Error('the greedy soup accepted a set it never scored');
    if (stats) {
      tf.tidy(() => {
        bnNames.forEach((n, i) => {
          const v = variables.get(n)!;
          v.write(tf.tensor(stats[i], v.shape as number[]));
        });
      });
    }
    return { weights: g.weights, trace: g.trace, score: g.score, model: scratch, scoringThreads: helper ? 2 : 1 };
  } catch (err) {
    scratch.dispose();
    throw err;
  } finally {
    await helper?.close();
    for (const c of cached) await c.close();
  }
}

/**
 * Evaluation batch for scoring. 512 (evaluateModel's default): 2,048 ran no faster for lenet-300-100
 * (its pass is all matmul), and for cnn-bn a 1,024 batch holds 100 MB activations for no measured gain.
 */
const EVAL_BATCH = 512;
const RECALIBRATION_BATCH = 128;
export const DEFAULT_RECALIBRATION_FRACTION = 0.2;

/** Merges a weighted set into `out` (TensorFlow.js weights layout from offset 0), the soup writer's arithmetic. */
async function mergeIntoBuffer(readers: readonly CheckpointReader[], weights: readonly number[], mask: Mask | undefined, out: Uint8Array): Promise<void> {
  let off = 0;
  await mergeCheckpoints(readers, weights, async (chunk) => {
    out.set(chunk, off); // the merge reuses its output buffers: copy now
    off += chunk.byteLength;
  }, { format: 'tfjs-weights', mask });
  if (off !== out.byteLength) throw new Error(`the merge wrote ${off} bytes, the layout has ${out.byteLength}`);
}
