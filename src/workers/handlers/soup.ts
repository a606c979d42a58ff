import * as tf from '@tensorflow/tfjs';
import type { ImageDataset } from '../../core/data/dataset.js';
import { type GreedyStep, greedySoup } from '../../core/soups/greedy.js';
import { mergeCheckpoints } from '../../core/soups/merge.js';
import { validateCandidates } from '../../core/soups/validate.js';
import { normalizeWeights } from '../../core/soups/weights.js';
import type { CheckpointReader } from '../../core/tensors.js';
import { hasBatchNorm } from '../../core/tf/batch-norm.js';
import { recalibrateBatchNorm } from '../../core/tf/bn-recalibration.js';
import { evaluateModel } from '../../core/tf/evaluate.js';
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
    let weights = normalizeWeights(task.models.length, task.weights);
    let steps: GreedyStep[] | null = null;
    if (task.method === 'greedy') {
      if (!layers || !ds) throw new Error('greedy soups need layers models and a dataset (checked by the service)');
      const g = await greedyOverLayersModels(store, task, ds, (done, total) => ctx.progress({ done, total }));
      weights = g.weights;
      steps = g.trace;
    }
    const format = layers ? 'tfjs-layers' : 'safetensors';
    let written = await writeCheckpointArtifact(store, format, readers[0].tensors as never, (sink) =>
      mergeCheckpoints(readers, weights, sink, { format: layers ? 'tfjs-weights' : 'safetensors', mask: validated.mask }),
    );
    let topology: StoredArtifact | null = layers ? { sha256: task.models[0].topologySha256!, sizeBytes: 0, created: false } : null;
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
 * Greedy soup over layers models held in memory: a set is scored by averaging the members' weights
 * into a scratch model, recalibrating its batch norm, and measuring accuracy on the val split.
 */
async function greedyOverLayersModels(store: ArtifactStore, task: SoupTask, ds: ImageDataset, progress: (done: number, total: number) => void) {
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
