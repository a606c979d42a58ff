/**
 * Uniform soup from disk to disk: five ~100 MB float32 safetensors files with ResNet-50's tensors
 * (PyTorch names, conv/fc kernels 90 % pruned with one shared mask, batch-norm vectors, I64 step
 * counters), merged by the core (`mergeCheckpoints`, io 'sync' and 'async') and by NumPy
 * (bench/peers/soup.py: streaming readinto, np.memmap, and an in-memory mean as the ceiling).
 * Each implementation is its own long-lived process (so its peak RSS is its own); the parent asks
 * them for one run at a time, in rotating order, so that load from other work on the machine falls
 * on all of them alike. `npm run bench:soup`; RUNS (default 9 per implementation, after 1 warm-up)
 * and CHUNK (bytes per read, default the core's) from the environment. Files are cached in .bench/soup/.
 * Two more rows read the same five candidates from an S3 bucket (s3rver on this machine, started
 * here): by ranges, tensor by tensor (ARTIFACT_CACHE_BYTES=0), into a local file, and into the bucket
 * through the store's writer (multipart upload + copy to the address), as the service does with
 * ARTIFACTS_URL=s3://….
 */
import { type ChildProcessWithoutNullStreams, spawn, spawnSync } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, statSync, writeSync } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { openSafetensors, SafetensorsWriter } from '../src/core/checkpoint/safetensors.js';
import { Xoshiro128 } from '../src/core/random.js';
import { createMemory, TABLE_BYTES, TABLE_ENTRY_BYTES, wasmKernels, writeLaneTable } from '../src/core/soups/kernels.js';
import { mergeCheckpoints } from '../src/core/soups/merge.js';
import { validateCandidates } from '../src/core/soups/validate.js';
import type { DType } from '../src/core/tensors.js';
import { S3ArtifactStore } from '../src/storage/s3-artifact-store.js';
import { printMachine } from './machine.js';
import { startS3Server } from './s3-server.js';

const RUNS = Math.max(3, Number(process.env.RUNS ?? 9));
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
      const u = base.uniform();
      const keep = !prunable || base.uniform() >= SPARSITY;
      data[i] = keep ? ((u - 0.5) * 3.4 + (noise.uniform() - 0.5) * 0.2) * std + (prunable ? 0 : 1) : 0;
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

/** Child mode: one core merge per 'run' line on stdin (one JSON line back); 'quit' ends with the peak RSS. */
async function serve(mode: string, out: string, paths: string[]): Promise<void> {
  const say = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
  if (mode === 'validate') {
    const readers = await Promise.all(paths.map((p) => openSafetensors(p)));
    const t = performance.now();
    await validateCandidates(readers);
    say({ ms: performance.now() - t, maxRssKiB: process.resourceUsage().maxRSS });
    return;
  }
  const s3 = mode.startsWith('s3') ? s3Bench() : null;
  if (s3) await s3.store.init();
  say({ ready: true, baselineRssKiB: rssKiB() });
  let r = 0;
  for await (const line of createInterface({ input: process.stdin })) {
    if (line !== 'run') break;
    const path = `${out}.${mode}.${r++}`;
    const c0 = process.cpuUsage();
    const t = performance.now();
    const readers = s3 ? await Promise.all(s3.shas.map(async (sha) => openSafetensors(await s3.store.randomAccess(sha)))) : await Promise.all(paths.map((p) => openSafetensors(p)));
    if (mode === 's3-store') {
      const writer = await s3!.store.createWriter();
      const result = await mergeCheckpoints(readers, null, (chunk) => writer.write(chunk), { chunkBytes: CHUNK, io: 'sync' });
      const stored = await writer.commit();
      await Promise.all(readers.map((x) => x.close()));
      const ms = performance.now() - t;
      const c = process.cpuUsage(c0);
      await s3!.store.delete(stored.sha256);
      say({ ms, cpuMs: (c.user + c.system) / 1000, outBytes: result.bytesWritten, simd: result.simd });
      continue;
    }
    const fh = await open(path, 'w');
    // 'sync-write': the sink writes synchronously, as NumPy does; otherwise through FileHandle.write,
    // as the service's ArtifactWriter does (without its sha256).
    const sink =
      mode === 'sync-write'
        ? async (chunk: Uint8Array) => {
            for (let done = 0; done < chunk.byteLength; ) done += writeSync(fh.fd, chunk, done, chunk.byteLength - done);
          }
        : async (chunk: Uint8Array) => {
            for (let done = 0; done < chunk.byteLength; ) done += (await fh.write(chunk, done, chunk.byteLength - done)).bytesWritten;
          };
    const result = await mergeCheckpoints(readers, null, sink, { chunkBytes: CHUNK, io: mode === 'async' ? 'async' : 'sync' });
    await fh.close();
    await Promise.all(readers.map((x) => x.close()));
    const ms = performance.now() - t;
    const c = process.cpuUsage(c0);
    await unlink(path);
    say({ ms, cpuMs: (c.user + c.system) / 1000, outBytes: result.bytesWritten, simd: result.simd });
  }
  say({ maxRssKiB: process.resourceUsage().maxRSS });
  await s3?.store.close();
  process.stdin.destroy();
}

/** The bucket the parent uploaded the candidates to (S3_BENCH: endpoint, bucket, prefix, shas). */
function s3Bench(): { store: S3ArtifactStore; shas: string[] } {
  const b = JSON.parse(process.env.S3_BENCH ?? '{}') as { endpoint: string; bucket: string; prefix: string; shas: string[] };
  const store = new S3ArtifactStore({
    bucket: b.bucket,
    prefix: b.prefix,
    region: 'us-east-1',
    endpoint: b.endpoint,
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    tmpDir: join(tmpdir(), `sparsoup-bench-s3-spool-${process.pid}`),
    cache: { dir: join(tmpdir(), 'sparsoup-bench-s3-cache'), maxBytes: 0 },
  });
  return { store, shas: b.shas };
}

interface Row {
  name: string;
  runsMs: number[];
  /** User + system CPU per run, all threads (the core's async reads run on libuv's pool). */
  cpuMs: number[];
  firstMs?: number;
  maxRssKiB?: number;
  baselineRssKiB?: number;
  outBytes?: number;
  version?: string;
  simd?: boolean;
  skipped?: string;
}

/** A long-lived implementation process answering one JSON line per request. */
class Peer {
  private readonly lines: AsyncIterator<string>;
  readonly row: Row;

  constructor(
    name: string,
    private readonly child: ChildProcessWithoutNullStreams,
  ) {
    this.row = { name, runsMs: [], cpuMs: [] };
    this.lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    child.stderr.on('data', (d) => process.stderr.write(d));
  }

  async next(): Promise<Record<string, unknown>> {
    for (;;) {
      const { value, done } = await this.lines.next();
      if (done) throw new Error(`${this.row.name} exited`);
      if (value.startsWith('{')) return JSON.parse(value);
    }
  }

  async start(): Promise<void> {
    const ready = await this.next();
    if (ready.skipped) this.row.skipped = String(ready.skipped);
    this.row.baselineRssKiB = ready.baselineRssKiB as number;
    this.row.version = ready.version as string | undefined;
  }

  async run(record: boolean): Promise<void> {
    if (this.row.skipped) return;
    this.child.stdin.write('run\n');
    const r = await this.next();
    if (!record) this.row.firstMs = r.ms as number;
    else {
      this.row.runsMs.push(r.ms as number);
      this.row.cpuMs.push(r.cpuMs as number);
    }
    this.row.outBytes = r.outBytes as number;
    if (r.simd !== undefined) this.row.simd = r.simd as boolean;
  }

  async stop(): Promise<void> {
    if (this.row.skipped) return;
    this.child.stdin.write('quit\n');
    this.row.maxRssKiB = (await this.next()).maxRssKiB as number;
    this.child.stdin.end();
  }
}

/** The fused kernel alone on one cached group (m × 1 MiB of float32): ns per input element. */
function kernelAlone(m: number): number | undefined {
  const n = 1 << 18;
  const table = TABLE_BYTES;
  const base = TABLE_BYTES + 1024;
  const out = base + m * (n * 4 + 64);
  const memory = createMemory(out + n * 4 + 64);
  writeLaneTable(memory.buffer);
  const k = wasmKernels(memory);
  if (!k) return undefined;
  const t = new DataView(memory.buffer, table, m * TABLE_ENTRY_BYTES);
  for (let c = 0; c < m; c++) {
    const x = new Float32Array(memory.buffer, base + c * (n * 4 + 64), n);
    for (let i = 0; i < n; i++) x[i] = i % 10 === 0 ? Math.sin(i + c) : 0;
    t.setInt32(c * TABLE_ENTRY_BYTES, base + c * (n * 4 + 64), true);
    t.setFloat64(c * TABLE_ENTRY_BYTES + 8, 1 / m, true);
  }
  const reps = 200;
  for (let r = 0; r < 20; r++) k.meanDerived(out, table, m, n);
  const t0 = performance.now();
  for (let r = 0; r < reps; r++) k.meanDerived(out, table, m, n);
  return ((performance.now() - t0) * 1e6) / (reps * n * m);
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
  const env: NodeJS.ProcessEnv = { ...process.env, RUNS: String(RUNS), OMP_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: '1' };
  const python = '/usr/bin/python3';
  const script = join(ROOT, 'bench', 'peers', 'soup.py');
  // The candidates in a bucket on s3rver (uploaded once, through the store, before any timing).
  const server = await startS3Server();
  const uploader = new S3ArtifactStore({ bucket: server.bucket, prefix: 'soup/', region: 'us-east-1', endpoint: server.endpoint, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' }, tmpDir: join(tmpdir(), 'sparsoup-bench-s3-spool'), cache: { dir: join(tmpdir(), 'sparsoup-bench-s3-cache'), maxBytes: 0 } });
  await uploader.init();
  const shas: string[] = [];
  for (const p of paths) shas.push((await uploader.put(createReadStream(p, { highWaterMark: 1 << 20 }) as AsyncIterable<Uint8Array>)).sha256);
  await uploader.close();
  env.S3_BENCH = JSON.stringify({ endpoint: server.endpoint, bucket: server.bucket, prefix: 'soup/', shas });
  env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
  const core = (mode: string, name: string) => new Peer(name, spawn(process.execPath, [self, '--serve', mode, out, ...paths], { env }));
  const peers = [
    core('sync-write', `core mergeCheckpoints (node ${process.version}, float64 sums), io 'sync', sink writeSync (as NumPy writes)`),
    core('sync', "core, io 'sync', sink FileHandle.write (as ArtifactWriter writes)"),
    core('async', "core, io 'async' (libuv's pool reads ahead), sink FileHandle.write"),
    core('s3-file', 'core, candidates read from the S3 bucket by ranges (tensor by tensor), sink FileHandle.write'),
    core('s3-store', 'core, bucket to bucket: ranged reads, sink the S3 store writer (multipart + copy to the address)'),
  ];
  const numpy = existsSync(python);
  if (numpy) {
    peers.push(
      new Peer('NumPy streaming readinto, float32 accumulation', spawn(python, [script, 'serve', 'stream', out, ...paths], { env })),
      new Peer('NumPy np.memmap', spawn(python, [script, 'serve', 'memmap', out, ...paths], { env })),
    );
  }
  await Promise.all(peers.map((p) => p.start()));
  for (let round = 0; round <= RUNS; round++) {
    // Round 0 is every process's warm-up; the order rotates so that no one always goes first.
    for (let i = 0; i < peers.length; i++) await peers[(i + round) % peers.length].run(round > 0);
  }
  for (const p of peers) await p.stop();
  await server.stop();
  const rows = peers.map((p) => p.row);
  if (!numpy) rows.push({ name: 'NumPy', runsMs: [], cpuMs: [], skipped: `${python} missing` });
  else {
    const r = spawnSync(python, [script, 'inmem', '-', ...paths], { env, encoding: 'utf8', maxBuffer: 1 << 20 });
    const line = String(r.stdout).split('\n').find((l) => l.startsWith('{'));
    const res = line ? JSON.parse(line) : { skipped: String(r.stderr).slice(-300) };
    rows.push({ name: 'NumPy in-memory mean (compute only: the ceiling)', runsMs: res.runsMs ?? [], cpuMs: res.cpuMs ?? [], ...res });
  }
  const validate = spawnSync(process.execPath, [self, '--serve', 'validate', out, ...paths], { env, encoding: 'utf8' });
  const v = JSON.parse(String(validate.stdout).split('\n').find((l) => l.startsWith('{')) ?? '{}');

  const stream = rows.find((r) => r.name.startsWith('NumPy streaming'));
  const ref = stream?.runsMs.length ? median(stream.runsMs) : undefined;
  const refCpu = stream?.cpuMs.length ? median(stream.cpuMs) : undefined;
  const numpyVersion = rows.find((r) => r.version)?.version;
  console.log(`\n${M} candidates × ${(inputBytes / M / 1e6).toFixed(1)} MB (${specs.length} tensors, largest ${(largest / 2 ** 20).toFixed(1)} MiB), page cache warm; output to a fresh file in ${tmpdir()} each run`);
  console.log(`${RUNS} timed runs per implementation after 1 warm-up, one run at a time in rotating order; NumPy ${numpyVersion ?? '–'}, single-threaded ufuncs (no BLAS involved), every peer reusing its buffers`);
  console.log(`memory bound asked for: m × largest tensor = ${((M * largest) / 2 ** 20).toFixed(1)} MiB above the process's baseline\n`);
  console.log('| implementation | median ms | min ms | first run ms | GB/s of input (median) | CPU ms (median) | peak RSS MiB | above baseline MiB | vs NumPy streaming (wall) | (CPU) |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  const mib = (k?: number) => (k === undefined ? '–' : (k / 1024).toFixed(1));
  for (const r of rows) {
    if (r.skipped || r.runsMs.length === 0) {
      console.log(`| ${r.name} | SKIPPED: ${r.skipped ?? 'no result'} | | | | | | | | |`);
      continue;
    }
    const med = median(r.runsMs);
    const cpu = r.cpuMs.length ? median(r.cpuMs) : undefined;
    const above = r.maxRssKiB !== undefined && r.baselineRssKiB !== undefined ? mib(r.maxRssKiB - r.baselineRssKiB) : '–';
    const cells = [
      med.toFixed(1),
      Math.min(...r.runsMs).toFixed(1),
      r.firstMs?.toFixed(1) ?? '–',
      (inputBytes / 1e9 / (med / 1000)).toFixed(2),
      cpu?.toFixed(1) ?? '–',
      mib(r.maxRssKiB),
      above,
      ref ? `${(ref / med).toFixed(2)}×` : '–',
      cpu && refCpu ? `${(refCpu / cpu).toFixed(2)}×` : '–',
    ];
    console.log(`| ${r.name} | ${cells.join(' | ')} |`);
  }
  const first = rows[0];
  if (first.outBytes !== undefined && stream?.outBytes !== undefined && first.outBytes !== stream.outBytes) {
    console.log(`WARNING: the core wrote ${first.outBytes} bytes, NumPy ${stream.outBytes}`);
  }
  console.log(`\nvalidateCandidates (implied masks of all ${M} files, full read, own process): ${v.ms?.toFixed(0) ?? validate.stderr.slice(-300)} ms, peak RSS ${mib(v.maxRssKiB)} MiB`);
  const perElement = kernelAlone(M);
  const inmem = rows.find((r) => r.name.startsWith('NumPy in-memory'));
  const inmemNs = inmem?.runsMs.length ? (median(inmem.runsMs) * 1e6) / (inputBytes / 4) : undefined;
  console.log(`fused float64 mean kernel alone (wasm SIMD, one ${M} × 1 MiB group in cache): ${perElement?.toFixed(3) ?? '–'} ns per input element; NumPy's in-memory float32 add chain: ${inmemNs?.toFixed(3) ?? '–'} ns`);
  console.log('"vs NumPy streaming" = NumPy streaming median / this median (> 1 is faster).');
  console.log(`core (sync, writeSync) runs (ms): ${first.runsMs.map((x) => x.toFixed(0)).join(' ')}; NumPy streaming runs (ms): ${stream?.runsMs.map((x) => x.toFixed(0)).join(' ') ?? '–'}`);
  console.log(`load average at the end: ${loadavg().map((x) => x.toFixed(2)).join(' ')} on ${availableParallelism()} cores (other work inflates wall times; CPU ms is the steadier comparison)`);
}

if (process.argv[2] === '--serve') {
  const [, , , mode, out, ...paths] = process.argv;
  serve(mode, out, paths).catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
