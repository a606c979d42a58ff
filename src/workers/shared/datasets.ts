import { type BuiltinName, loadBuiltin } from '../../core/data/builtin.js';
import type { ImageDataset } from '../../core/data/dataset.js';
import { datasetFromSafetensors } from '../../core/data/safetensors-dataset.js';
import { datasetFromIdx, datasetFromNpz } from '../../core/data/upload.js';
import type { DatasetRef } from '../tasks.js';
import type { TaskContext } from './context.js';

// A thread keeps the datasets it loaded: training and evaluation reuse them task after task.
const loaded = new Map<string, Promise<ImageDataset>>();
const MAX_CACHED = 4;

/** A dataset, from this thread's cache when it was loaded before. */
export function loadDataset(ref: DatasetRef, ctx: Pick<TaskContext, 'init' | 'store'>): Promise<ImageDataset> {
  let p = loaded.get(ref.id);
  if (!p) {
    if (loaded.size >= MAX_CACHED) loaded.delete(loaded.keys().next().value!);
    p = readDataset(ref, ctx);
    loaded.set(ref.id, p);
    p.catch(() => loaded.delete(ref.id));
  }
  return p;
}

/** Reads and parses a dataset, bypassing the cache (the upload check). */
export async function readDataset(ref: DatasetRef, { init, store }: Pick<TaskContext, 'init' | 'store'>): Promise<ImageDataset> {
  if (ref.source === 'builtin') return loadBuiltin(ref.id as BuiltinName, { cacheDir: init.cacheDir });
  const files = ref.files ?? {};
  const bytes = async (role: string) => (files[role] ? store.readBytes(files[role]) : undefined);
  switch (ref.format) {
    case 'idx':
      return datasetFromIdx({
        id: ref.id,
        classes: ref.classes,
        images: (await bytes('images'))!,
        labels: (await bytes('labels'))!,
        testImages: await bytes('testImages'),
        testLabels: await bytes('testLabels'),
      });
    case 'npz':
      return datasetFromNpz({ id: ref.id, classes: ref.classes, bytes: (await bytes('data'))! });
    case 'safetensors':
      return datasetFromSafetensors({ id: ref.id, classes: ref.classes, path: await store.localPath(files.data) });
    default:
      throw new Error(`unknown dataset format ${ref.format}`);
  }
}
