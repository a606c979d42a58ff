import * as tf from '@tensorflow/tfjs';
import { ArtifactStore, type StoredArtifact } from '../../artifacts/artifact-store.js';
import { type WrittenCheckpoint, writeCheckpointArtifact } from '../../artifacts/checkpoint-output.js';
import { recalibrateBatchNorm } from '../../core/tf/bn-recalibration.js';
import { evaluateModel } from '../../core/tf/evaluate.js';
import { type GreedyComparison, type GreedyStep, greedySoup } from '../../core/soups/greedy.js';
import { mergeCheckpoints } from '../../core/soups/merge.js';
import { normalizeWeights } from '../../core/soups/weights.js';
import { validateCandidates } from '../../core/soups/validate.js';
import type { CheckpointReader } from '../../core/tensors.js';
import type { TaskContext } from '../tasks.js';
import { loadStoredLayersModel, openStoredModel, type StoredLayersModelRef } from './checkpoint.js';
import { type DatasetRef, loadDataset } from './datasets.js';
import { storeLayersModel } from './template.js';

export interface SoupTask {
  type: 'soup';
  models: StoredLayersModelRef[];
  /** Known implied-mask hashes: when all equal, validation reads no tensor data for masks. */
  maskHashes: (string | null)[];
  method: 'uniform' | 'weighted' | 'greedy';
  weights?: number[];
  comparison?: GreedyComparison;
  dataset?: DatasetRef;
  /** Re-estimate batch-norm statistics of every scored set and of the result (layers models with BN). */
  recalibrate: boolean;
  /** Only check that the candidates can be merged (a 422 now rather than a failed job later). */
  validateOnly?: boolean;
}

export interface SoupTaskResult {
  maskHash: string;
  weights: number[];
  steps: GreedyStep[] | null;
  /** Validation accuracy of the result (when a dataset was given and the models are layers models). */
  valAccuracy: number | null;
  stored: { weights: WrittenCheckpoint; topology: StoredArtifact | null } | null;
}

export async function runSoup(task: SoupTask, ctx: TaskContext): Promise<SoupTaskResult> {
  const store = new ArtifactStore(ctx.init.artifactsDir);
  const readers: CheckpointReader[] = [];
  try {
    for (const m of task.models) readers.push(await openStoredModel(store, m));
    const validated = await validateCandidates(readers, { maskHashes: task.maskHashes });
    if (task.validateOnly) return { maskHash: validated.maskHash, weights: [], steps: null, valAccuracy: null, stored: null };

    const layers = task.models[0].format === 'tfjs-layers';
    const ds = task.dataset ? await loadDataset(task.dataset, ctx.init) : null;
    let weights = normalizeWeights(task.models.length, task.weights);
    let steps: GreedyStep[] | null = null;
    if (task.method === 'greedy') {
      if (!layers || !ds) throw new Error('greedy soups need layers models and a dataset (checked by the service)');
      const g = await greedyOverLayersModels(store, task, ds, (done, total) => ctx.progress({ done, total }));
      weights = g.weights;
      steps = g.trace;
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

function hasBatchNorm(model: tf.LayersModel): boolean {
  return model.layers.some((l) => l.getClassName() === 'BatchNormalization');
}

/**
 * Greedy soup over layers models held in memory: a set is scored by averaging the members' weights
 * into a scratch model, recalibrating its batch norm, and measuring accuracy on the val split.
 */
async function greedyOverLayersModels(store: ArtifactStore, task: SoupTask, ds: Awaited<ReturnType<typeof loadDataset>>, progress: (done: number, total: number) => void) {
  const models = await Promise.all(task.models.map((m) => loadStoredLayersModel(store, m)));
  const scratch = await loadStoredLayersModel(store, task.models[0]);
  const recalibrate = task.recalibrate && hasBatchNorm(scratch);
  const values = models.map((m) => m.getWeights());
  let scored = 0;
  try {
    return await greedySoup(
      models.length,
      async (weights) => {
        const averaged = tf.tidy(() => values[0].map((_, j) => tf.addN(values.map((v, i) => v[j].mul(weights[i])).filter((_, i) => weights[i] > 0))));
        scratch.setWeights(averaged);
        tf.dispose(averaged);
        if (recalibrate) recalibrateBatchNorm(scratch, ds);
        progress(++scored, 2 * models.length - 1);
        return evaluateModel(scratch, ds, 'val').accuracy;
      },
      { comparison: task.comparison ?? '>=' },
    );
  } finally {
    for (const m of models) m.dispose();
    scratch.dispose();
  }
}
