import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type * as tf from '@tensorflow/tfjs';
import type { GradientHelper } from '../core/tf/train.js';
import { PROJECT_ROOT } from '../paths.js';

/**
 * Data-parallel training across an idle core: a second thread (its own TensorFlow.js backend and a
 * copy of the model) computes the gradients of part of each batch while the training thread does the
 * rest; `trainModel` averages the two by sample count and takes one optimizer step. The weights go to
 * the helper before every step, so both halves see the same weights.
 *
 * What it changes: batch-norm layers normalise each part with that part's statistics (as PyTorch's
 * DistributedDataParallel without SyncBatchNorm), and the moving statistics come from the training
 * thread's part; the sum of the two gradients is rounded differently. The trained model therefore
 * depends on (seed, whether a helper ran), and is reproducible for each.
 */

export interface HelperInit {
  backend: string;
  topology: unknown;
  /** Trainable weights, in the order weights and gradients are sent. */
  names: string[];
  inputShape: [number, number, number];
  classes: number;
}

export interface HelperStep {
  id: number;
  weights: Float32Array[];
  xs: Float32Array;
  ys: Int32Array;
  count: number;
}

export interface HelperStepResult {
  id: number;
  loss: number;
  grads: Float32Array[];
  error?: string;
}

function helperFilename(): string {
  const file = join(PROJECT_ROOT, 'dist', 'src', 'workers', 'gradient-helper-worker.js');
  if (!existsSync(file)) throw new Error(`helper entry ${file} is missing: run \`npm run build\``);
  return file;
}

/** Starts a helper thread for `model` and resolves once its backend and model are ready. */
export async function startGradientHelper(model: tf.LayersModel, opts: { backend: string; inputShape: [number, number, number]; classes: number }): Promise<GradientHelper> {
  const names = model.trainableWeights.map((w) => w.originalName);
  const init: HelperInit = { backend: opts.backend, topology: model.toJSON(undefined, false), names, inputShape: opts.inputShape, classes: opts.classes };
  const worker = new Worker(helperFilename(), { workerData: init });
  worker.unref();
  await new Promise<void>((resolve, reject) => {
    const onMessage = (m: { ready?: boolean; error?: string }) => {
      worker.off('error', reject);
      if (m.ready) resolve();
      else reject(new Error(`the gradient helper failed to start: ${m.error}`));
    };
    worker.once('message', onMessage);
    worker.once('error', reject);
  });
  let next = 0;
  const pending = new Map<number, { resolve: (r: HelperStepResult) => void; reject: (e: Error) => void }>();
  const failAll = (err: Error) => {
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };
  worker.on('message', (r: HelperStepResult) => {
    const p = pending.get(r.id);
    if (!p) return;
    pending.delete(r.id);
    if (r.error) p.reject(new Error(`the gradient helper failed: ${r.error}`));
    else p.resolve(r);
  });
  worker.on('error', failAll);
  worker.on('exit', (code) => failAll(new Error(`the gradient helper exited (code ${code})`)));
  return {
    names,
    compute(weights, xs, ys, count) {
      const id = next++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        const step: HelperStep = { id, weights, xs, ys, count };
        worker.postMessage(step, [...weights.map((w) => w.buffer as ArrayBuffer)]);
      }).then((r) => r as HelperStepResult);
    },
    async close() {
      await worker.terminate();
    },
  };
}
