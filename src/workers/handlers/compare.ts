import { compareWeightsAsync } from '../../core/metrics/weights.js';
import { isPrunable } from '../../core/pruning/prunable.js';
import type { CheckpointReader } from '../../core/tensors.js';
import type { TaskContext } from '../shared/context.js';
import { openStoredModel } from '../shared/stored-models.js';
import type { CompareModelsTask, ModelDistance } from '../tasks.js';

async function* tensorsOf(reader: CheckpointReader) {
  for (const e of reader.tensors) if (isPrunable(e)) yield reader.readFloat32(e.name);
}

/** Pairwise L2 distance and angle between candidates (SMS reports them to show how far retraining moves apart). */
export async function runCompareModels(task: CompareModelsTask, ctx: TaskContext): Promise<ModelDistance[]> {
  const store = ctx.store;
  const out: ModelDistance[] = [];
  for (let a = 0; a < task.models.length; a++) {
    for (let b = a + 1; b < task.models.length; b++) {
      const [ra, rb] = await Promise.all([openStoredModel(store, task.models[a]), openStoredModel(store, task.models[b])]);
      try {
        const c = await compareWeightsAsync(tensorsOf(ra), tensorsOf(rb));
        out.push({ a, b, l2: c.l2, angleDegrees: c.angleDegrees });
      } finally {
        await ra.close();
        await rb.close();
      }
    }
  }
  return out;
}
