import type { TaskContext } from '../shared/context.js';
import { loadDataset } from '../shared/datasets.js';
import { evaluateWithCorruptions } from '../shared/evaluation.js';
import { checkModelFitsDataset, loadStoredLayersModel } from '../shared/stored-models.js';
import type { EvaluateTask, EvaluationMetrics } from '../tasks.js';

export async function runEvaluate(task: EvaluateTask, ctx: TaskContext): Promise<EvaluationMetrics> {
  const [model, ds] = await Promise.all([loadStoredLayersModel(ctx.store, task.model), loadDataset(task.dataset, ctx)]);
  try {
    checkModelFitsDataset(model, ds);
    return evaluateWithCorruptions(model, ds, task.split, task.corruptions ?? [], task.seed ?? 0, (done, total) => ctx.progress({ done, total }));
  } finally {
    model.dispose();
  }
}
