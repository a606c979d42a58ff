/**
 * Test-set inference throughput (images/s) of the templates on the real MNIST test set (10,000
 * images, batch 512) through `evaluateModel` (what an evaluation job runs), on the backend in use,
 * next to the same architectures in PyTorch on CPU (bench/peers/eval.py), 1 and 2 threads.
 *
 * Each template is evaluated dense and pruned: global magnitude pruning of its prunable kernels
 * (the service's default rule) to each of --sparsities (default 0, 0.9, 0.98). Our figure is
 * `evaluateModel` as the service runs it ('auto': pruned Dense layers take the sparse path) and, in
 * interleaved passes, with every layer dense ('dense'); PyTorch loads the same pruned weights and
 * runs them dense (and, with --torch-sparse, its Linear layers as torch.sparse CSR products). The
 * logits of both are compared (max |Δ|) as a check that the two run the same model. The template is
 * trained first on --train-samples MNIST train images (one epoch; 0: untrained), so pruning meets
 * trained magnitudes and the accuracies mean something.
 *
 *   npm run bench:eval [-- --runs 3 --batch 512 --backend wasm --no-peer --archs lenet-300-100,cnn-bn --sparsities 0,0.9,0.98 --torch-sparse --train-samples 8192]
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { loadBuiltin } from '../src/core/data/builtin.js';
import { isPrunableByDefault } from '../src/core/pruning/prunable.js';
import { type BackendPreference, initBackend } from '../src/core/tf/backend.js';
import { evaluateModel } from '../src/core/tf/evaluate.js';
import { type SparseMatMulMode, sparseMatMulInternals } from '../src/core/tf/sparse-matmul.js';
import { ARCHITECTURES, buildTemplate } from '../src/core/tf/templates.js';
import { trainModel } from '../src/core/tf/train.js';
import { openblasPeerEnv, peerBlasMissing, printMachine } from './machine.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, here.endsWith(join('dist', 'bench')) ? '../..' : '..');
let BATCH = 512;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

interface PeerRow {
  arch: string;
  sparsity: number;
  torch_sparse: boolean;
  threads: number;
  images_per_second: number;
  cpu_images_per_second: number;
  runs_s: number[];
  accuracy: number;
}

interface ModelSpec {
  arch: string;
  sparsity: number;
  manifest: string;
  weights: string;
  logits: string;
}

function runPeer(runs: number, models: string, torchSparse: boolean): { rows: PeerRow[]; notes: string[]; skipped?: string } {
  const python = '/usr/bin/python3';
  if (!existsSync(python)) return { rows: [], notes: [], skipped: `${python} is missing` };
  const probe = spawnSync(python, ['-c', 'import torch, numpy'], { encoding: 'utf8' });
  if (probe.status !== 0) return { rows: [], notes: [], skipped: `${python} has no torch/numpy (apt-get install python3-torch python3-numpy)` };
  const blas = peerBlasMissing();
  if (blas) return { rows: [], notes: [], skipped: blas };
  const rows: PeerRow[] = [];
  const notes: string[] = [];
  for (const threads of [1, 2]) {
    const res = spawnSync(
      python,
      [join(root, 'bench/peers/eval.py'), '--threads', String(threads), '--runs', String(runs), '--batch', String(BATCH), '--models', models, ...(torchSparse ? ['--torch-sparse'] : [])],
      { encoding: 'utf8', env: openblasPeerEnv(threads), timeout: 30 * 60_000 },
    );
    if (res.status !== 0) return { rows, notes, skipped: `peer failed: ${(res.stderr || res.error?.message || '').trim().split('\n').pop()}` };
    for (const line of res.stdout.split('\n')) {
      if (line.startsWith('{')) rows.push(JSON.parse(line) as PeerRow);
      else if (line.startsWith('#')) notes.push(line.slice(1).trim());
    }
  }
  return { rows, notes };
}

/** Global magnitude pruning of the prunable kernels to `sparsity` (ties at the threshold pruned first-come). */
function pruneGlobal(model: tf.LayersModel, sparsity: number): { kernels: { name: string; sparsity: number }[] } {
  const prunable = model.weights.filter((w) => isPrunableByDefault({ name: w.originalName, dtype: 'F32', shape: w.shape as number[] }));
  const values = prunable.map((w) => w.read().dataSync() as Float32Array);
  const total = values.reduce((a, v) => a + v.length, 0);
  const toPrune = Math.round(sparsity * total);
  const mags = new Float32Array(total);
  let o = 0;
  for (const v of values) for (let i = 0; i < v.length; i++) mags[o++] = Math.abs(v[i]);
  mags.sort();
  const threshold = toPrune > 0 ? mags[toPrune - 1] : -1;
  // Everything below the threshold, then as many at it as the count still needs.
  const below = values.reduce((a, v) => a + v.filter((x) => Math.abs(x) < threshold).length, 0);
  let atBudget = toPrune - below;
  const kernels: { name: string; sparsity: number }[] = [];
  prunable.forEach((w, j) => {
    const v = values[j].slice();
    let zeros = 0;
    for (let i = 0; i < v.length; i++) {
      const m = Math.abs(v[i]);
      if (m < threshold || (m === threshold && atBudget-- > 0)) v[i] = 0;
      if (v[i] === 0) zeros++;
    }
    w.write(tf.tensor(v, w.shape as number[]));
    kernels.push({ name: w.originalName, sparsity: zeros / v.length });
  });
  return { kernels };
}

/** The model's float32 weights as one file plus a manifest (name, shape, byte offset), for the peer. */
function writeWeights(model: tf.LayersModel, base: string): { manifest: string; weights: string } {
  const entries: { name: string; shape: number[]; offset: number }[] = [];
  const parts: Float32Array[] = [];
  let offset = 0;
  for (const w of model.weights) {
    const v = w.read().dataSync() as Float32Array;
    entries.push({ name: w.originalName, shape: w.shape as number[], offset });
    parts.push(v);
    offset += v.byteLength;
  }
  const buf = new Uint8Array(offset);
  let at = 0;
  for (const p of parts) {
    buf.set(new Uint8Array(p.buffer, p.byteOffset, p.byteLength), at);
    at += p.byteLength;
  }
  writeFileSync(`${base}.weights.f32`, buf);
  writeFileSync(`${base}.manifest.json`, JSON.stringify(entries));
  return { manifest: `${base}.manifest.json`, weights: `${base}.weights.f32` };
}

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

async function main() {
  const args = process.argv.slice(2);
  const arg = (name: string, fallback: string) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : fallback;
  };
  const runs = Math.max(1, Number(arg('runs', '3')));
  BATCH = Math.max(1, Number(arg('batch', '512')));
  const backend = arg('backend', 'auto') as BackendPreference;
  const archs = arg('archs', ARCHITECTURES.join(',')).split(',');
  const sparsities = arg('sparsities', '0,0.9,0.98').split(',').map(Number);
  const torchSparse = args.includes('--torch-sparse');
  const trainSamples = Math.max(0, Number(arg('train-samples', '8192')));
  console.log(`# bench:eval — MNIST test-set inference (10,000 images), batch ${BATCH}, median of ${runs} passes after 1 warm-up pass, load ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  printMachine();
  const info = await initBackend(backend);
  let threads = 'n/a';
  if (info.name === 'wasm') {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    threads = String(wasm.getThreadsCount());
  }
  console.log(
    `backend: ${info.name} (${info.package}, tfjs ${info.tfjsVersion}; wasm threads ${threads}, SIMD ${tf.env().getBool('WASM_HAS_SIMD_SUPPORT')})${info.skipped.length ? `; passed over: ${info.skipped.map((s) => `${s.name} (${s.reason})`).join(', ')}` : ''}`,
  );
  const ds = await loadBuiltin('mnist', { cacheDir: join(root, '.bench/cache') });
  const n = ds.splits.test.length;
  const outDir = join(root, '.bench/eval');
  mkdirSync(outDir, { recursive: true });

  interface Ours {
    arch: string;
    sparsity: number;
    kernels: { name: string; sparsity: number }[];
    auto: { ips: number; cpuIps: number; runsS: number[] };
    dense: { ips: number; cpuIps: number; runsS: number[] };
    accuracy: number;
    denseAccuracy: number;
    logitsDiff: number;
    sparseLayers: number;
    logits: Float32Array;
    spec: ModelSpec;
  }
  const ours: Ours[] = [];
  for (const arch of archs) {
    // Trained weights first (magnitudes as pruning meets them: on the untrained template, He-normal
    // fc1 is so much smaller than glorot fc3 that 98 % global pruning removes fc1 whole).
    const trained = buildTemplate(arch, { inputShape: ds.inputShape, classes: ds.classes, seed: 1 });
    if (trainSamples > 0) {
      const t0 = performance.now();
      await trainModel(
        trained,
        ds,
        { seed: 1, epochs: 1, batchSize: 128, optimizer: 'sgd', momentum: 0.9, nesterov: false, learningRate: 0.05, schedule: 'constant', warmupFraction: 0, weightDecay: 0 },
        { indices: ds.splits.train.subarray(0, trainSamples) },
      );
      console.log(`${arch}: trained on ${trainSamples} samples (1 epoch, SGD) in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
    }
    const trainedWeights = trained.getWeights().map((w) => w.clone());
    trained.dispose();
    for (const sparsity of sparsities) {
      const model = buildTemplate(arch, { inputShape: ds.inputShape, classes: ds.classes, seed: 1 });
      model.setWeights(trainedWeights);
      const { kernels } = pruneGlobal(model, sparsity);
      const base = join(outDir, `${arch}-s${sparsity}`);
      const spec: ModelSpec = { arch, sparsity, ...writeWeights(model, base), logits: `${base}.torch-logits.f32` };
      const pass = (mode: SparseMatMulMode) => evaluateModel(model, ds, 'test', { batchSize: BATCH, sparse: mode });
      sparseMatMulInternals.resetStats();
      const autoOut = pass('auto'); // warm-up: kernels, buffers, the sparse layers' column lists
      const sparseCalls = sparseMatMulInternals.stats.sparse;
      const denseOut = pass('dense');
      const t: Record<SparseMatMulMode, { wall: number[]; cpu: number[] }> = { auto: { wall: [], cpu: [] }, dense: { wall: [], cpu: [] }, sparse: { wall: [], cpu: [] } };
      // Interleaved: on a shared machine both see the same moments.
      for (let i = 0; i < runs; i++) {
        for (const mode of ['auto', 'dense'] as const) {
          const w0 = performance.now();
          const c0 = cpuMs();
          pass(mode);
          t[mode].cpu.push((cpuMs() - c0) / 1000);
          t[mode].wall.push((performance.now() - w0) / 1000);
        }
      }
      let logitsDiff = 0;
      for (let i = 0; i < autoOut.logits.length; i++) logitsDiff = Math.max(logitsDiff, Math.abs(autoOut.logits[i] - denseOut.logits[i]));
      const fig = (m: SparseMatMulMode) => ({ ips: n / median(t[m].wall), cpuIps: n / median(t[m].cpu), runsS: t[m].wall });
      ours.push({
        arch, sparsity, kernels, auto: fig('auto'), dense: fig('dense'), accuracy: autoOut.accuracy, denseAccuracy: denseOut.accuracy,
        logitsDiff, sparseLayers: sparseCalls / Math.ceil(n / BATCH), logits: autoOut.logits, spec,
      });
      model.dispose();
    }
    tf.dispose(trainedWeights);
  }
  const specsFile = join(outDir, 'models.json');
  writeFileSync(specsFile, JSON.stringify(ours.map((m) => m.spec)));

  const peer = args.includes('--no-peer') ? { rows: [], notes: [], skipped: 'not run (--no-peer)' } : runPeer(runs, specsFile, torchSparse);
  const p = (m: Ours, threads: number, ts = false) => peer.rows.find((r) => r.arch === m.arch && r.sparsity === m.sparsity && r.threads === threads && r.torch_sparse === ts);
  const f = (v: number | undefined) => (v === undefined ? 'n/a' : v.toFixed(0));
  const ratio = (a: number, b: number | undefined) => (b ? `${(a / b).toFixed(2)}×` : 'n/a');
  console.log('');
  console.log(`load after the passes: ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  console.log('images/s (wall clock), median of the passes; ratio = sparsoup (auto) / PyTorch dense (> 1: sparsoup faster); cpu ratio: the same from CPU time (each side\'s own process time, robust to a busy machine)');
  console.log('| model | sparsity | Dense layers sparse | sparsoup auto | sparsoup dense | auto ÷ dense | PyTorch 1 thr | PyTorch 2 thr | ÷ PyTorch 1 thr | ÷ PyTorch 2 thr | cpu ÷ PyTorch 1 thr |' + (torchSparse ? ' torch.sparse 1 thr |' : ''));
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |' + (torchSparse ? ' ---: |' : ''));
  for (const m of ours) {
    const p1 = p(m, 1);
    const p2 = p(m, 2);
    const ts = p(m, 1, true);
    console.log(
      `| ${m.arch} | ${m.sparsity} | ${m.sparseLayers} | ${f(m.auto.ips)} | ${f(m.dense.ips)} | ${ratio(m.auto.ips, m.dense.ips)} | ${f(p1?.images_per_second)} | ${f(p2?.images_per_second)} | ${ratio(m.auto.ips, p1?.images_per_second)} | ${ratio(m.auto.ips, p2?.images_per_second)} | ${ratio(m.auto.cpuIps, p1?.cpu_images_per_second)} |` +
        (torchSparse ? ` ${m.sparsity > 0 ? f(ts?.images_per_second) : '—'} |` : ''),
    );
  }
  console.log('');
  for (const m of ours) {
    let torchDiff = Number.NaN;
    if (existsSync(m.spec.logits)) {
      const tl = new Float32Array(readFileSync(m.spec.logits).buffer.slice(0));
      if (tl.length === m.logits.length) {
        torchDiff = 0;
        for (let i = 0; i < tl.length; i++) torchDiff = Math.max(torchDiff, Math.abs(tl[i] - m.logits[i]));
      }
    }
    const p1 = p(m, 1);
    console.log(
      `sparsoup ${m.arch} @ ${m.sparsity}: kernels ${m.kernels.map((k) => `${k.name} ${(k.sparsity * 100).toFixed(1)} %`).join(', ')}; passes auto ${m.auto.runsS.map((s) => s.toFixed(2)).join(' ')} s, dense ${m.dense.runsS.map((s) => s.toFixed(2)).join(' ')} s; ` +
        `accuracy auto ${(m.accuracy * 100).toFixed(2)} % / dense ${(m.denseAccuracy * 100).toFixed(2)} % / PyTorch ${p1 ? (p1.accuracy * 100).toFixed(2) : 'n/a'} % (${trainSamples ? `trained on ${trainSamples} samples` : 'untrained'}); max |Δ logits| auto−dense ${m.logitsDiff.toExponential(1)}, sparsoup−PyTorch ${Number.isNaN(torchDiff) ? 'n/a' : torchDiff.toExponential(1)}`,
    );
  }
  const goal = ours.filter((m) => m.arch === 'lenet-300-100');
  if (goal.length && peer.rows.length) {
    const met = goal.filter((m) => {
      const p1 = p(m, 1);
      return p1 && m.auto.ips / p1.images_per_second >= 0.5;
    });
    console.log(`goal (issue 16: lenet-300-100 evaluation ≥ 0.5× PyTorch 1 thread, wall clock): ${met.length ? `met at sparsity ${met.map((m) => m.sparsity).join(', ')}` : 'not met'}${met.length < goal.length ? `; not at ${goal.filter((m) => !met.includes(m)).map((m) => m.sparsity).join(', ')}` : ''}`);
  }
  if (peer.skipped) console.log(`PyTorch peer skipped: ${peer.skipped}`);
  for (const line of [...new Set(peer.notes)]) console.log(`peer: ${line}`);
  console.log(`sparsoup: evaluateModel (fillBatch into reused buffers, model.apply in inference mode, dataSync of the logits, accuracy + loss), one thread; 'auto' runs Dense layers with ≥ ${(sparseMatMulInternals.minSparsity * 100).toFixed(0)} % zeros as a sparse × dense product (src/core/tf/sparse-matmul.ts).`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
