/**
 * Uniform soup from disk to disk: five ~100 MB float32 safetensors files with ResNet-50's tensors
 * (PyTorch names, conv/fc kernels 90 % pruned with one shared mask, batch-norm vectors, I64 step
 * counters), merged by the core (`mergeCheckpoints`) and by NumPy (bench/peers/soup.py: streaming
 * readinto, np.memmap, and an in-memory mean as the ceiling). Each implementation runs in its own
 * process so that its peak RSS is its own. `npm run bench:soup`; RUNS (default 5), CHUNK (bytes per
 * read, default the core's), PASSES (default 3) from the environment. Files are cached in .bench/soup/.
 */
import { spawnSync } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, statSync } from 'node:fs';
import { open, rename, rm, unlink } from 'node:fs/promises';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openSafetensors, SafetensorsWriter } from '../src/core/checkpoint/safetensors.js';
import { Xoshiro128 } from '../src/core/pruning/prng.js';
import { mergeCheckpoints } from '../src/core/soups/merge.js';
import { validateCandidates } from '../src/core/soups/validate.js';
import type { DType } from '../src/core/tensors.js';
import { printMachine } from './machine.js';

const RUNS = Math.max(3, Number(process.env.RUNS ?? 5));
const PASSES = Math.max(1, Number(process.env.PASSES ?? 3));
const CHUNK = process.env.CHUNK ? Number(process.env.CHUNK) : undefined;
const M = 5;
const SPARSITY = 0.9;
const VERSION = 'v1';
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CACHE = join(ROOT, '.bench', 'soup');

interface Spec {
  name: string;
  dtype: DType;
  shape: number[];
}

/** ResNet-50 (torchvision layout and names): conv kernels, batch norm, fc. */
function resnet50(): Spec[] {
  const specs: Spec[] = [];
  const conv = (name: string, shape: number[]) => specs.push({ name: `${name}.weight`, dtype: 'F32', shape });
  const bn = (name: string, c: number) => {
    for (const p of ['weight', 'bias', 'running_mean', 'running_var']) specs.push({ name: `${name}.${p}`, dtype: 'F32', shape: [c] });
    specs.push({ name: `${name}.num_batches_tracked`, dtype: 'I64', shape: [] });
  };
  conv('conv1', [64, 3, 7, 7]);
  bn('bn1', 64);
  let inp = 64;
  for (const [li, [planes, blocks]] of [[64, 3], [128, 4], [256, 6], [512, 3]].entries()) {
    for (let b = 0; b < blocks; b++) {
      const p = `layer${li + 1}.${b}`;
      conv(`${p}.conv1`, [planes, inp, 1, 1]);
      bn(`${p}.bn1`, planes);
      conv(`${p}.conv2`, [planes, planes, 3, 3]);
      bn(`${p}.bn2`, planes);
      conv(`${p}.conv3`, [planes * 4, planes, 1, 1]);
      bn(`${p}.bn3`, planes * 4);
      if (b === 0) {
        conv(`${p}.downsample.0`, [planes * 4, inp, 1, 1]);
        bn(`${p}.downsample.1`, planes * 4);
      }
      inp = planes * 4;
    }
  }
  specs.push({ name: 'fc.weight', dtype: 'F32', shape: [1000, 2048] }, { name: 'fc.bias', dtype: 'F32', shape: [1000] });
  return specs;
}

const sizeOf = (s: Spec) => s.shape.reduce((a, b) => a * b, 1);

/** Candidate c: shared base weights and mask (per-tensor seeds), plus its own noise on kept weights. */
async function writeCandidate(path: string, specs: Spec[], c: number): Promise<void> {
  const fh = await open(`${path}.part`, 'w');
  const writer = new SafetensorsWriter(specs, { format: 'pt', bench: VERSION }, async (chunk) => {
    let done = 0;
    while (done < chunk.byteLength) done += (await fh.write(chunk, done, chunk.byteLength - done)).bytesWritten;
  });
  const largest = Math.max(...specs.map(sizeOf));
  const buf = new Float32Array(largest);
  const noise = new Xoshiro128(1000 + c);
  for (const [ti, s] of specs.entries()) {
    const n = sizeOf(s);
    if (s.dtype === 'I64') {
      await writer.writeTensor(s.name, new Uint8Array(new BigInt64Array([5000n]).buffer));
      continue;
    }
    const base = new Xoshiro128(ti);
    const prunable = s.shape.length >= 2;
    const data = buf.subarray(0, n);
    const std = prunable ? Math.sqrt(2 / (n / s.shape[0])) : 0.1;
    for (let i = 0; i < n; i++) {
      const u = base.next();
      const keep = !prunable || base.next() >= SPARSITY;
      data[i] = keep ? ((u - 0.5) * 3.4 + (noise.next() - 0.5) * 0.2) * std + (prunable ? 0 : 1) : 0;
    }
    await writer.writeTensor(s.name, data);
  }
  await writer.finish();
  await fh.close();
  await rename(`${path}.part`, path);
}

async function candidates(): Promise<string[]> {
  mkdirSync(CACHE, { recursive: true });
  const specs = resnet50();
  const paths = Array.from({ length: M }, (_, c) => join(CACHE, `resnet50-${VERSION}-${c}.safetensors`));
  for (const [c, p] of paths.entries()) {
    if (existsSync(p)) continue;
    const t = performance.now();
    await writeCandidate(p, specs, c);
    console.log(`wrote ${p} (${(statSync(p).size / 1e6).toFixed(1)} MB) in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }
  return paths;
}

/** Reads every file once so that every implementation starts from the page cache. */
async function warmPageCache(paths: string[]): Promise<void> {
  for (const p of paths) {
    await new Promise<void>((resolve, reject) => {
      createReadStream(p, { highWaterMark: 4 << 20 }).on('data', () => {}).on('end', resolve).on('error', reject);
    });
  }
}

const rssKiB = () => Math.round(process.memoryUsage().rss / 1024);

/** Child mode: the core merge RUNS + 1 times (the first is the warm-up), then its own peak RSS. */
async function child(mode: string, out: string, paths: string[]): Promise<void> {
  const baseline = rssKiB();
  const runs: number[] = [];
  const cpu: number[] = [];
  let first = 0;
  let bytes = 0;
  let simd = false;
  if (mode === 'validate') {
    const readers = await Promise.all(paths.map((p) => openSafetensors(p)));
    const t = performance.now();
    await validateCandidates(readers);
    first = performance.now() - t;
    await Promise.all(readers.map((r) => r.close()));
  } else {
    for (let r = 0; r <= RUNS; r++) {
      const path = `${out}.${r}`;
      const c0 = process.cpuUsage();
      const t = performance.now();
      const readers = await Promise.all(paths.map((p) => openSafetensors(p)));
      const fh = await open(path, 'w');
      const result = await mergeCheckpoints(readers, null, async (chunk) => {
        let done = 0;
        while (done < chunk.byteLength) done += (await fh.write(chunk, done, chunk.byteLength - done)).bytesWritten;
      }, { chunkBytes: CHUNK });
      await fh.close();
      await Promise.all(readers.map((x) => x.close()));
      const ms = performance.now() - t;
      const c = process.cpuUsage(c0);
      bytes = result.bytesWritten;
      simd = result.simd;
      await unlink(path);
      if (r === 0) first = ms;
      else {
        runs.push(ms);
        cpu.push((c.user + c.system) / 1000);
      }
    }
  }
  console.log(JSON.stringify({ peer: mode, runsMs: runs, cpuMs: cpu, firstMs: first, maxRssKiB: process.resourceUsage().maxRSS, baselineRssKiB: baseline, outBytes: bytes, simd }));
}

interface Result {
  peer: string;
  runsMs?: number[];
  /** User + system CPU per run, all threads (the core reads on libuv's pool). */
  cpuMs?: number[];
  medianMs?: number;
  firstMs?: number;
  maxRssKiB?: number;
  baselineRssKiB?: number;
  outBytes?: number;
  version?: string;
  simd?: boolean;
  skipped?: string;
}

function parseResult(peer: string, r: ReturnType<typeof spawnSync>): Result {
  const line = String(r.stdout ?? '').split('\n').find((l) => l.startsWith('{'));
  if (!line) return { peer, skipped: `failed (${r.status}): ${String(r.stderr ?? '').slice(-400)}` };
  return JSON.parse(line) as Result;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function main() {
  printMachine();
  const paths = await candidates();
  const inputBytes = paths.reduce((a, p) => a + statSync(p).size, 0);
  const specs = resnet50();
  const largest = Math.max(...specs.map((s) => sizeOf(s) * 4));
  await warmPageCache(paths);
  const out = join(tmpdir(), `sparsoup-bench-soup-${process.pid}`);
  const self = fileURLToPath(import.meta.url);
  const env = { ...process.env, RUNS: String(RUNS), OMP_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: '1' };
  const node = (mode: string) => parseResult(mode, spawnSync(process.execPath, [self, '--child', mode, out, ...paths], { env, encoding: 'utf8', maxBuffer: 1 << 20 }));
  const python = (mode: string): Result => {
    if (!existsSync('/usr/bin/python3')) return { peer: mode, skipped: '/usr/bin/python3 missing' };
    const script = join(ROOT, 'bench', 'peers', 'soup.py');
    return parseResult(mode, spawnSync('/usr/bin/python3', [script, mode, out, ...paths], { env, encoding: 'utf8', maxBuffer: 1 << 20 }));
  };
  // The two streaming implementations alternate over PASSES processes each, so that a noisy
  // neighbour on the shared cores hurts both alike; their runs are pooled.
  const pool = (rs: Result[]): Result => {
    const ok = rs.filter((r) => r.runsMs);
    if (ok.length === 0) return rs[0];
    return {
      ...ok[0],
      runsMs: ok.flatMap((r) => r.runsMs!),
      cpuMs: ok.flatMap((r) => r.cpuMs ?? []),
      firstMs: Math.max(...ok.map((r) => r.firstMs ?? 0)),
      maxRssKiB: Math.max(...ok.map((r) => r.maxRssKiB ?? 0)),
      baselineRssKiB: Math.min(...ok.map((r) => r.baselineRssKiB ?? 0)),
    };
  };
  const cores: Result[] = [];
  const streams: Result[] = [];
  for (let p = 0; p < PASSES; p++) {
    cores.push(node('merge'));
    streams.push(python('stream'));
  }
  const core = pool(cores);
  const stream = pool(streams);
  const memmap = python('memmap');
  const inmem = python('inmem');
  const validate = node('validate');
  await rm(out, { force: true });

  const ref = stream.runsMs ? median(stream.runsMs) : undefined;
  const refCpu = stream.cpuMs?.length ? median(stream.cpuMs) : undefined;
  console.log(`\n${M} candidates × ${(inputBytes / M / 1e6).toFixed(1)} MB (${specs.length} tensors, largest ${(largest / 2 ** 20).toFixed(1)} MiB); per process 1 warm-up + ${RUNS} timed runs, streaming rows pooled over ${PASSES} alternating processes; page cache warm; output to a fresh file in ${tmpdir()} each run`);
  console.log(`memory bound asked for: m × largest tensor = ${((M * largest) / 2 ** 20).toFixed(1)} MiB above the process's baseline (node ≈ 45–50 MiB, python + numpy ≈ 30 MiB by themselves)\n`);
  console.log('| implementation | median ms | min ms | first run ms | GB/s of input (median) | CPU ms (median) | peak RSS MiB | above baseline MiB | vs NumPy streaming (wall) | (CPU) |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  const rows: [string, Result][] = [
    [`sparsoup core mergeCheckpoints (node ${process.version}, ${core.simd ? 'wasm SIMD' : 'JS fallback'}, float64 accumulation)`, core],
    [`NumPy ${stream.version ?? ''} streaming readinto, float32 accumulation`, stream],
    [`NumPy ${memmap.version ?? ''} np.memmap`, memmap],
    [`NumPy ${inmem.version ?? ''} in-memory mean (compute only: the ceiling)`, inmem],
  ];
  const mib = (k?: number) => (k === undefined ? '–' : (k / 1024).toFixed(1));
  for (const [name, r] of rows) {
    if (r.skipped || !r.runsMs) {
      console.log(`| ${name} | SKIPPED: ${r.skipped ?? 'no result'} | | | | | | | | |`);
      continue;
    }
    const med = median(r.runsMs);
    const gbs = inputBytes / 1e9 / (med / 1000);
    const ratio = ref ? `${(ref / med).toFixed(2)}×` : '–';
    const above = r.maxRssKiB !== undefined && r.baselineRssKiB !== undefined ? mib(r.maxRssKiB - r.baselineRssKiB) : '–';
    const cpu = r.cpuMs?.length ? median(r.cpuMs) : undefined;
    const cpuRatio = cpu && refCpu ? `${(refCpu / cpu).toFixed(2)}×` : '–';
    console.log(`| ${name} | ${med.toFixed(1)} | ${Math.min(...r.runsMs).toFixed(1)} | ${r.firstMs?.toFixed(1) ?? '–'} | ${gbs.toFixed(2)} | ${cpu?.toFixed(1) ?? '–'} | ${mib(r.maxRssKiB)} | ${above} | ${ratio} | ${cpuRatio} |`);
  }
  if (core.outBytes !== undefined && stream.outBytes !== undefined && core.outBytes !== stream.outBytes) {
    console.log(`WARNING: the core wrote ${core.outBytes} bytes, NumPy ${stream.outBytes}`);
  }
  console.log(`\nvalidateCandidates (implied masks of all ${M} files, full read, one child process): ${validate.firstMs?.toFixed(0) ?? validate.skipped} ms, peak RSS ${mib(validate.maxRssKiB)} MiB`);
  console.log('"vs NumPy streaming" = NumPy streaming median / this median (> 1 is faster). NumPy ufuncs here are single-threaded (no BLAS involved); every peer reuses its buffers.');
  console.log(`core runs (ms): ${core.runsMs?.map((x) => x.toFixed(0)).join(' ')}; NumPy streaming runs (ms): ${stream.runsMs?.map((x) => x.toFixed(0)).join(' ')}`);
  console.log(`load average at the end: ${loadavg().map((x) => x.toFixed(2)).join(' ')} on ${availableParallelism()} cores (other work on the machine inflates wall times; CPU ms is the steadier comparison)`);
}

if (process.argv[2] === '--child') {
  const [, , , mode, out, ...paths] = process.argv;
  child(mode, out, paths).catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
