/**
 * Global magnitude pruning (threshold + packed mask) on ResNet-50's conv/fc kernels (~25.5 M
 * weights) at s = 0.9: the core against NumPy's partition and torch.kthvalue (bench/peers/prune.py).
 * `npm run bench:prune`; RUNS (default 7) and SPARSITY (default 0.9) from the environment.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MemoryCheckpoint } from '../src/core/checkpoint/memory.js';
import { applyMask } from '../src/core/masks/mask.js';
import { magnitudeGlobal, PruneBuffers } from '../src/core/pruning/methods.js';
import { selectPrunable } from '../src/core/pruning/prunable.js';
import { Xoshiro128 } from '../src/core/random.js';
import { printMachine } from './machine.js';

const RUNS = Math.max(5, Number(process.env.RUNS ?? 7));
const SPARSITY = Number(process.env.SPARSITY ?? 0.9);

/** torch layout [out, in, kh, kw]; the same list as the Python peer. */
function resnet50Shapes(): number[][] {
  const shapes = [[64, 3, 7, 7]];
  let inp = 64;
  for (const [planes, blocks] of [
    [64, 3],
    [128, 4],
    [256, 6],
    [512, 3],
  ]) {
    for (let b = 0; b < blocks; b++) {
      shapes.push([planes, inp, 1, 1], [planes, planes, 3, 3], [planes * 4, planes, 1, 1]);
      if (b === 0) shapes.push([planes * 4, inp, 1, 1]);
      inp = planes * 4;
    }
  }
  shapes.push([1000, 2048]);
  return shapes;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function time(fn: () => Promise<unknown> | unknown): Promise<{ median: number; runs: number[] }> {
  await fn(); // warm-up: JIT and first touch of every buffer
  const runs: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t = performance.now();
    await fn();
    runs.push(performance.now() - t);
  }
  return { median: median(runs), runs };
}

interface PeerResult {
  peer: string;
  medianMs?: number;
  skipped?: string;
  version?: string;
  threads?: number;
  pruned?: number;
  note?: string;
  runsMs?: number[];
}

function runPeers(): { results: PeerResult[]; notes: string } {
  const script = fileURLToPath(new URL('../../bench/peers/prune.py', import.meta.url));
  const python = '/usr/bin/python3';
  if (!existsSync(python)) return { results: [{ peer: 'numpy', skipped: `${python} missing` }, { peer: 'torch', skipped: `${python} missing` }], notes: '' };
  const r = spawnSync(python, [script], {
    env: { ...process.env, RUNS: String(RUNS), SPARSITY: String(SPARSITY), OMP_NUM_THREADS: '1', OMP_WAIT_POLICY: 'PASSIVE' },
    encoding: 'utf8',
    maxBuffer: 1 << 20,
  });
  const results = (r.stdout ?? '')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as PeerResult);
  if (r.status !== 0 && results.length === 0) results.push({ peer: 'numpy', skipped: `peer failed: ${r.stderr?.slice(-300)}` });
  return { results, notes: r.stderr ?? '' };
}

async function main() {
  printMachine();
  const shapes = resnet50Shapes();
  const sizes = shapes.map((s) => s.reduce((a, b) => a * b, 1));
  const n = sizes.reduce((a, b) => a + b, 0);
  // One fill of one buffer (first touch is slow here); tensors are views into it. Normal values
  // with He std per layer, like a freshly initialised network.
  const all = new Float32Array(n);
  const rng = new Xoshiro128(0);
  let off = 0;
  const tensors = shapes.map((shape, i) => {
    const data = all.subarray(off, off + sizes[i]);
    const std = Math.sqrt(2 / (sizes[i] / shape[0]));
    for (let j = 0; j < data.length; j += 2) {
      const r = Math.sqrt(-2 * Math.log(1 - rng.uniform()));
      const a = 2 * Math.PI * rng.uniform();
      data[j] = r * Math.cos(a) * std;
      if (j + 1 < data.length) data[j + 1] = r * Math.sin(a) * std;
    }
    off += sizes[i];
    return { name: `conv${i}.weight`, shape, data };
  });
  tensors[tensors.length - 1].name = 'fc.weight';
  const reader = new MemoryCheckpoint(tensors);
  const entries = selectPrunable(reader.tensors);
  const k = Math.round(SPARSITY * n);
  console.log(`ResNet-50 conv/fc kernels: ${entries.length} tensors, ${n} weights (${((n * 4) / 2 ** 20).toFixed(1)} MiB f32), s = ${SPARSITY}, k = ${k}, ${RUNS} timed runs after 1 warm-up`);

  const buffers = new PruneBuffers();
  let last: Awaited<ReturnType<typeof magnitudeGlobal>> | undefined;
  const core = await time(async () => {
    last = await magnitudeGlobal(reader, entries, SPARSITY, buffers);
  });
  if (last?.stats.pruned !== k) throw new Error(`core pruned ${last?.stats.pruned}, expected ${k}`);
  const path = last.stats.path;
  const reused = last.mask;
  const coreInto = await time(() => magnitudeGlobal(reader, entries, SPARSITY, buffers, reused));
  const bucket = await time(() => magnitudeGlobal(reader, entries, SPARSITY, buffers, reused, { sample: false }));
  // What a reader alone costs: copying every tensor into the scratch buffer once (a pass).
  const scratch = buffers.floats(Math.max(...sizes));
  const readPass = await time(async () => {
    for (const e of entries) await reader.readFloat32(e.name, scratch);
  });
  const forced = await time(() => magnitudeGlobal(reader, entries, SPARSITY, buffers, reused, { sample: false, candidateCap: 0 }));

  // Applying the mask (after every optimizer step): zero the pruned weights of every tensor.
  const copies = tensors.map((t) => t.data.slice());
  const apply = await time(() => {
    for (let i = 0; i < copies.length; i++) {
      copies[i].set(tensors[i].data);
      applyMask(copies[i], reused.tensors[i]);
    }
  });
  const copyOnly = await time(() => {
    for (let i = 0; i < copies.length; i++) copies[i].set(tensors[i].data);
  });

  const { results, notes } = runPeers();
  for (const line of notes.split('\n').filter(Boolean)) console.log(line);
  const numpy = results.find((r) => r.peer === 'numpy' && r.medianMs !== undefined);
  const mn = (xs: number[]) => Math.min(...xs);
  const rows: [string, number | undefined, string, number | undefined][] = [
    [`sparsoup core, magnitude-global (path: ${path})`, core.median, 'node, 1 thread, reused scratch, new packed mask each run', mn(core.runs)],
    ['  same, writing into the previous mask (`into`)', coreInto.median, 'no fresh memory touched', mn(coreInto.runs)],
    ['sparsoup core, exact path: histogram pass + bucket collection (forced)', bucket.median, '2 reads, into the previous mask', mn(bucket.runs)],
    ['sparsoup core, exact path: 3 histogram/build passes (forced)', forced.median, '3 reads, into the previous mask', mn(forced.runs)],
    ['  of which: one read pass (MemoryCheckpoint copy into scratch)', readPass.median, 'memcpy of every tensor', mn(readPass.runs)],
    ...results.map((r): [string, number | undefined, string, number | undefined] => [
      r.peer === 'numpy' ? `NumPy ${r.version ?? ''} abs + partition + mask` : `torch ${r.version ?? ''} abs + kthvalue + mask`,
      r.medianMs,
      r.skipped ? `SKIPPED: ${r.skipped}` : `${r.threads} thread(s); ${r.note}`,
      r.runsMs ? mn(r.runsMs) : undefined,
    ]),
  ];
  console.log('');
  console.log('| implementation | median ms | min ms | M weights/s | vs NumPy | notes |');
  console.log('| --- | ---: | ---: | ---: | ---: | --- |');
  for (const [name, ms, note, min] of rows) {
    const rate = ms ? (n / 1e6 / (ms / 1000)).toFixed(0) : '–';
    const ratio = ms && numpy?.medianMs && !name.includes('of which') ? `${(numpy.medianMs / ms).toFixed(2)}×` : '–';
    console.log(`| ${name} | ${ms === undefined ? '–' : ms.toFixed(1)} | ${min === undefined ? '–' : min.toFixed(1)} | ${rate} | ${ratio} | ${note} |`);
  }
  console.log('');
  console.log(`applyMask over all ${entries.length} tensors at s = ${SPARSITY}: ${(apply.median - copyOnly.median).toFixed(1)} ms median (${apply.median.toFixed(1)} ms including re-copying the weights, ${copyOnly.median.toFixed(1)} ms for the copy alone)`);
  console.log(`core runs (ms): ${core.runs.map((x) => x.toFixed(1)).join(' ')}; "vs NumPy" = NumPy time / this time (> 1 is faster)`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
