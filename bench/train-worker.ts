/**
 * Worker-thread entry for bench/train-workers.ts: the measurement of `measureTraining`
 * (bench/train.ts: MNIST, batch 128, SGD momentum 0.9, constant LR, warm-up steps, then timed
 * windows) with one addition — after its warm-up each worker waits for `go` from the main thread,
 * so the timed windows of concurrent workers overlap. `arch: 'control'` runs a pure-JS arithmetic
 * loop instead: the scaling the machine gives a CPU-bound thread at that moment.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { type BackendPreference, initBackend } from '../src/core/tf/backend.js';
import { buildTemplate } from '../src/core/tf/templates.js';
import { trainModel } from '../src/core/tf/train.js';
import { benchTrainingConfig, loadMnistForBench } from './train.js';

export interface WorkerJob {
  arch: string;
  backend: BackendPreference;
  steps: number;
  warmup: number;
  repeats: number;
  seed: number;
}

export interface WorkerWindow {
  samples: number;
  /** performance.timeOrigin + performance.now(), ms: comparable across threads. */
  start: number;
  end: number;
  samplesPerSecond: number;
}

const port = parentPort;
if (!port) throw new Error('train-worker.ts runs in a worker thread');
const job = workerData as WorkerJob;

/** The control: a pure-JS arithmetic loop in L1 (no memory traffic, no allocation), `n` passes. */
function control(n: number): number {
  const a = new Float64Array(2048).map((_, i) => 1 + i / 2048);
  let s = 0;
  for (let k = 0; k < n; k++) for (let i = 0; i < a.length; i++) s += a[i] * a[(i + k) & 2047];
  return s;
}

async function runControl(): Promise<void> {
  control(job.warmup * 1000);
  const go = new Promise<void>((resolve) => port!.once('message', () => resolve()));
  port!.postMessage({ type: 'ready', backend: 'none (pure JS)' });
  await go;
  const windows: WorkerWindow[] = [];
  let sink = 0;
  for (let i = 0; i < job.repeats; i++) {
    const start = performance.timeOrigin + performance.now();
    sink += control(job.steps);
    const end = performance.timeOrigin + performance.now();
    windows.push({ samples: job.steps, start, end, samplesPerSecond: (job.steps * 1000) / (end - start) });
  }
  port!.postMessage({ type: 'done', windows, sink });
}

async function run(): Promise<void> {
  if (job.arch === 'control') return runControl();
  const info = await initBackend(job.backend);
  const ds = loadMnistForBench();
  const batchSize = 128;
  const model = buildTemplate(job.arch, { inputShape: [28, 28, 1], classes: 10, seed: job.seed });
  const config = (n: number, seed: number) => benchTrainingConfig(ds, batchSize, n, seed);
  await trainModel(model, ds, config(job.warmup, job.seed * 100));
  const go = new Promise<void>((resolve) => port!.once('message', () => resolve()));
  port!.postMessage({ type: 'ready', backend: info.name });
  await go;
  const windows: WorkerWindow[] = [];
  for (let i = 0; i < job.repeats; i++) {
    const start = performance.timeOrigin + performance.now();
    const r = await trainModel(model, ds, config(job.steps, job.seed * 100 + i + 1));
    const end = performance.timeOrigin + performance.now();
    windows.push({ samples: r.steps * batchSize, start, end, samplesPerSecond: r.samplesPerSecond });
  }
  model.dispose();
  port!.postMessage({ type: 'done', windows });
}

run().catch((err) => {
  port.postMessage({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
});
