import type { TaskContext } from '../shared/context.js';
import { readDataset } from '../shared/datasets.js';
import type { DatasetSummary, InspectDatasetTask } from '../tasks.js';

/** Parses and validates a dataset (the upload check), answering its shape and split sizes. */
export async function runInspectDataset(task: InspectDatasetTask, ctx: TaskContext): Promise<DatasetSummary> {
  const ds = await readDataset(task.dataset, ctx);
  return {
    inputShape: ds.inputShape,
    classes: ds.classes,
    splits: { train: ds.splits.train.length, val: ds.splits.val.length, test: ds.splits.test.length },
    pixels: ds.x instanceof Uint8Array ? 'uint8' : 'float32',
  };
}
