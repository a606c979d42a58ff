/**
 * Upload throughput and memory of `POST /models` with a ~1 GiB safetensors file (BERT-large-like
 * float32 shapes), against plain disk copies of the same file in the same run.
 *
 * The file is written once with the core SafetensorsWriter and cached in `.bench/`. Each run starts
 * the real service (`node dist/src/main.js`, fresh DATA_DIR in the temp folder, embedded PGlite),
 * waits for /health, streams the file from disk with http.request, and samples the service's
 * VmRSS every 50 ms (and VmHWM, the kernel's peak). Peers, same file, same run:
 *   - `cat file > /dev/null` (page-cache read ceiling);
 *   - fs.copyFile + fsync of the copy;
 *   - a node stream copy that does what the upload path does without HTTP: read 64 KiB chunks,
 *     sha256 them, write them to a temporary file, fsync, rename.
 *
 *   npm run bench:ingest            RUNS (default 3) from the environment; KEEP_FILE=0 removes the cache
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, open, rename, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../src/common/free-port.js';
import { openSafetensors, SafetensorsIngest, SafetensorsWriter } from '../src/core/checkpoint/safetensors.js';
import type { TensorSpec } from '../src/core/checkpoint/tensor-writer.js';
import { impliedMask } from '../src/core/masks/implied.js';
import { Xoshiro128 } from '../src/core/random.js';
import { printMachine } from './machine.js';
import { startS3Server } from './s3-server.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, here.endsWith(join('dist', 'bench')) ? '../..' : '..');
const RUNS = Math.max(1, Number(process.env.RUNS ?? 3));
const TARGET_BYTES = 2 ** 30;
const FILE = join(root, '.bench', 'ingest-1g.safetensors');
const MiB = 2 ** 20;

/** BERT-large-like (hidden 1024, intermediate 4096), as many layers as fit in about 1 GiB. */
function bertShapes(): TensorSpec[] {
  const t: TensorSpec[] = [];
  const f = (name: string, shape: number[]) => t.push({ name, dtype: 'F32', shape });
  const H = 1024;
  const I = 4096;
  f('embeddings.word_embeddings.weight', [30522, H]);
  f('embeddings.position_embeddings.weight', [512, H]);
  f('embeddings.token_type_embeddings.weight', [2, H]);
  f('embeddings.LayerNorm.weight', [H]);
  f('embeddings.LayerNorm.bias', [H]);
  const size = () => t.reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1) * 4, 0);
  const perLayer = (4 * H * H + 2 * H * I + 9 * H + I) * 4;
  for (let l = 0; size() + perLayer / 2 < TARGET_BYTES; l++) {
    const p = `encoder.layer.${l}`;
    for (const m of ['query', 'key', 'value']) {
      f(`${p}.attention.self.${m}.weight`, [H, H]);
      f(`${p}.attention.self.${m}.bias`, [H]);
    }
    f(`${p}.attention.output.dense.weight`, [H, H]);
    f(`${p}.attention.output.dense.bias`, [H]);
    f(`${p}.attention.output.LayerNorm.weight`, [H]);
    f(`${p}.attention.output.LayerNorm.bias`, [H]);
    f(`${p}.intermediate.dense.weight`, [I, H]);
    f(`${p}.intermediate.dense.bias`, [I]);
    f(`${p}.output.dense.weight`, [H, I]);
    f(`${p}.output.dense.bias`, [H]);
    f(`${p}.output.LayerNorm.weight`, [H]);
    f(`${p}.output.LayerNorm.bias`, [H]);
  }
  f('pooler.dense.weight', [H, H]);
  f('pooler.dense.bias', [H]);
  return t;
}

/** Writes the file once (normal values, std 0.02 like BERT's init; norm weights 1, biases 0). */
async function ensureFile(): Promise<{ bytes: number; tensors: number; largest: number; created: boolean; ms: number }> {
  const specs = bertShapes();
  const sizes = specs.map((s) => s.shape.reduce((a, b) => a * b, 1));
  const largest = Math.max(...sizes);
  const expected = 8 + new SafetensorsWriter(specs, { format: 'pt' }, async () => {}).headerLength + sizes.reduce((a, b) => a + b, 0) * 4;
  if (existsSync(FILE) && statSync(FILE).size === expected) return { bytes: expected, tensors: specs.length, largest, created: false, ms: 0 };
  const t0 = performance.now();
  await mkdir(dirname(FILE), { recursive: true });
  const tmp = `${FILE}.${process.pid}.part`;
  const fh = await open(tmp, 'w');
  try {
    const writer = new SafetensorsWriter(specs, { format: 'pt' }, async (chunk) => {
      let off = 0;
      while (off < chunk.byteLength) off += (await fh.write(chunk, off, chunk.byteLength - off)).bytesWritten;
    });
    // One buffer, reused for every tensor (first touch of memory is slow on this machine).
    const buf = new Float32Array(largest);
    const rng = new Xoshiro128(7);
    for (let i = 0; i < specs.length; i++) {
      const data = buf.subarray(0, sizes[i]);
      const name = specs[i].name;
      if (name.endsWith('LayerNorm.weight')) data.fill(1);
      else if (name.endsWith('.bias')) data.fill(0);
      else {
        for (let j = 0; j < data.length; j += 2) {
          const r = Math.sqrt(-2 * Math.log(1 - rng.uniform())) * 0.02;
          const a = 2 * Math.PI * rng.uniform();
          data[j] = r * Math.cos(a);
          if (j + 1 < data.length) data[j + 1] = r * Math.sin(a);
        }
      }
      await writer.writeTensor(name, data);
    }
    const { bytesWritten } = await writer.finish();
    if (bytesWritten !== expected) throw new Error(`wrote ${bytesWritten} bytes, expected ${expected}`);
  } finally {
    await fh.close();
  }
  await rename(tmp, FILE);
  return { bytes: expected, tensors: specs.length, largest, created: true, ms: performance.now() - t0 };
}

function procStatus(pid: number): { rss: number; hwm: number } {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? Number.NaN) * 1024;
    return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
  } catch {
    return { rss: Number.NaN, hwm: Number.NaN };
  }
}

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((res, rej) => {
    const req = http.get({ host: '127.0.0.1', port, path }, (r) => {
      let body = '';
      r.setEncoding('utf8');
      r.on('data', (c) => {
        body += c;
      });
      r.on('end', () => res({ status: r.statusCode ?? 0, body }));
    });
    req.on('error', rej);
  });
}

interface Service {
  child: ChildProcess;
  port: number;
  dataDir: string;
  log: string[];
  stop(): Promise<void>;
}

async function startService(dataDir: string, removeOnStop = true, extraEnv: Record<string, string> = {}): Promise<Service> {
  const port = await freePort();
  const log: string[] = [];
  // Embedded PGlite, no auth: the service as `npm start` runs it on a fresh clone.
  const env: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dataDir, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn', MAX_UPLOAD_BYTES: String(4 * 2 ** 30), ...extraEnv };
  delete env.DATABASE_URL;
  delete env.API_KEYS;
  const child = spawn(process.execPath, [join(root, 'dist/src/main.js')], {
    cwd: root,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  for (const s of [child.stdout, child.stderr]) s?.on('data', (c: Buffer) => log.push(c.toString()));
  let exited: number | null = null;
  child.on('exit', (code) => {
    exited = code ?? -1;
  });
  const stop = async () => {
    if (exited === null) {
      const done = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await done;
      clearTimeout(t);
    }
    if (removeOnStop) await rm(dataDir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (exited !== null) {
      await stop();
      throw new Error(`the service exited with ${exited} before /health answered:\n${log.join('').slice(-2000)}`);
    }
    const h = await get(port, '/health').catch(() => null);
    if (h?.status === 200) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`/health did not answer 200 within 90 s:\n${log.join('').slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, port, dataDir, log, stop };
}

interface UploadResult {
  ms: number;
  /** Until the client had handed the last body byte to the socket. */
  sendMs: number;
  status: number;
  body: string;
  baseRss: number;
  baseHwm: number;
  peakRss: number;
  hwm: number;
  endRss: number;
  samples: { t: number; rss: number }[];
}

async function upload(svc: Service, bytes: number, name: string): Promise<UploadResult> {
  const pid = svc.child.pid as number;
  const base = procStatus(pid);
  const samples: { t: number; rss: number }[] = [];
  const t0 = performance.now();
  const timer = setInterval(() => samples.push({ t: performance.now() - t0, rss: procStatus(pid).rss }), 50);
  let sendMs = Number.NaN;
  const res = await new Promise<{ status: number; body: string }>((res, rej) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port: svc.port,
        method: 'POST',
        path: `/models?name=${encodeURIComponent(name)}`,
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(bytes) },
      },
      (r) => {
        let body = '';
        r.setEncoding('utf8');
        r.on('data', (c) => {
          body += c;
        });
        r.on('end', () => res({ status: r.statusCode ?? 0, body }));
        r.on('error', rej);
      },
    );
    req.on('error', rej);
    req.on('finish', () => {
      sendMs = performance.now() - t0;
    });
    const src = createReadStream(FILE, { highWaterMark: MiB });
    src.on('error', rej);
    src.pipe(req);
  });
  const ms = performance.now() - t0;
  clearInterval(timer);
  const end = procStatus(pid);
  return {
    ms,
    sendMs,
    ...res,
    baseRss: base.rss,
    baseHwm: base.hwm,
    peakRss: Math.max(end.rss, ...samples.map((s) => s.rss)),
    hwm: end.hwm,
    endRss: end.rss,
    samples,
  };
}

async function fsyncFile(path: string): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** What the upload path does, minus HTTP and the parser: chunks → sha256 → temp file → fsync → rename. */
async function streamCopy(dst: string): Promise<{ ms: number; fsyncMs: number }> {
  const t0 = performance.now();
  const hash = createHash('sha256');
  const fh = await open(`${dst}.part`, 'wx');
  for await (const chunk of createReadStream(FILE) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    let off = 0;
    while (off < chunk.byteLength) off += (await fh.write(chunk, off, chunk.byteLength - off)).bytesWritten;
  }
  const t1 = performance.now();
  await fh.sync();
  const fsyncMs = performance.now() - t1;
  await fh.close();
  hash.digest('hex');
  await rename(`${dst}.part`, dst);
  return { ms: performance.now() - t0, fsyncMs };
}

/** Single-thread CPU cost of the upload path's two passes over every byte, from the page cache. */
async function components(): Promise<{ parseMs: number; hashMs: number; readMs: number; impliedMs: number }> {
  const pass = async (fn: (c: Buffer) => void) => {
    const t = performance.now();
    for await (const chunk of createReadStream(FILE) as AsyncIterable<Buffer>) fn(chunk);
    return performance.now() - t;
  };
  const readMs = await pass(() => {});
  const ingest = new SafetensorsIngest();
  const parseMs = await pass((c) => ingest.push(c));
  ingest.finish();
  const hash = createHash('sha256');
  const hashMs = await pass((c) => hash.update(c));
  hash.digest();
  // What the service does after the body has arrived: read every prunable tensor back for the implied mask.
  const t = performance.now();
  const reader = await openSafetensors(FILE);
  try {
    await impliedMask(reader);
  } finally {
    await reader.close();
  }
  return { parseMs, hashMs, readMs, impliedMs: performance.now() - t };
}

const median = (xs: number[]) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function main() {
  printMachine();
  if (!existsSync(join(root, 'dist/src/main.js'))) throw new Error('dist/src/main.js is missing: run `npx tsc -p tsconfig.build.json`');
  const file = await ensureFile();
  const bytes = file.bytes;
  console.log(
    `file: ${FILE} — ${(bytes / MiB).toFixed(0)} MiB, ${file.tensors} float32 tensors (BERT-large-like, largest ${((file.largest * 4) / MiB).toFixed(0)} MiB)${file.created ? `, written in ${(file.ms / 1000).toFixed(1)} s` : ', cached'}`,
  );
  const scratch = await mkdtemp(join(os.tmpdir(), 'sparsoup-ingest-peer-'));
  // A data folder initialised once (PGlite initdb, migrations) and copied for every run: each run
  // measures a restarted service, as in production, not one that has just run initdb.
  const template = await mkdtemp(join(os.tmpdir(), 'sparsoup-ingest-template-'));
  let firstStart: { rss: number; hwm: number; ms: number };
  {
    const t = performance.now();
    const svc = await startService(template, false);
    const ms = performance.now() - t;
    await new Promise((r) => setTimeout(r, 1000));
    firstStart = { ...procStatus(svc.child.pid as number), ms };
    await svc.stop();
  }
  const rows: Record<string, number[]> = { cat: [], copyFile: [], stream: [], upload: [], send: [], s3: [], s3Send: [] };
  const s3Growth: number[] = [];
  const s3 = await startS3Server();
  const mem = { peakRss: [] as number[], hwm: [] as number[], base: [] as number[], end: [] as number[] };
  const fsyncs: number[] = [];
  const comp = { parse: [] as number[], hash: [] as number[], read: [] as number[], implied: [] as number[] };
  const startMs: number[] = [];
  let lastSamples: UploadResult['samples'] = [];
  try {
    // Page-cache the source once, so every measurement reads it from memory.
    spawnSync('sh', ['-c', `cat '${FILE}' > /dev/null`]);
    for (let run = 0; run < RUNS; run++) {
      let t = performance.now();
      spawnSync('sh', ['-c', `cat '${FILE}' > /dev/null`]);
      rows.cat.push(performance.now() - t);

      const dst = join(scratch, 'copy.safetensors');
      t = performance.now();
      await copyFile(FILE, dst);
      await fsyncFile(dst);
      rows.copyFile.push(performance.now() - t);
      await rm(dst, { force: true });

      const sc = await streamCopy(dst);
      rows.stream.push(sc.ms);
      fsyncs.push(sc.fsyncMs);
      await rm(dst, { force: true });

      const c = await components();
      comp.parse.push(c.parseMs);
      comp.hash.push(c.hashMs);
      comp.read.push(c.readMs);
      comp.implied.push(c.impliedMs);

      const dataDir = join(scratch, `data-${run}`);
      spawnSync('cp', ['-a', template, dataDir]);
      const ts = performance.now();
      const svc = await startService(dataDir);
      startMs.push(performance.now() - ts);
      try {
        const r = await upload(svc, bytes, 'big');
        if (r.status !== 201 && r.status !== 200) throw new Error(`POST /models answered ${r.status}: ${r.body.slice(0, 500)}`);
        const model = JSON.parse(r.body) as { sizeBytes?: number; paramCount?: number };
        if (model.sizeBytes !== undefined && model.sizeBytes !== bytes) throw new Error(`the service stored ${model.sizeBytes} bytes, sent ${bytes}`);
        rows.upload.push(r.ms);
        rows.send.push(r.sendMs);
        mem.peakRss.push(r.peakRss);
        mem.hwm.push(r.hwm);
        mem.base.push(r.baseRss);
        mem.end.push(r.endRss);
        lastSamples = r.samples;
        const mb = (x: number) => (x / MiB).toFixed(0);
        console.log(
          `run ${run + 1}: upload ${(r.ms / 1000).toFixed(2)} s (body sent at ${(r.sendMs / 1000).toFixed(2)} s), cat ${(rows.cat[run] / 1000).toFixed(2)} s, copyFile+fsync ${(rows.copyFile[run] / 1000).toFixed(2)} s, stream copy ${(sc.ms / 1000).toFixed(2)} s (fsync ${(sc.fsyncMs / 1000).toFixed(2)} s); service RSS ${mb(r.baseRss)} MiB before, peak ${mb(r.peakRss)} MiB sampled, VmHWM ${mb(r.hwm)} MiB (${mb(r.baseHwm)} before), ${mb(r.endRss)} MiB after`,
        );
      } finally {
        await svc.stop();
      }

      // The same upload into a bucket (ARTIFACTS_URL=s3://… on s3rver, on this machine).
      const s3Dir = join(scratch, `data-s3-${run}`);
      spawnSync('cp', ['-a', template, s3Dir]);
      const s3svc = await startService(s3Dir, true, { ...s3.env(`run-${run}`), ARTIFACT_CACHE_DIR: join(scratch, `cache-${run}`) });
      try {
        const r = await upload(s3svc, bytes, 'big-s3');
        if (r.status !== 201) throw new Error(`POST /models (s3) answered ${r.status}: ${r.body.slice(0, 500)}`);
        rows.s3.push(r.ms);
        rows.s3Send.push(r.sendMs);
        s3Growth.push(r.peakRss - r.baseRss);
        console.log(`run ${run + 1}: upload into the bucket ${(r.ms / 1000).toFixed(2)} s (body sent at ${(r.sendMs / 1000).toFixed(2)} s), service RSS peak growth ${((r.peakRss - r.baseRss) / MiB).toFixed(0)} MiB`);
      } finally {
        await s3svc.stop();
      }
    }
  } finally {
    await s3.stop();
    await rm(scratch, { recursive: true, force: true });
    await rm(template, { recursive: true, force: true });
    if (process.env.KEEP_FILE === '0') await rm(FILE, { force: true });
  }

  const rate = (ms: number) => bytes / 1e6 / (ms / 1000);
  const up = median(rows.upload);
  console.log('');
  console.log(`median of ${RUNS} run(s); MB/s = 10^6 bytes/s; "peer ÷ upload" = peer time / upload time (< 1: the upload is slower)`);
  console.log('| what | median s | MB/s | peer ÷ upload | notes |');
  console.log('| --- | ---: | ---: | ---: | --- |');
  const line = (name: string, ms: number, note: string, peer = true) =>
    console.log(`| ${name} | ${(ms / 1000).toFixed(2)} | ${rate(ms).toFixed(0)} | ${peer ? `${(ms / up).toFixed(2)}` : '–'} | ${note} |`);
  line('POST /models (octet-stream, streamed from disk)', up, `sha256 + temp file + fsync + header/stats parse + implied mask read-back + DB row; body sent at ${(median(rows.send) / 1000).toFixed(2)} s`, false);
  console.log(`| POST /models into an S3 bucket (s3rver on this machine) | ${(median(rows.s3) / 1000).toFixed(2)} | ${rate(median(rows.s3)).toFixed(0)} | ${(up / median(rows.s3)).toFixed(2)} | multipart upload (8 MiB parts, 2 in flight) to a temp key + server-side copy to the address + delete; implied mask from the passing bytes; body sent at ${(median(rows.s3Send) / 1000).toFixed(2)} s; RSS growth ${(median(s3Growth) / MiB).toFixed(0)} MiB; "peer ÷ upload" here = folder upload ÷ bucket upload |`);
  line('node stream copy (read → sha256 → write → fsync → rename)', median(rows.stream), `64 KiB chunks, like the upload path; of which fsync ${(median(fsyncs) / 1000).toFixed(2)} s`);
  line('fs.copyFile + fsync', median(rows.copyFile), 'kernel copy (copy_file_range)');
  line('cat > /dev/null', median(rows.cat), 'page-cache read only');
  line('  in-process: SafetensorsIngest.push over 64 KiB chunks', median(comp.parse), 'header check + per-tensor zeros/non-finite stats, 1 thread (incl. the read)');
  line('  in-process: sha256 over 64 KiB chunks', median(comp.hash), '1 thread (incl. the read)');
  line('  in-process: createReadStream alone', median(comp.read), '64 KiB chunks from the page cache');
  line('  in-process: openSafetensors + impliedMask (the read-back after the body)', median(comp.implied), 'reads the prunable tensors (not embeddings, norms, biases) into one reused buffer');
  const r = (x: number) => `${(x / MiB).toFixed(0)} MiB`;
  console.log('');
  console.log('| service memory | median | ÷ file size |');
  console.log('| --- | ---: | ---: |');
  for (const [k, v] of [
    ['idle RSS right after a first start (PGlite initdb on an empty DATA_DIR)', firstStart.rss],
    ['RSS before the upload (restarted service)', median(mem.base)],
    ['peak RSS during the upload (VmRSS every 50 ms)', median(mem.peakRss)],
    ['peak RSS of the process (VmHWM, start-up included)', median(mem.hwm)],
    ['peak growth over the pre-upload RSS', median(mem.peakRss.map((p, i) => p - mem.base[i]))],
    ['RSS after the response', median(mem.end)],
  ] as [string, number][]) {
    console.log(`| ${k} | ${r(v)} | ${(v / bytes).toFixed(3)} |`);
  }
  console.log(`service start to /health: ${(firstStart.ms / 1000).toFixed(1)} s on an empty DATA_DIR, ${(median(startMs) / 1000).toFixed(1)} s restarted (median)`);
  if (process.env.TRACE === '1') {
    console.log('');
    console.log(`RSS trace of the last upload (ms: MiB): ${lastSamples.filter((_, i) => i % 10 === 0).map((s) => `${s.t.toFixed(0)}:${(s.rss / MiB).toFixed(0)}`).join(' ')}`);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
