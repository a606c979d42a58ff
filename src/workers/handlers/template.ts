import { buildTemplate } from '../../core/tf/templates.js';
import type { TaskContext } from '../shared/context.js';
import { storeLayersModel } from '../shared/stored-models.js';
import type { StoredLayersModel, TemplateTask } from '../tasks.js';

export async function runTemplate(task: TemplateTask, ctx: TaskContext): Promise<StoredLayersModel> {
  const model = buildTemplate(task.architecture, { inputShape: task.inputShape, classes: task.classes, seed: task.seed });
  try {
    return await storeLayersModel(ctx.store, model);
  } finally {
    model.dispose();
  }
}
