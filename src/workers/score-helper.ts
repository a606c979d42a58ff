import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type * as tf from '@tensorflow/tfjs';
import type { ImageDataset } from '../core/data/dataset.js';
import type { TensorEntry } from '../core/tensors.js';
import type { BatchMoments } from '../core/tf/bn-recalibration.js';
import type { WasmKernels } from '../core/tf/kernel-set.js';
import type { SparseMatMulMode } from '../core/tf/sparse-matmul.js';
import { PROJECT_ROOT } from '../paths.js';

/**
 * A second thread for scoring soups on an idle core: it holds its own backend and a copy of the
 * scratch model, and runs part of each scoring's BN recalibration and validation passes while the
 * soup's thread runs the rest. The parts are cut at batch boundaries and combined in order, so a
 * score (and the recalibrated statistics) are the single-thread ones bit for bit.
 */

export interface ScoreHelperInit {
  backend: string;
  /** The soup thread's EVAL_SPARSE, so both halves of a score run alike. */
  evalSparse?: SparseMatMulMode;
  /** The soup thread's WASM_KERNELS, likewise. */
  wasmKernels?: WasmKernels;
  topology: unknown;
  /** The layout of the weight bytes `load` sends (TensorFlow.js weights, offsets from 0). */
  entries: readonly TensorEntry[];
  dataset: ImageDataset;
  /** The train samples recalibration runs over (`moments` ranges index into this). */
  recalibration: Uint32Array;
  recalibrationBatch: number;
  evalBatch: number;
}

export type ScoreHelperRequest =
  | { id: number; op: 'load'; bytes: Uint8Array }
  | { id: number; op: 'moments'; from: number; to: number }
  | { id: number; op: 'stats'; batches: BatchMoments[][] }
  | { id: number; op: 'evaluate'; from: number; to: number };

type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;

export interface ScoreHelperReply {
  id: number;
  error?: string;
  moments?: BatchMoments[][];
  correct?: number;
}

export interface ScoreHelper {
  /** The weights of the next scoring (copied: the caller may reuse its buffer). */
  load(bytes: Uint8Array): Promise<void>;
  /** Per-batch BN moments over `recalibration[from, to)` at the loaded weights. */
  moments(from: number, to: number): Promise<BatchMoments[][]>;
  /** Writes the statistics combined from all batches (the same call the soup's thread makes). */
  stats(batches: BatchMoments[][]): Promise<void>;
  /** Correct top-1 predictions over `dataset.splits.val[from, to)`. */
  evaluate(from: number, to: number): Promise<number>;
  close(): Promise<void>;
}

function helperFilename(): string {
  const file = join(PROJECT_ROOT, 'dist', 'src', 'workers', 'score-helper-worker.js');
  if (!existsSync(file)) throw new Error(`helper entry ${file} is missing: run \`npm run build\``);
  return file;
}

/** Starts a score helper for `model` and resolves once its backend and model are ready. */
export async function startScoreHelper(model: tf.LayersModel, init: Omit<ScoreHelperInit, 'topology'>): Promise<ScoreHelper> {
  const data: ScoreHelperInit = { ...init, topology: model.toJSON(undefined, false) };
  const worker = new Worker(helperFilename(), { workerData: data });
  worker.unref();
  await new Promise<void>((resolve, reject) => {
    worker.once('message', (m: { ready?: boolean; error?: string }) => {
      worker.off('error', reject);
      if (m.ready) resolve();
      else reject(new Error(`the score helper failed to start: ${m.error}`));
    });
    worker.once('error', reject);
  }).catch(async (err) => {
    await worker.terminate();
    throw err;
  });
  let next = 0;
  const pending = new Map<number, { resolve: (r: ScoreHelperReply) => void; reject: (e: Error) => void }>();
  const failAll = (err: Error) => {
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };
  worker.on('message', (r: ScoreHelperReply) => {
    const p = pending.get(r.id);
    if (!p) return;
    pending.delete(r.id);
    if (r.error) p.reject(new Error(`the score helper failed: ${r.error}`));
    else p.resolve(r);
  });
  worker.on('error', failAll);
  worker.on('exit', (code) => failAll(new Error(`the score helper exited (code ${code})`)));
  const call = (req: WithoutId<ScoreHelperRequest>): Promise<ScoreHelperReply> =>
    new Promise((resolve, reject) => {
      const id = next++;
      pending.set(id, { resolve, reject });
      worker.postMessage({ ...req, id });
    });
  return {
    load: async (bytes) => void (await call({ op: 'load', bytes: bytes.slice() })),
    moments: async (from, to) => (await call({ op: 'moments', from, to })).moments!,
    stats: async (batches) => void (await call({ op: 'stats', batches })),
    evaluate: async (from, to) => (await call({ op: 'evaluate', from, to })).correct!,
    close: async () => void (await worker.terminate()),
  };
}
