import { ensembleAccuracy } from '../../core/metrics/ensemble.js';
import { evaluateModel } from '../../core/tf/evaluate.js';
import type { TaskContext } from '../shared/context.js';
import { loadDataset } from '../shared/datasets.js';
import { checkModelFitsDataset, loadStoredLayersModel } from '../shared/stored-models.js';
import type { EnsembleEvaluateTask, EnsembleEvaluation } from '../tasks.js';

/** The prediction ensemble of a phase's candidates: the ceiling of what averaging their weights can reach (the SMS code reports it). */
export async function runEnsembleEvaluate(task: EnsembleEvaluateTask, ctx: TaskContext): Promise<EnsembleEvaluation> {
  const ds = await loadDataset(task.dataset, ctx);
  const logits: Float32Array[] = [];
  let labels: Int32Array | null = null;
  // One model in memory at a time: only its logits (N × K) are kept.
  for (const [i, ref] of task.models.entries()) {
    const model = await loadStoredLayersModel(ctx.store, ref);
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
