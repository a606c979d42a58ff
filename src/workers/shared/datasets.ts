import { type BuiltinName, loadBuiltin } from '../../core/data/builtin.js';
import type { ImageDataset } from '../../core/data/dataset.js';
import { datasetFromSafetensors } from '../../core/data/safetensors-dataset.js';
import { datasetFromIdx, datasetFromNpz } from '../../core/data/upload.js';
import type { DatasetRef } from '../tasks.js';
import type { TaskContext } from './context.js';

// A thread keeps the datasets it loaded: training and evaluation reuse them task after task.
// Datasets the pool shares (SharedArrayBuffers, one copy per process) are kept here as views.
const loaded = new Map<string, Promise<ImageDataset>>();
const MAX_CACHED = 4;

/** What identifies a dataset's content: the whole ref (an upload's files are content hashes). */
export function datasetKey(ref: DatasetRef): string {
  return JSON.stringify([ref.id, ref.source, ref.format ?? null, ref.files ?? null, ref.classes ?? null]);
}

function shareArray<T extends Uint8Array | Float32Array | Int32Array | Uint32Array>(a: T): T {
  if (a.buffer instanceof SharedArrayBuffer) return a;
  const Ctor = a.constructor as new (buffer: SharedArrayBuffer) => T;
  const out = new Ctor(new SharedArrayBuffer(a.byteLength));
  out.set(a as never);
  return out;
}

/** The dataset with every array copied into a SharedArrayBuffer (posting it to a thread then shares, not copies). */
export function toSharedDataset(ds: ImageDataset): ImageDataset {
  return {
    ...ds,
    x: shareArray(ds.x),
    y: shareArray(ds.y),
    splits: { train: shareArray(ds.splits.train), val: shareArray(ds.splits.val), test: shareArray(ds.splits.test) },
  };
}

/**
 * A dataset: the pool's shared copy when the task came with one, else this thread's cache, else
 * read now (and cached).
 */
export function loadDataset(ref: DatasetRef, ctx: Pick<TaskContext, 'init' | 'store' | 'sharedDataset'>): Promise<ImageDataset> {
  const key = datasetKey(ref);
  if (ctx.sharedDataset && ctx.sharedDataset.id === ref.id) {
    // Not cached here: the pool owns the shared copy (and may evict it). A thread-local copy, if
    // one was read before, is dropped.
    loaded.delete(key);
    return Promise.resolve(ctx.sharedDataset);
  }
  let p = loaded.get(key);
  if (!p) {
    if (loaded.size >= MAX_CACHED) loaded.delete(loaded.keys().next().value!);
    p = readDataset(ref, ctx);
    loaded.set(key, p);
    p.catch(() => loaded.delete(key));
  }
  return p;
}

/** Reads and parses a dataset, bypassing the cache (the upload check). */
export async function readDataset(ref: DatasetRef, { init, store }: Pick<TaskContext, 'init' | 'store'>, options: { shared?: boolean } = {}): Promise<ImageDataset> {
  if (ref.source === 'builtin') return loadBuiltin(ref.id as BuiltinName, { cacheDir: init.cacheDir, shared: options.shared });
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
