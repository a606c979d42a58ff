import { readFile } from 'node:fs/promises';
import { ArtifactStore } from '../../artifacts/artifact-store.js';
import { type BuiltinName, loadBuiltin } from '../../core/data/builtin.js';
import type { ImageDataset } from '../../core/data/dataset.js';
import { datasetFromSafetensors } from '../../core/data/safetensors-dataset.js';
import { datasetFromIdx, datasetFromNpz } from '../../core/data/upload.js';
import type { WorkerInit } from '../tasks.js';

/** A dataset as tasks name it: built-in by name, or uploaded files by role → sha256. */
export interface DatasetRef {
  id: string;
  source: 'builtin' | 'upload';
  format?: 'idx' | 'npz' | 'safetensors';
  files?: Record<string, string>;
  classes?: number;
}

export interface DatasetSummary {
  inputShape: [number, number, number];
  classes: number;
  splits: { train: number; val: number; test: number };
  pixels: 'uint8' | 'float32';
}

// A thread keeps the datasets it loaded: training and evaluation reuse them task after task.
const loaded = new Map<string, Promise<ImageDataset>>();
const MAX_CACHED = 4;

export function loadDataset(ref: DatasetRef, init: WorkerInit): Promise<ImageDataset> {
  let p = loaded.get(ref.id);
  if (!p) {
    if (loaded.size >= MAX_CACHED) loaded.delete(loaded.keys().next().value!);
    p = readDataset(ref, init);
    loaded.set(ref.id, p);
    p.catch(() => loaded.delete(ref.id));
  }
  return p;
}

async function readDataset(ref: DatasetRef, init: WorkerInit): Promise<ImageDataset> {
  if (ref.source === 'builtin') return loadBuiltin(ref.id as BuiltinName, { cacheDir: init.cacheDir });
  const store = new ArtifactStore(init.artifactsDir);
  const files = ref.files ?? {};
  const bytes = async (role: string) => (files[role] ? new Uint8Array(await readFile(store.pathOf(files[role]))) : undefined);
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
      return datasetFromSafetensors({ id: ref.id, classes: ref.classes, path: store.pathOf(files.data) });
    default:
      throw new Error(`unknown dataset format ${ref.format}`);
  }
}

export interface InspectDatasetTask {
  type: 'inspect-dataset';
  dataset: DatasetRef;
}

/** Parses and validates a dataset (the upload check), answering its shape and split sizes. */
export async function runInspectDataset(task: InspectDatasetTask, init: WorkerInit): Promise<DatasetSummary> {
  const ds = await readDataset(task.dataset, init);
  return {
    inputShape: ds.inputShape,
    classes: ds.classes,
    splits: { train: ds.splits.train.length, val: ds.splits.val.length, test: ds.splits.test.length },
    pixels: ds.x instanceof Uint8Array ? 'uint8' : 'float32',
  };
}
