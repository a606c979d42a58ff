import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../../paths.js';
import { threadedWasmUnavailable } from './wasm-threads.js';

// The backend runs in a worker thread, as in the service's pool; the thread loads the built code.
const dist = join(PROJECT_ROOT, 'dist', 'src', 'core', 'tf');
const unavailable =
  threadedWasmUnavailable() ??
  (process.platform !== 'linux' ? 'threads are counted from /proc/self/task (Linux)' : null) ??
  (existsSync(join(dist, 'backend.js')) ? null : `${dist}/backend.js is missing: run \`npm run build\``);
if (unavailable) console.log(`wasm-threads.spec: skipped: ${unavailable}`);

interface Probe {
  wasmThreads: number;
  wasmThreadsError?: string;
  pthreadWorkers: number;
  logits: number[];
  fmaCalls: number;
  splits: number;
  splitIdentical: boolean;
  /** CPU ms each thread spent during the XNNPACK matrix products. */
  loopCpu: number[];
}

const probeCode = `
const { parentPort, workerData } = require('node:worker_threads');
// A pthread worker that cannot start (the shim revokes each blob: URL as it starts one).
if (workerData.breakPthreads) URL.revokeObjectURL = () => { throw new Error('simulated pthread start failure'); };
(async () => {
  const { initBackend } = await import(workerData.backend);
  const { buildTemplate } = await import(workerData.templates);
  const { gemmInternals } = await import(workerData.gemm);
  const { setWasmKernels } = await import(workerData.kernelSet);
  const info = await initBackend('wasm', workerData.threads);
  const tf = await import('@tensorflow/tfjs');
  const model = buildTemplate('cnn-bn', { inputShape: [8, 8, 1], classes: 4, seed: 3 });
  const x = tf.tensor4d(Float32Array.from({ length: 16 * 64 }, (_, i) => Math.sin(i * 0.37)), [16, 8, 8, 1]);
  const logits = Array.from(model.predict(x).dataSync());
  // sparsoup's FMA kernel ran the products and conv2 (on the threaded build's shared memory too).
  const fmaCalls = gemmInternals.stats.calls;
  // Split with the helper thread where the heap is shared: the same values bit for bit.
  // Sizes past the split threshold (2^26 multiply-adds).
  // (Filled from a formula, not tf.randomNormal: its JS generator would dominate the threads' CPU
  // figures that the XNNPACK check below compares.)
  const filled = (shape, k) => tf.tensor(Float32Array.from({ length: shape.reduce((p, d) => p * d, 1) }, (_, i) => Math.sin(i * k)), shape);
  const pa = filled([512, 1024], 0.37);
  const pb = filled([1024, 128], 0.53);
  const xc = filled([64, 16, 16, 32], 0.71);
  const fc = filled([3, 3, 32, 64], 0.29);
  const dyc = filled([64, 16, 16, 64], 0.61);
  // Values read outside tf.tidy (a big array returned from it is walked value by value).
  const read = (make) => {
    const ts = [].concat(make());
    const v = ts[ts.length - 1].dataSync().slice();
    tf.dispose(ts);
    return v;
  };
  const work = () => [
    read(() => tf.matMul(pa, pb)),
    read(() => tf.conv2d(xc, fc, 1, 'same')),
    read(() => tf.grads((x, f) => tf.sum(tf.mul(tf.conv2d(x, f, 1, 'same'), dyc)))([xc, fc])),
  ];
  gemmInternals.setSplit(false);
  const alone = work();
  gemmInternals.setSplit(true);
  gemmInternals.resetStats();
  const split = work();
  const splits = gemmInternals.stats.split;
  const splitIdentical = alone.every((v, i) => v.length === split[i].length && v.every((q, j) => Object.is(q, split[i][j])));
  // Work big enough to split: 384 x 384 matrix products, on XNNPACK (its pool splits them).
  // Each thread's CPU over just this loop (the work above is the calling thread's and the helper's).
  setWasmKernels('tfjs');
  const a = tf.randomNormal([384, 384], 0, 1, 'float32', 1);
  const { readdirSync, readFileSync } = require('node:fs');
  const threadCpu = () => {
    const out = new Map();
    for (const t of readdirSync('/proc/self/task')) {
      try {
        const s = readFileSync('/proc/self/task/' + t + '/stat', 'utf8');
        const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
        out.set(t, (Number(f[11]) + Number(f[12])) * 10);
      } catch {}
    }
    return out;
  };
  const cpuBefore = threadCpu();
  for (let i = 0; i < 8; i++) tf.tidy(() => tf.matMul(a, a).dataSync());
  const loopCpu = [...threadCpu()].map(([t, ms]) => ms - (cpuBefore.get(t) ?? 0)).filter((ms) => ms > 0);
  const pthread = tf.backend().wasm.PThread;
  parentPort.postMessage({ wasmThreads: info.wasmThreads, wasmThreadsError: info.wasmThreadsError, pthreadWorkers: pthread ? pthread.runningWorkers.length : 0, logits, fmaCalls, splits, splitIdentical, loopCpu });
})().catch((e) => parentPort.postMessage({ error: String(e && e.stack || e) }));
`;

/** CPU time (ms) of each thread of this process, by thread id (Linux). */
function threadCpu(): Map<string, number> {
  const out = new Map<string, number>();
  for (const t of readdirSync('/proc/self/task')) {
    try {
      const s = readFileSync(`/proc/self/task/${t}/stat`, 'utf8');
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      out.set(t, (Number(f[11]) + Number(f[12])) * 10);
    } catch {
      // the thread ended
    }
  }
  return out;
}

async function probe(threads: number, breakPthreads = false): Promise<{ probe: Probe; threadsAfterExit: number; threadsBefore: number }> {
  const before = threadCpu();
  const worker = new Worker(probeCode, {
    eval: true,
    workerData: {
      threads,
      breakPthreads,
      backend: pathToFileURL(join(dist, 'backend.js')).href,
      templates: pathToFileURL(join(dist, 'templates.js')).href,
      gemm: pathToFileURL(join(dist, 'gemm.js')).href,
      kernelSet: pathToFileURL(join(dist, 'kernel-set.js')).href,
    },
  });
  const result = await new Promise<Probe>((resolve, reject) => {
    worker.once('message', (m: Probe & { error?: string }) => {
      if (m.error) reject(new Error(m.error));
      else resolve(m);
    });
    worker.once('error', reject);
  });
  // The thread ends by itself (its pthread workers do not hold it), and takes them with it.
  const code = await new Promise<number>((resolve) => worker.once('exit', resolve));
  expect(code).toBe(0);
  let threadsAfterExit = threadCpu().size;
  for (let i = 0; i < 50 && threadsAfterExit > before.size; i++) {
    await new Promise((r) => setTimeout(r, 100));
    threadsAfterExit = threadCpu().size;
  }
  return { probe: result, threadsAfterExit, threadsBefore: before.size };
}

describe.skipIf(unavailable !== null)('the threaded wasm build in a worker thread', () => {
  it('starts with 2 XNNPACK threads, gives the single-threaded logits, runs the FMA kernel on its shared memory, splits work, and leaves no thread behind', async () => {
    const one = await probe(1);
    const two = await probe(2);
    expect(one.probe.wasmThreads).toBe(1);
    expect(two.probe.wasmThreadsError).toBeUndefined();
    expect(two.probe.wasmThreads).toBe(2);
    expect(two.probe.pthreadWorkers).toBe(1);
    expect(two.probe.logits.length).toBe(16 * 4);
    // The FMA kernel finds the threaded build's (shared) memory as it finds the plain build's.
    expect(one.probe.fmaCalls).toBeGreaterThan(0);
    expect(two.probe.fmaCalls).toBe(one.probe.fmaCalls);
    // A product, a convolution and a filter gradient split with the helper thread on the shared
    // memory, bit for bit the one-thread values; never on the single-threaded build's own memory.
    expect(two.probe.splits).toBe(5); // the matmul, the conv forward (again under grads), dx, dW
    expect(two.probe.splitIdentical).toBe(true);
    expect(one.probe.splits).toBe(0);
    expect(one.probe.splitIdentical).toBe(true);
    for (let i = 0; i < one.probe.logits.length; i++) {
      expect(Math.abs(two.probe.logits[i] - one.probe.logits[i])).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(one.probe.logits[i])));
    }
    // A second OS thread did part of the matrix products (work stealing lets the calling thread
    // take most of it on a busy machine, not all of it).
    const cpu = [...two.probe.loopCpu].sort((a, b) => b - a);
    expect(cpu[1]).toBeGreaterThan(0.05 * cpu[0]);
    expect(one.threadsAfterExit).toBeLessThanOrEqual(one.threadsBefore);
    expect(two.threadsAfterExit).toBeLessThanOrEqual(two.threadsBefore);
  }, 180_000);

  it('falls back to the single-threaded build, with the reason, where the pthreads cannot start', async () => {
    const one = await probe(1);
    const broken = await probe(2, true);
    expect(broken.probe.wasmThreads).toBe(1);
    expect(broken.probe.wasmThreadsError).toMatch(/did not initialise/);
    expect(broken.probe.pthreadWorkers).toBe(0);
    expect(broken.probe.logits).toEqual(one.probe.logits);
    expect(broken.threadsAfterExit).toBeLessThanOrEqual(broken.threadsBefore);
  }, 180_000);
});
