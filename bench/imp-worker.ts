/**
 * Worker-thread entry for bench/imp.ts: one candidate (a model on MNIST, its own backend with
 * `wasmThreads` XNNPACK threads) that trains or evaluates when told, one window per message, so the
 * main thread can interleave windows of differently configured candidates.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { initBackend } from '../src/core/tf/backend.js';
import { evaluateModel } from '../src/core/tf/evaluate.js';
import { buildTemplate } from '../src/core/tf/templates.js';
import { trainModel } from '../src/core/tf/train.js';
import { benchTrainingConfig, loadMnistForBench } from './train.js';

export interface ImpWorkerJob {
  arch: string;
  wasmThreads: number;
  seed: number;
}

export type ImpWorkerRequest = { op: 'train'; steps: number; seed: number } | { op: 'eval'; limit: number };

export interface ImpWorkerWindow {
  samples: number;
  ms: number;
  /** CPU time of the whole process during the window, ms (all threads). */
  cpuMs: number;
}

const port = parentPort;
if (!port) throw new Error('imp-worker.ts runs in a worker thread');
const job = workerData as ImpWorkerJob;

async function run(): Promise<void> {
  const info = await initBackend('wasm', job.wasmThreads);
  const ds = loadMnistForBench();
  const batchSize = 128;
  const model = buildTemplate(job.arch, { inputShape: [28, 28, 1], classes: 10, seed: job.seed });
  await trainModel(model, ds, benchTrainingConfig(ds, batchSize, 2, job.seed));
  evaluateModel(model, ds, ds.splits.test.subarray(0, 1024));
  port!.on('message', async (req: ImpWorkerRequest) => {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    let samples: number;
    if (req.op === 'train') {
      const r = await trainModel(model, ds, benchTrainingConfig(ds, batchSize, req.steps, req.seed));
      samples = r.steps * batchSize;
    } else {
      samples = evaluateModel(model, ds, ds.splits.test.subarray(0, req.limit)).labels.length;
    }
    const ms = performance.now() - t0;
    const c = process.cpuUsage(c0);
    const w: ImpWorkerWindow = { samples, ms, cpuMs: (c.user + c.system) / 1000 };
    port!.postMessage({ type: 'window', window: w });
  });
  port!.postMessage({ type: 'ready', backend: info.name, wasmThreads: info.wasmThreads, wasmThreadsError: info.wasmThreadsError });
}

run().catch((err) => {
  port.postMessage({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
});
