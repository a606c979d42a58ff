/**
 * Test-set inference throughput (images/s) of the templates on the real MNIST test set (10,000
 * images, batch 512) through `evaluateModel` (what an evaluation job runs), on the backend in use,
 * next to the same architectures in PyTorch on CPU (bench/peers/eval.py), 1 and 2 threads.
 *
 *   npm run bench:eval [-- --runs 3 --batch 512 --backend wasm --no-peer]
 */
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { loadBuiltin } from '../src/core/data/builtin.js';
import { type BackendPreference, initBackend } from '../src/core/tf/backend.js';
import { evaluateModel } from '../src/core/tf/evaluate.js';
import { ARCHITECTURES, buildTemplate } from '../src/core/tf/templates.js';
import { openblasPeerEnv, printMachine } from './machine.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, here.endsWith(join('dist', 'bench')) ? '../..' : '..');
let BATCH = 512;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

interface PeerRow {
  arch: string;
  threads: number;
  images_per_second: number;
  runs_s: number[];
  accuracy: number;
}

function runPeer(runs: number): { rows: PeerRow[]; notes: string[]; skipped?: string } {
  const python = '/usr/bin/python3';
  if (!existsSync(python)) return { rows: [], notes: [], skipped: `${python} is missing` };
  const probe = spawnSync(python, ['-c', 'import torch, numpy'], { encoding: 'utf8' });
  if (probe.status !== 0) return { rows: [], notes: [], skipped: `${python} has no torch/numpy (apt-get install python3-torch python3-numpy)` };
  const rows: PeerRow[] = [];
  const notes: string[] = [];
  for (const threads of [1, 2]) {
    const res = spawnSync(python, [join(root, 'bench/peers/eval.py'), '--threads', String(threads), '--runs', String(runs), '--batch', String(BATCH)], {
      encoding: 'utf8',
      env: openblasPeerEnv(threads),
      timeout: 10 * 60_000,
    });
    if (res.status !== 0) return { rows, notes, skipped: `peer failed: ${(res.stderr || res.error?.message || '').trim().split('\n').pop()}` };
    for (const line of res.stdout.split('\n')) {
      if (line.startsWith('{')) rows.push(JSON.parse(line) as PeerRow);
      else if (line.startsWith('#')) notes.push(line.slice(1).trim());
    }
  }
  return { rows, notes };
}

async function main() {
  const args = process.argv.slice(2);
  const arg = (name: string, fallback: string) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : fallback;
  };
  const runs = Math.max(1, Number(arg('runs', '3')));
  BATCH = Math.max(1, Number(arg('batch', '512')));
  const backend = arg('backend', 'auto') as BackendPreference;
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

  const ours: { arch: string; ips: number; runsS: number[]; accuracy: number; params: number }[] = [];
  for (const arch of ARCHITECTURES) {
    const model = buildTemplate(arch, { inputShape: ds.inputShape, classes: ds.classes, seed: 1 });
    evaluateModel(model, ds, 'test', { batchSize: BATCH }); // warm-up: kernels, buffers
    const times: number[] = [];
    let accuracy = Number.NaN;
    for (let i = 0; i < runs; i++) {
      const t = performance.now();
      accuracy = evaluateModel(model, ds, 'test', { batchSize: BATCH }).accuracy;
      times.push((performance.now() - t) / 1000);
    }
    ours.push({ arch, ips: n / median(times), runsS: times, accuracy, params: model.countParams() });
    model.dispose();
  }

  const peer = args.includes('--no-peer') ? { rows: [], notes: [], skipped: 'not run (--no-peer)' } : runPeer(runs);
  const p = (arch: string, t: number) => peer.rows.find((r) => r.arch === arch && r.threads === t);
  const f = (v: number | undefined) => (v === undefined ? 'n/a' : v.toFixed(0));
  console.log('');
  console.log('images/s, median of the passes; ratio = sparsoup / PyTorch (> 1: sparsoup faster)');
  console.log('| model | params | sparsoup 1 thread | PyTorch 1 thread | PyTorch 2 threads | sparsoup ÷ PyTorch 1 thr | sparsoup ÷ PyTorch 2 thr |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const m of ours) {
    const p1 = p(m.arch, 1);
    const p2 = p(m.arch, 2);
    const ratio = (q?: PeerRow) => (q ? `${(m.ips / q.images_per_second).toFixed(2)}×` : 'n/a');
    console.log(`| ${m.arch} | ${m.params} | ${f(m.ips)} | ${f(p1?.images_per_second)} | ${f(p2?.images_per_second)} | ${ratio(p1)} | ${ratio(p2)} |`);
  }
  console.log('');
  for (const m of ours) console.log(`sparsoup ${m.arch}: passes ${m.runsS.map((s) => s.toFixed(2)).join(' ')} s (untrained weights, accuracy ${(m.accuracy * 100).toFixed(1)} %)`);
  if (peer.skipped) console.log(`PyTorch peer skipped: ${peer.skipped}`);
  for (const line of [...new Set(peer.notes)]) console.log(`peer: ${line}`);
  console.log('sparsoup: evaluateModel (fillBatch into reused buffers, model.apply in inference mode, dataSync of the logits, accuracy + loss), one thread.');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
