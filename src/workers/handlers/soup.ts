import * as tf from '@tensorflow/tfjs';
import type { ImageDataset } from '../../core/data/dataset.js';
import type { Mask } from '../../core/masks/index.js';
import { CachedCheckpoint } from '../../core/soups/cached-reader.js';
import { type GreedyStep, greedySoup } from '../../core/soups/greedy.js';
import { mergeCheckpoints } from '../../core/soups/merge.js';
import { findSoupMethod, linearSoupWeights } from '../../core/soups/methods.js';
import { validateCandidates } from '../../core/soups/validate.js';
import type { CheckpointReader, TensorEntry } from '../../core/tensors.js';
import { hasBatchNorm } from '../../core/tf/batch-norm.js';
import { assignBatchNormStatistics, type BatchMoments, batchNormMoments, recalibrationIndices } from '../../core/tf/bn-recalibration.js';
import { evaluateModel } from '../../core/tf/evaluate.js';
import { namedWeights, setWeightsFromBytes } from '../../core/tf/model-io.js';
import { wasmKernels } from '../../core/tf/kernel-set.js';
import { defaultSparseMatMul } from '../../core/tf/sparse-matmul.js';
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
      greedy = await greedyOverLayersModels(store, task, readers, validated.mask, ds, (done, total) => ctx.progress({ done, total }), { helper: helperAllowed(ctx) });
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
    let scoringThreads = greedy?.scoringThreads ?? 1;
    if (layers && ds) {
      // BN statistics of an average are not the average's statistics: recompute them, then score.
      // A greedy soup's final set was recalibrated and scored already: its scratch model is the soup.
      const soup = greedy?.model ?? (await loadStoredLayersModel(store, { ...task.models[0], weightsSha256: written.weights.sha256, entries: written.entries }));
      try {
        const recalibrate = task.recalibrate && hasBatchNorm(soup);
        if (!greedy && (recalibrate || ds.splits.val.length)) {
          const scorer = await startSetScorer(soup, written.entries, ds, {
            recalibrate,
            fraction: task.recalibrationFraction ?? DEFAULT_RECALIBRATION_FRACTION,
            helper: helperAllowed(ctx),
          });
          try {
            scoringThreads = scorer.threads;
            const accuracy = await scorer.score(scorer.threads > 1 ? await store.readBytes(written.weights.sha256) : null);
            if (ds.splits.val.length) valAccuracy = accuracy;
          } finally {
            await scorer.close();
          }
        }
        if (recalibrate) {
          const merged = written.weights;
          const saved = await storeLayersModel(store, soup);
          if (merged.created && merged.sha256 !== saved.model.weights.sha256) await store.delete(merged.sha256);
          written = saved.model;
          topology = saved.topology;
        }
        if (greedy) valAccuracy = greedy.score;
      } finally {
        if (!greedy) soup.dispose();
      }
    }
    return { maskHash: validated.maskHash, weights, steps, valAccuracy, stored: { weights: written, topology }, scoringThreads, ...(greedy ? { scorings: greedy.scorings } : {}) };
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
  /** Sets recalibrated and scored here (2m − 1 for m candidates at most; m − 1 or m with known single scores). */
  scorings: number;
}

export async function greedyOverLayersModels(
  store: ArtifactStore,
  task: Pick<SoupTask, 'models' | 'recalibrate' | 'comparison' | 'recalibrationFraction' | 'knownScores'>,
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
  let scorer: SetScorer | null = null;
  let scored = 0;
  try {
    scorer = await startSetScorer(scratch, readers[0].tensors, ds, {
      recalibrate,
      fraction: task.recalibrationFraction ?? DEFAULT_RECALIBRATION_FRACTION,
      helper: options.helper ?? false,
    });
    const sc = scorer;
    const known = task.knownScores;
    if (known && (known.length !== readers.length || known.some((s) => typeof s !== 'number'))) {
      throw new Error(`knownScores: ${known.length} scores for ${readers.length} candidates`);
    }
    const total = known ? readers.length - 1 : 2 * readers.length - 1;
    const setScores = new Map<string, number>();
    const scoreSet = async (weights: readonly number[]) => {
      await load(weights);
      const s = await sc.score(buffer);
      if (recalibrate) bnStats.set(keyOf(weights), bnNames.map((n) => variables.get(n)!.read().dataSync() as Float32Array));
      setScores.set(keyOf(weights), s);
      progress(++scored, Math.max(total, scored));
      return s;
    };
    const g = await greedySoup(readers.length, scoreSet, { comparison: task.comparison ?? '>=', scores: known });
    // With known single scores and no set accepted beyond the best single, that single was never
    // scored here: score it now, so the soup's statistics and accuracy are measured as stored.
    if (!setScores.has(keyOf(g.weights))) await scoreSet(g.weights);
    const score = setScores.get(keyOf(g.weights))!;
    // The final set was scored: restore it as scored.
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
    return { weights: g.weights, trace: g.trace, score, model: scratch, scoringThreads: sc.threads, scorings: scored };
  } catch (err) {
    scratch.dispose();
    throw err;
  } finally {
    await scorer?.close();
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

/** A score helper may take part: the pool has an idle thread and the backend is wasm (tfjs-node threads itself). */
function helperAllowed(ctx: TaskContext): boolean {
  return (ctx.idleThreads ?? 0) >= 1 && ctx.backend.name === 'wasm';
}

/**
 * Scores the weights the caller loaded into `model`: BN recalibration (when asked) and validation
 * accuracy (NaN without a val split). With `helper`, and val large enough to split, a score helper
 * thread runs the second half of the recalibration batches and of val; the parts are whole batches
 * combined in order, so the statistics and the score are the one-thread ones bit for bit.
 */
interface SetScorer {
  readonly threads: number;
  /** `bytes`: the loaded weights in `entries`' layout (read only when `threads` > 1). */
  score(bytes: Uint8Array | null): Promise<number>;
  close(): Promise<void>;
}

async function startSetScorer(
  model: tf.LayersModel,
  entries: readonly TensorEntry[],
  ds: ImageDataset,
  opts: { recalibrate: boolean; fraction: number; helper: boolean },
): Promise<SetScorer> {
  const recalIndices = opts.recalibrate ? recalibrationIndices(ds, { fraction: opts.fraction }) : new Uint32Array(0);
  const val = ds.splits.val;
  let helper: ScoreHelper | null = null;
  if (opts.helper && val.length >= 2 * EVAL_BATCH) {
    helper = await startScoreHelper(model, {
      backend: 'wasm',
      evalSparse: defaultSparseMatMul(),
      wasmKernels: wasmKernels(),
      entries,
      dataset: ds,
      recalibration: recalIndices,
      recalibrationBatch: RECALIBRATION_BATCH,
      evalBatch: EVAL_BATCH,
    }).catch(() => null); // score on one thread rather than fail
  }
  // Each part a whole number of batches: the parts' batches are the single-thread ones.
  const cut = (n: number, batch: number) => Math.min(n, Math.round(n / 2 / batch) * batch);
  return {
    threads: helper ? 2 : 1,
    async score(bytes) {
      if (helper) {
        if (!bytes) throw new Error('a two-thread scoring needs the weights bytes');
        await helper.load(bytes);
      }
      if (opts.recalibrate) {
        let batches: BatchMoments[][];
        if (helper) {
          const at = cut(recalIndices.length, RECALIBRATION_BATCH);
          const theirs = helper.moments(at, recalIndices.length);
          theirs.catch(() => {}); // awaited below; a local failure must not leave it unhandled
          const mine = batchNormMoments(model, ds, recalIndices.subarray(0, at), RECALIBRATION_BATCH);
          batches = [...mine, ...(await theirs)];
        } else {
          batches = batchNormMoments(model, ds, recalIndices, RECALIBRATION_BATCH);
        }
        assignBatchNormStatistics(model, batches);
        if (helper) await helper.stats(batches);
      }
      if (!val.length) return Number.NaN;
      if (!helper) return evaluateModel(model, ds, 'val', { batchSize: EVAL_BATCH }).accuracy;
      const at = cut(val.length, EVAL_BATCH);
      const theirs = helper.evaluate(at, val.length);
      theirs.catch(() => {});
      const mine = evaluateModel(model, ds, val.subarray(0, at), { batchSize: EVAL_BATCH });
      return (Math.round(mine.accuracy * mine.count) + (await theirs)) / val.length;
    },
    close: async () => {
      await helper?.close();
    },
  };
}
