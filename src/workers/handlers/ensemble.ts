import { ArtifactStore } from '../../artifacts/artifact-store.js';
import type { SplitName } from '../../core/data/dataset.js';
import { ensembleAccuracy } from '../../core/metrics/ensemble.js';
import { evaluateModel } from '../../core/tf/evaluate.js';
import type { TaskContext } from '../tasks.js';
import { checkModelFitsDataset, loadStoredLayersModel, type StoredLayersModelRef } from './checkpoint.js';
import { type DatasetRef, loadDataset } from './datasets.js';

export interface EnsembleEvaluateTask {
  type: 'ensemble-evaluate';
  models: StoredLayersModelRef[];
  dataset: DatasetRef;
  split: SplitName;
}

export interface EnsembleEvaluation {
  count: number;
  members: number;
  /** Accuracy of the mean of the members' softmax outputs. */
  accuracy: number;
}

/** The prediction ensemble of a phase's candidates: the ceiling of what averaging their weights can reach (the SMS code reports it). */
export async function runEnsembleEvaluate(task: EnsembleEvaluateTask, ctx: TaskContext): Promise<EnsembleEvaluation> {
  const store = new ArtifactStore(ctx.init.artifactsDir);
  const ds = await loadDataset(task.dataset, ctx.init);
  const logits: Float32Array[] = [];
  let labels: Int32Array | null = null;
  // One model in memory at a time: only its logits (N × K) are kept.
  for (const [i, ref] of task.models.entries()) {
    const model = await loadStoredLayersModel(store, ref);
    try {
      checkModelFitsDataset(model, ds);
      const out = evaluateModel(model, ds, task.split);
      logits.push(out.logits);
      labels = out.labels;
    } finally {
      model.dispose();
    }
    ctx.progress({ done: i + 1, total: task.models.length });
  }
  return { count: labels?.length ?? 0, members: logits.length, accuracy: ensembleAccuracy(logits, labels ?? new Int32Array(0), ds.classes) };
}
