/**
 * `npm run fuzz -- --cases N [--seed S] [--batch B] [--concurrency C]`: starts the built service as a
 * child process (its own port, a temporary DATA_DIR with embedded PGlite, MAX_UPLOAD_BYTES of 1 MiB)
 * and drives it with seeded, mutated inputs: safetensors bodies, TensorFlow.js multipart uploads
 * (unterminated, truncated and cut among them), dataset uploads and JSON bodies to every POST route,
 * C requests at a time. After each batch it checks that the process is alive, that no answer was a
 * 5xx or anything but problem+json for a 4xx, that refused requests left no row and no file, and that
 * the process holds no more descriptors than after warm-up; it reads the service's event-loop delay.
 * Prints the figures per route as JSON; exits 1 on any failure.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { freePort } from '../src/common/free-port.js';
import { Mulberry32 } from '../src/core/random.js';
import { PROJECT_ROOT } from '../src/paths.js';

// ---------- seeded generator ----------

/** The seed makes a failing run repeatable. */
export function rng(seed: number) {
  const source = new Mulberry32(seed);
  const next = () => source.uniform();
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  return { next, int, pick, chance: (p: number) => next() < p };
}
type Rng = ReturnType<typeof rng>;

const NASTY_STRINGS = ['', '\u0000', 'a\u0000b', '\ud800', 'x\udfff', '\ud83d\ude00', 'é', '../../etc/passwd', '%00', '*'.repeat(40) + 'b', 'a'.repeat(300), 'a'.repeat(5000), ' ', '\\', '"', '{}', 'null'];

function nastyString(r: Rng): string {
  return r.chance(0.7) ? r.pick(NASTY_STRINGS) : Array.from({ length: r.int(20) }, () => String.fromCharCode(r.int(0x10000))).join('');
}

/** encodeURIComponent, except that a lone surrogate (which it refuses) becomes its would-be UTF-8 bytes. */
function encodePath(text: string): string {
  try {
    return encodeURIComponent(text);
  } catch {
    return text.replace(/[\ud800-\udfff]/g, '%ED%A0%80').replace(/[^%\w.~-]/g, (c) => encodeURIComponent(c));
  }
}

function deep(r: Rng, depth: number): string {
  const open = r.chance(0.5) ? '[' : '{"a":';
  const close = open === '[' ? ']' : '}';
  return open.repeat(depth) + (r.chance(0.5) ? '1' : '') + close.repeat(r.chance(0.8) ? depth : r.int(depth));
}

function randomJson(r: Rng, depth = 0): unknown {
  const k = r.int(depth > 3 ? 5 : 8);
  switch (k) {
    case 0: return null;
    case 1: return r.chance(0.5);
    case 2: return r.pick([0, -1, 1, 0.5, 1e308, -1e308, 2 ** 53, 1.5, 255, 1e-9]);
    case 3: return nastyString(r);
    case 4: return r.pick(['mnist', 'fashion-mnist', 'uniform', 'greedy', 'magnitude-global', 'sms', 'imp', 'train']);
    case 5: return Array.from({ length: r.int(4) }, () => randomJson(r, depth + 1));
    default: return Object.fromEntries(Array.from({ length: r.int(4) }, () => [r.pick(['a', 'modelIds', 'method', 'sparsity', 'include', 'name', '__proto__', 'constructor']), randomJson(r, depth + 1)]));
  }
}

/** A valid body with one field replaced, removed or added; sometimes raw garbage or deep nesting. */
function mutateBody(r: Rng, base: Record<string, unknown>): string {
  const roll = r.next();
  if (roll < 0.08) return deep(r, 1 + r.int(r.chance(0.5) ? 100 : 200_000));
  if (roll < 0.14) return JSON.stringify(base).slice(0, r.int(JSON.stringify(base).length));
  if (roll < 0.18) return JSON.stringify(randomJson(r));
  const body: Record<string, unknown> = structuredClone(base);
  const keys = Object.keys(body);
  const n = 1 + r.int(3);
  for (let i = 0; i < n; i++) {
    const key = r.chance(0.85) && keys.length ? r.pick(keys) : r.pick(['extra', 'weights', 'n', 'm', 'seed', 'comparison', 'callbackUrl']);
    if (r.chance(0.15)) delete body[key];
    else if (r.chance(0.2) && body[key] && typeof body[key] === 'object') {
      // One value inside a nested field replaced (the result may not parse: then the field goes).
      try {
        body[key] = JSON.parse(JSON.stringify(body[key]).replace(/"[^"]*"|\d+(\.\d+)?/, JSON.stringify(randomJson(r))));
      } catch {
        delete body[key];
      }
    }
    else body[key] = randomJson(r);
  }
  return JSON.stringify(body);
}

// ---------- checkpoint bytes ----------

export function safetensors(tensors: { name: string; shape: number[] }[], metadata?: Record<string, string>): Buffer {
  let offset = 0;
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  for (const t of tensors) {
    const bytes = 4 * t.shape.reduce((a, b) => a * b, 1);
    header[t.name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = Buffer.from(JSON.stringify(header));
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(json.length));
  const data = Buffer.alloc(offset);
  for (let i = 0; i < offset / 4; i++) data.writeFloatLE(Math.sin(i + 1), i * 4);
  return Buffer.concat([head, json, data]);
}

export const VALID_TENSORS = [{ name: 'fc1.weight', shape: [4, 6] }, { name: 'fc1.bias', shape: [4] }, { name: 'fc2.weight', shape: [3, 4] }];

function mutateSafetensors(r: Rng): Buffer {
  const base = safetensors(VALID_TENSORS, { format: 'pt' });
  const headerLength = Number(base.readBigUInt64LE(0));
  const json = base.subarray(8, 8 + headerLength).toString();
  const data = base.subarray(8 + headerLength);
  const roll = r.next();
  const withHeader = (text: string, body: Buffer = data, declared?: number) => {
    const b = Buffer.from(text);
    const head = Buffer.alloc(8);
    head.writeBigUInt64LE(BigInt(declared ?? b.length));
    return Buffer.concat([head, b, body]);
  };
  if (roll < 0.15) {
    const b = Buffer.from(base);
    for (let i = 0, n = 1 + r.int(8); i < n; i++) b[r.int(b.length)] = r.int(256);
    return b;
  }
  if (roll < 0.3) return base.subarray(0, r.int(base.length));
  if (roll < 0.4) return withHeader(json, data, r.pick([0, 1, headerLength - 1, headerLength + 1, 2 ** 40, base.length]));
  if (roll < 0.55) {
    // A field of one tensor replaced by something nasty (deep nesting, NUL, surrogates, numbers).
    const field = r.pick(['shape', 'dtype', 'data_offsets']);
    const value = r.chance(0.4) ? deep(r, 1 + r.int(r.chance(0.5) ? 50 : 50_000)) : JSON.stringify(randomJson(r));
    return withHeader(json.replace(new RegExp(`"${field}":(\\[[^\\]]*\\]|"[^"]*")`), `"${field}":${value}`));
  }
  if (roll < 0.7) {
    const name = r.pick(['w\\u0000', 'w\\ud800', '\\udc00x', 'a'.repeat(2000), '', '__metadata__', 'fc1.weight']);
    return withHeader(json.replace('"fc2.weight"', `"${name}"`));
  }
  if (roll < 0.8) return withHeader(json.replace('"pt"', JSON.stringify(r.pick(['\\u0000', '\\ud800', 'x'.repeat(70_000), 5, null, { a: 1 }]))).replace(/"\\\\/g, '"\\'));
  if (roll < 0.9) {
    const at = r.int(json.length);
    return withHeader(json.slice(0, at) + JSON.stringify(randomJson(r)) + json.slice(at + r.int(10)));
  }
  return base; // valid: must be 201
}

const MODEL_JSON = {
  modelTopology: {
    class_name: 'Sequential',
    config: { name: 'seq', layers: [{ class_name: 'Dense', config: { units: 2, name: 'dense_1', batch_input_shape: [null, 3] } }] },
    keras_version: 'tfjs-layers 4.22.0',
    backend: 'tensor_flow.js',
  },
  format: 'layers-model',
  weightsManifest: [{ paths: ['model.weights.bin'], weights: [{ name: 'dense_1/kernel', shape: [3, 2], dtype: 'float32' }, { name: 'dense_1/bias', shape: [2], dtype: 'float32' }] }],
};

interface Part {
  field: string;
  filename: string;
  data: Buffer;
}

function multipartBody(parts: Part[], boundary: string, terminate = true): Buffer {
  const out: Buffer[] = [];
  for (const p of parts) {
    out.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${p.field}"; filename="${p.filename}"\r\nContent-Type: application/octet-stream\r\n\r\n`), p.data, Buffer.from('\r\n'));
  }
  if (terminate) out.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(out);
}

interface Upload {
  contentType: string;
  body: Buffer;
  /** Declared Content-Length when it differs from the body (a truncated body), or 'chunked'. */
  framing: 'length' | 'chunked' | { declared: number };
  /** Close the connection after this many body bytes (a client that goes away). */
  cutAfter?: number;
  label: string;
}

function framingFor(r: Rng, body: Buffer): Pick<Upload, 'framing' | 'cutAfter'> & { variant: string } {
  const roll = r.next();
  if (roll < 0.6) return { framing: 'length', variant: 'length' };
  if (roll < 0.8) return { framing: 'chunked', variant: 'chunked' };
  if (roll < 0.9) return { framing: { declared: body.length + 1 + r.int(1000) }, cutAfter: r.int(body.length + 1), variant: 'cut' };
  return { framing: 'length', cutAfter: r.int(body.length + 1), variant: 'cut' };
}

function mutateTfjs(r: Rng): Upload {
  const boundary = `fuzz${r.int(1e9)}`;
  let modelJson: unknown = structuredClone(MODEL_JSON);
  const weights = Buffer.alloc(32, 1);
  let weightsData = weights;
  const roll = r.next();
  if (roll < 0.25) {
    const m = modelJson as typeof MODEL_JSON;
    const pick = r.int(6);
    if (pick === 0) m.weightsManifest[0].weights = [];
    else if (pick === 1) m.weightsManifest[0].weights.push({ ...m.weightsManifest[0].weights[0] });
    else if (pick === 2) m.weightsManifest[0].weights[0].name = nastyString(r);
    else if (pick === 3) (m.weightsManifest[0].weights[0] as Record<string, unknown>).shape = randomJson(r);
    else if (pick === 4) m.weightsManifest[0].paths = [r.pick(['../x.bin', '/abs', 'a\\b', 'model.weights.bin', 'other.bin'])];
    else modelJson = randomJson(r);
  } else if (roll < 0.35) weightsData = weights.subarray(0, r.int(weights.length));
  else if (roll < 0.4) weightsData = Buffer.concat([weights, Buffer.alloc(1 + r.int(64))]);
  let modelJsonText = JSON.stringify(modelJson);
  if (r.chance(0.1)) modelJsonText = `{"modelTopology":${deep(r, 1 + r.int(100_000))},"weightsManifest":[]}`;
  let parts: Part[] = [
    { field: 'model.json', filename: 'model.json', data: Buffer.from(modelJsonText) },
    { field: 'model.weights.bin', filename: 'model.weights.bin', data: weightsData },
  ];
  const shape = r.next();
  if (shape < 0.08) parts = parts.reverse();
  else if (shape < 0.14) parts.push(parts[r.int(2)]);
  else if (shape < 0.18) parts = [parts[r.int(2)]];
  else if (shape < 0.22) parts.push({ field: nastyString(r) || 'x', filename: 'x', data: Buffer.alloc(3) });
  const terminate = !r.chance(0.15);
  const body = multipartBody(parts, boundary, terminate);
  const f = framingFor(r, body);
  return { contentType: `multipart/form-data; boundary=${boundary}`, body, ...f, label: `${terminate ? '' : 'unterminated '}${f.variant}` };
}

function idx(dims: number[], fill: (i: number) => number): Buffer {
  const n = dims.reduce((a, b) => a * b, 1);
  const b = Buffer.alloc(4 + 4 * dims.length + n);
  b.writeUInt8(0x08, 2);
  b.writeUInt8(dims.length, 3);
  for (const [i, d] of dims.entries()) b.writeUInt32BE(d, 4 + 4 * i);
  for (let i = 0; i < n; i++) b[4 + 4 * dims.length + i] = fill(i);
  return b;
}

function mutateDataset(r: Rng): Upload {
  const count = 14;
  let images = idx([count, 4, 4], (i) => (i * 37) % 256);
  let labels = idx([count], (i) => i % 2);
  if (r.chance(0.3)) {
    const target = r.chance(0.5) ? images : labels;
    const b = Buffer.from(target);
    for (let i = 0, n = 1 + r.int(4); i < n; i++) b[r.int(Math.min(b.length, 24))] = r.int(256);
    if (target === images) images = b;
    else labels = b;
  }
  if (r.chance(0.15)) {
    // One .npz / safetensors body instead: random bytes, a zip magic, or a tensor file.
    const body = r.pick([Buffer.from([0x50, 0x4b, 0x03, 0x04, ...Array.from({ length: r.int(200) }, () => r.int(256))]), safetensors([{ name: 'x', shape: [4, 2] }, { name: 'y', shape: [4] }]), Buffer.alloc(r.int(100), 7)]);
    const f = framingFor(r, body);
    return { contentType: 'application/octet-stream', body, ...f, label: `octet ${f.variant}` };
  }
  const boundary = `ds${r.int(1e9)}`;
  let parts: Part[] = [
    { field: 'images', filename: 'i', data: images },
    { field: 'labels', filename: 'l', data: labels },
  ];
  if (r.chance(0.1)) parts.push({ field: r.pick(['images', 'testImages', 'other']), filename: 'x', data: images });
  if (r.chance(0.05)) parts = parts.slice(0, 1);
  const terminate = !r.chance(0.15);
  const body = multipartBody(parts, boundary, terminate);
  const f = framingFor(r, body);
  return { contentType: `multipart/form-data; boundary=${boundary}`, body, ...f, label: `${terminate ? '' : 'unterminated '}${f.variant}` };
}

// ---------- raw HTTP ----------

interface Answer {
  status: number | null;
  contentType: string;
  body: string;
}

function chunk(bytes: Buffer): Buffer {
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += 1000) {
    const c = bytes.subarray(i, i + 1000);
    out.push(Buffer.from(`${c.length.toString(16)}\r\n`), c, Buffer.from('\r\n'));
  }
  out.push(Buffer.from('0\r\n\r\n'));
  return Buffer.concat(out);
}

/** One request on its own connection (Connection: close), bytes exactly as given. */
function send(port: number, method: string, path: string, opts: { contentType?: string; body?: Buffer; framing?: Upload['framing']; cutAfter?: number; timeoutMs?: number } = {}): Promise<Answer & { hung?: boolean }> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let done = false;
    const timer = setTimeout(() => finish(true), opts.timeoutMs ?? 30_000);
    function finish(hung = false) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const text = Buffer.concat(chunks).toString('utf8');
      const m = /^HTTP\/1\.1 (\d{3})[^\r\n]*\r\n([\s\S]*?)\r\n\r\n([\s\S]*)$/.exec(text);
      const contentType = m ? (/^content-type:\s*(.*)$/im.exec(m[2])?.[1] ?? '') : '';
      resolve({ status: m ? Number(m[1]) : null, contentType, body: m ? m[3] : text, hung: hung && opts.cutAfter === undefined });
    }
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', () => finish());
    socket.on('close', () => finish());
    socket.on('connect', () => {
      const body = opts.body ?? Buffer.alloc(0);
      const framing = opts.framing ?? 'length';
      const lines = [`${method} ${path} HTTP/1.1`, 'Host: fuzz', 'Connection: close'];
      if (opts.contentType) lines.push(`Content-Type: ${opts.contentType}`);
      let payload = body;
      if (framing === 'chunked') {
        lines.push('Transfer-Encoding: chunked');
        payload = chunk(body);
      } else lines.push(`Content-Length: ${typeof framing === 'object' ? framing.declared : body.length}`);
      socket.write(`${lines.join('\r\n')}\r\n\r\n`);
      if (opts.cutAfter !== undefined) {
        socket.write(payload.subarray(0, opts.cutAfter), () => setTimeout(() => finish(), 20));
        return;
      }
      socket.write(payload);
    });
  });
}

async function getJson(port: number, path: string): Promise<Record<string, unknown>> {
  const a = await send(port, 'GET', path);
  if (a.status !== 200) throw new Error(`GET ${path} answered ${a.status}: ${a.body.slice(0, 300)}`);
  return JSON.parse(a.body);
}

async function postJson(port: number, path: string, body: unknown): Promise<Answer> {
  return send(port, 'POST', path, { contentType: 'application/json', body: Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)) });
}

// ---------- the service under test ----------

interface Service {
  child: ChildProcess;
  port: number;
  dataDir: string;
  log: string[];
  exited: () => boolean;
  stop: () => Promise<void>;
}

async function startService(): Promise<Service> {
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), 'sparsoup-fuzz-'));
  const env: NodeJS.ProcessEnv = { ...process.env, PORT: String(port), HOST: '127.0.0.1', DATA_DIR: dataDir, WORKERS: '1', LOG_LEVEL: 'error', MAX_UPLOAD_BYTES: String(1024 * 1024), REQUEST_TIMEOUT_SECONDS: '20' };
  delete env.DATABASE_URL;
  delete env.API_KEYS;
  const child = spawn(process.execPath, [join(PROJECT_ROOT, 'dist', 'src', 'main.js')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  // A fuzzer stopped by a signal takes its service (and that one's data folder) with it.
  const onSignal = () => {
    child.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  child.on('exit', () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  });
  const log: string[] = [];
  let exited = false;
  child.on('exit', () => {
    exited = true;
  });
  for (const s of [child.stdout, child.stderr]) s?.on('data', (c: Buffer) => log.push(...c.toString().split('\n').filter(Boolean)));
  for (let i = 0; i < 600; i++) {
    if (exited) throw new Error(`the service exited at start-up:\n${log.join('\n')}`);
    const a = await send(port, 'GET', '/health', { timeoutMs: 2000 }).catch(() => null);
    if (a?.status === 200) break;
    if (i === 599) throw new Error(`the service did not become healthy:\n${log.join('\n')}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    child,
    port,
    dataDir,
    log,
    exited: () => exited,
    stop: async () => {
      if (!exited) {
        child.kill('SIGTERM');
        await new Promise((r) => setTimeout(r, 100));
        for (let i = 0; i < 100 && !exited; i++) await new Promise((r) => setTimeout(r, 100));
        if (!exited) child.kill('SIGKILL');
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Descriptors of the child, less those of the embedded database (it opens its files lazily). */
/** What the service's descriptors point to (sockets, pipes, files), outside the database's files. */
function serviceFdTargets(s: Service): string[] {
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${s.child.pid}/fd`)) {
    try {
      const target = readlinkSync(`/proc/${s.child.pid}/fd/${fd}`);
      if (!target.startsWith(join(s.dataDir, 'pglite'))) out.push(target);
    } catch {}
  }
  return out;
}

function serviceFds(s: Service): number {
  return serviceFdTargets(s).length;
}

/** The descriptor kinds of `now` beyond those of `before` (socket:, pipe:, anon_inode:, or a path). */
function extraFds(before: string[], now: string[]): string[] {
  const kind = (t: string) => t.replace(/\[\d+\]$/, '');
  const left = new Map<string, number>();
  for (const t of before) left.set(kind(t), (left.get(kind(t)) ?? 0) + 1);
  const extra: string[] = [];
  for (const t of now) {
    const k = kind(t);
    if ((left.get(k) ?? 0) > 0) left.set(k, left.get(k)! - 1);
    else extra.push(k);
  }
  return extra;
}

/** Files under the artifact folder: objects (sha256/…) and temporary files (tmp/…), health probes left out. */
function artifactFiles(s: Service): { objects: number; temp: string[] } {
  let objects = 0;
  const temp: string[] = [];
  const walk = (dir: string, rel: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(dir, e.name), `${rel}${e.name}/`);
      else if (e.name.startsWith('.health-')) continue;
      else if (rel.startsWith('tmp/')) temp.push(`${rel}${e.name}`);
      else objects++;
    }
  };
  try {
    walk(join(s.dataDir, 'artifacts'), '');
  } catch {}
  return { objects, temp };
}

const TABLES = ['models', 'masks', 'datasets', 'runs', 'soups'] as const;
type Table = (typeof TABLES)[number];
type Counts = Record<Table, number>;

/** The rows a 2xx answer of a route adds; null where it depends on work that goes on after the answer. */
const CREATES: Record<string, Partial<Counts> | null> = {
  'POST /models (safetensors)': { models: 1 },
  'POST /models (tfjs multipart)': { models: 1 },
  'POST /datasets': { datasets: 1 },
  'POST /models/templates': { models: 1 },
  'POST /models/:id/prune': { models: 1, masks: 1 },
  'POST /masks/:id/apply': { models: 1 },
  'POST /models/:id/evaluations': {},
  'POST /artifacts/gc': {},
  'POST /runs': null,
  'POST /soups': null,
  'POST /runs/:id/cancel': null,
};

async function counts(s: Service): Promise<Counts> {
  const totals = await Promise.all(TABLES.map(async (t) => (await getJson(s.port, `/${t}?limit=1`)).total as number));
  return Object.fromEntries(TABLES.map((t, i) => [t, totals[i]])) as Counts;
}

const showCounts = (c: Counts) => TABLES.map((t) => `${t} ${c[t]}`).join(', ');

/**
 * What a refused request could have left, found cheaply: the row counts against what the accepted
 * answers explain, temporary files, and whatever an immediate garbage collection finds to delete
 * (artifact rows no model, mask or dataset references, object files without a row). Waits up to two
 * seconds for cut connections' clean-up before it collects. Returns the problems it saw.
 */
async function leftovers(s: Service, expected: Counts | null): Promise<{ now: Counts; problems: string[] }> {
  let now = await counts(s);
  let files = artifactFiles(s);
  for (let k = 0; k < 20 && ((expected && showCounts(now) !== showCounts(expected)) || files.temp.length > 0); k++) {
    await new Promise((res) => setTimeout(res, 100));
    now = await counts(s);
    files = artifactFiles(s);
  }
  const problems: string[] = [];
  if (expected && showCounts(now) !== showCounts(expected)) problems.push(`rows ${showCounts(now)} where the accepted answers explain ${showCounts(expected)}`);
  if (files.temp.length) problems.push(`temporary files ${files.temp.slice(0, 5).join(', ')}`);
  const gc = await postJson(s.port, '/artifacts/gc', { graceSeconds: 0 });
  if (gc.status !== 200) problems.push(`POST /artifacts/gc answered ${gc.status}: ${gc.body.slice(0, 200)}`);
  else {
    const { rowsDeleted, filesDeleted } = JSON.parse(gc.body) as { rowsDeleted: number; filesDeleted: number };
    if (rowsDeleted || filesDeleted) problems.push(`${rowsDeleted} artifact rows without a model, mask or dataset and ${filesDeleted} files without a row`);
  }
  const artifacts = (await getJson(s.port, '/artifacts?limit=1')).total as number;
  const objects = artifactFiles(s).objects;
  if (objects !== artifacts) problems.push(`${objects} stored objects for ${artifacts} artifact rows`);
  return { now, problems };
}

/** The event loop's delay since the last scrape (prom-client's monitorEventLoopDelay, reset by each scrape), in ms. */
async function eventLoopDelay(s: Service): Promise<{ maxMs: number; p99Ms: number }> {
  const a = await send(s.port, 'GET', '/metrics');
  const read = (name: string) => 1000 * Number(new RegExp(`^${name} (\\S+)`, 'm').exec(a.body)?.[1] ?? Number.NaN);
  return { maxMs: read('nodejs_eventloop_lag_max_seconds'), p99Ms: read('nodejs_eventloop_lag_p99_seconds') };
}

// ---------- the campaign ----------

/** Error log lines and stack frames the service printed (LOG_LEVEL=error logs only 5xx and crashes). */
function countTraces(log: string[]): number {
  return log.filter((l) => /^\s+at\s|"level":(50|60)/.test(l)).length;
}

export interface RouteFigures {
  cases: number;
  ok2xx: number;
  refused4xx: number;
  server5xx: number;
  notProblemJson: number;
  noAnswer: number;
  hangs: number;
  litter: number;
  crashes: number;
}

export interface FuzzReport {
  seed: number;
  cases: number;
  seconds: number;
  casesPerSecond: number;
  /** Of `seconds`, those spent with a batch's requests in flight (the rest: start-up and checks). */
  sendingSeconds: number;
  /** Seconds spent waiting for background work, checking batches, checking them again case by case, and finding what held the event loop. */
  timing: { settle: number; check: number; recheck: number; delayProbe: number };
  concurrency: number;
  crashes: number;
  traces: number;
  fdGrowth: number;
  /** Batches whose accepted answers did not say what rows they add (runs, soups): their refused cases were checked again one at a time. */
  batchesRechecked: number;
  /** The service's event-loop delay: the longest, the worst batch's p99, and each batch past 100 ms with the request that held it where one alone does. */
  eventLoop: { maxMs: number; worstP99Ms: number; fuzzerMaxMs: number; over100ms: string[] };
  routes: Record<string, RouteFigures>;
  failures: string[];
}

/** The fixtures' ids; a restarted service has new ones, and the cases made before refer to the old. */
interface Ids {
  modelId: string;
  prunedId: string;
  maskId: string;
}

interface Case {
  n: number;
  route: string;
  label: string;
  run: (s: Service, ids: Ids) => Promise<Answer & { hung?: boolean }>;
  /** A client that hung up cannot read an answer; only the service's state is checked. */
  cut: boolean;
  /** Cut only after the whole body went out: the service may have stored it. */
  maybeStored: boolean;
}

async function fixtures(s: Service): Promise<Ids> {
  let up = await send(s.port, 'POST', '/models?name=fuzz-base', { contentType: 'application/octet-stream', body: safetensors(VALID_TENSORS) });
  for (let i = 0; i < 5 && up.status === null; i++) {
    // A service still starting (a busy machine) may drop the first connection.
    await new Promise((res) => setTimeout(res, 1000));
    up = await send(s.port, 'POST', '/models?name=fuzz-base', { contentType: 'application/octet-stream', body: safetensors(VALID_TENSORS) });
  }
  if (up.status !== 201) throw new Error(`could not upload the base model: ${up.status} ${up.body}`);
  const modelId = JSON.parse(up.body).id as string;
  const pruned = await postJson(s.port, `/models/${modelId}/prune`, { method: 'magnitude-global', sparsity: 0.5 });
  if (pruned.status !== 201) throw new Error(`could not prune the base model: ${pruned.status} ${pruned.body}`);
  // Every thread the pool may start (WORKERS=1 plus the request thread), started before the
  // descriptor baseline: each thread holds its own event loop's descriptors (two pipes, an eventfd,
  // an epoll), which are the pool's, not a request's leak.
  const warm = await Promise.all([0.6, 0.7, 0.8].map((sparsity) => postJson(s.port, `/models/${modelId}/prune`, { method: 'magnitude-global', sparsity })));
  if (warm.some((w) => w.status !== 201)) throw new Error(`could not warm the worker threads: ${warm.map((w) => w.status).join(', ')}`);
  return { modelId, prunedId: JSON.parse(pruned.body).model.id, maskId: JSON.parse(pruned.body).mask.id };
}

export interface FuzzOptions {
  cases: number;
  seed?: number;
  /** Cases between two checks of the service's rows, files and descriptors. */
  batch?: number;
  /** Requests in flight at once within a batch. */
  concurrency?: number;
  log?: (line: string) => void;
  onBatch?: (report: FuzzReport) => void;
  /** Called after case `n` has its answer (in the batch and again when a batch is checked case by case); the tests plant litter with it. */
  afterCase?: (n: number, service: { port: number; dataDir: string }, status: number | null) => Promise<void>;
}

/**
 * Cases go out `concurrency` at a time in batches; after each batch the service must be alive, the
 * row counts must be what the batch's accepted answers explain, and nothing may be left to collect
 * (temporary files, unreferenced artifact rows, files without a row) nor any descriptor beyond
 * warm-up. A batch that fails the check (or whose accepted answers cannot say what they add) is run
 * again one case at a time, checking after each, so that the report names the case that left
 * something; a batch during which the service died is run again the same way on a fresh one.
 */
export async function runFuzz(opts: FuzzOptions): Promise<FuzzReport> {
  const seed = opts.seed ?? 1;
  const r = rng(seed);
  const say = opts.log ?? (() => {});
  const concurrency = Math.max(1, opts.concurrency ?? 6);
  const started = Date.now();
  const report: FuzzReport = { seed, cases: 0, seconds: 0, casesPerSecond: 0, sendingSeconds: 0, timing: { settle: 0, check: 0, recheck: 0, delayProbe: 0 }, concurrency, crashes: 0, traces: 0, fdGrowth: 0, batchesRechecked: 0, eventLoop: { maxMs: 0, worstP99Ms: 0, fuzzerMaxMs: 0, over100ms: [] }, routes: {}, failures: [] };
  /** Adds the time since `t` to a phase of report.timing; returns now. */
  const spent = (phase: keyof FuzzReport['timing'], t: number) => {
    const now = Date.now();
    report.timing[phase] = Math.round((report.timing[phase] + (now - t) / 1000) * 10) / 10;
    return now;
  };
  const fail = (msg: string) => {
    if (report.failures.length < 200) report.failures.push(msg);
  };
  let s = await startService();
  try {
    // Fixtures the JSON bodies refer to: a model, a pruned model and its mask (made again after a restart).
    const ids = await fixtures(s);
    const original = { ...ids };
    /** The body or path of a case made before a restart, with the fixtures' ids of the service now. */
    const current = (text: string) => (original.modelId === ids.modelId ? text : text.replaceAll(original.modelId, ids.modelId).replaceAll(original.prunedId, ids.prunedId).replaceAll(original.maskId, ids.maskId));
    const training = { seed: 0, epochs: 1, batchSize: 32, optimizer: 'sgd', momentum: 0.9, nesterov: false, learningRate: 0.01, schedule: 'constant', warmupFraction: 0, weightDecay: 0 };
    const jsonRoutes: { route: string; path: () => string; base: Record<string, unknown> }[] = [
      { route: 'POST /models/templates', path: () => '/models/templates', base: { architecture: 'lenet-300-100', datasetId: 'mnist', seed: 1 } },
      { route: 'POST /models/:id/prune', path: () => `/models/${r.chance(0.9) ? ids.modelId : nastyString(r)}/prune`, base: { method: 'magnitude-global', sparsity: 0.5, include: ['fc*'], exclude: ['*bias'], seed: 1 } },
      { route: 'POST /models/:id/evaluations', path: () => `/models/${ids.prunedId}/evaluations`, base: { datasetId: 'mnist', split: 'test', corruptions: [{ name: 'gaussian-noise', severity: 1 }] } },
      { route: 'POST /masks/:id/apply', path: () => `/masks/${ids.maskId}/apply`, base: { modelId: ids.modelId } },
      { route: 'POST /runs', path: () => '/runs', base: { kind: 'retrain', modelId: ids.prunedId, datasetId: 'mnist', training, m: 2, vary: 'seed' } },
      { route: 'POST /runs/:id/cancel', path: () => `/runs/${r.pick(['00000000-0000-4000-8000-000000000000', nastyString(r)])}/cancel`, base: {} },
      { route: 'POST /soups', path: () => '/soups', base: { modelIds: [ids.prunedId, ids.prunedId], method: 'uniform', name: 'fuzz-soup' } },
      { route: 'POST /artifacts/gc', path: () => '/artifacts/gc', base: { graceSeconds: 600 } },
    ];
    // Every random choice is made here, in case order, so a seed gives the same cases whatever the concurrency.
    const makeCase = (n: number): Case => {
      const roll = r.next();
      if (roll < 0.3) {
        const body = mutateSafetensors(r);
        const f = framingFor(r, body);
        const name = r.chance(0.9) ? 'fuzz' : encodePath(nastyString(r));
        return { n, route: 'POST /models (safetensors)', label: f.variant, cut: f.cutAfter !== undefined, maybeStored: f.cutAfter === body.length && f.framing === 'length', run: (svc) => send(svc.port, 'POST', `/models?name=${name}`, { contentType: 'application/octet-stream', body, framing: f.framing, cutAfter: f.cutAfter }) };
      }
      if (roll < 0.5) {
        const u = mutateTfjs(r);
        return { n, route: 'POST /models (tfjs multipart)', label: u.label, cut: u.cutAfter !== undefined, maybeStored: u.cutAfter === u.body.length && u.framing === 'length', run: (svc) => send(svc.port, 'POST', '/models?name=fuzz-tfjs', u) };
      }
      if (roll < 0.65) {
        const u = mutateDataset(r);
        const name = `fuzz-ds${r.chance(0.1) ? encodePath(nastyString(r)) : ''}`;
        return { n, route: 'POST /datasets', label: u.label, cut: u.cutAfter !== undefined, maybeStored: u.cutAfter === u.body.length && u.framing === 'length', run: (svc) => send(svc.port, 'POST', `/datasets?name=${name}`, u) };
      }
      const target = r.pick(jsonRoutes);
      const body = mutateBody(r, target.base);
      const path = target.path().replace(/[^\x21-\x7e]/g, encodePath);
      return { n, route: target.route, label: 'json', cut: false, maybeStored: false, run: (svc) => send(svc.port, 'POST', current(path), { contentType: 'application/json', body: Buffer.from(current(body)) }) };
    };
    const settle = async () => {
      // Let cut connections' cleanup and any accepted background work finish.
      for (let i = 0; i < 100; i++) {
        const runs = (await getJson(s.port, '/runs?limit=100')).items as { id: string; status: string }[];
        const soups = (await getJson(s.port, '/soups?limit=100')).items as { status: string }[];
        const busy = runs.filter((x) => x.status === 'queued' || x.status === 'running');
        for (const run of busy) await send(s.port, 'POST', `/runs/${run.id}/cancel`);
        if (busy.length === 0 && !soups.some((x) => x.status === 'queued' || x.status === 'running')) break;
        await new Promise((res) => setTimeout(res, 200));
      }
    };
    const restart = async () => {
      report.traces += countTraces(s.log);
      await s.stop();
      s = await startService();
      Object.assign(ids, await fixtures(s));
      await settle();
      return (await leftovers(s, null)).now;
    };
    const where = (c: Case) => `case ${c.n} ${c.route} [${c.label}]`;
    const figures = (c: Case) => {
      report.routes[c.route] ??= { cases: 0, ok2xx: 0, refused4xx: 0, server5xx: 0, notProblemJson: 0, noAnswer: 0, hangs: 0, litter: 0, crashes: 0 };
      return report.routes[c.route];
    };
    /** The answer's figures; true when the service accepted the request. */
    const judge = (c: Case, a: Answer & { hung?: boolean }): boolean => {
      const fig = figures(c);
      if (a.hung) {
        fig.hangs++;
        fail(`${where(c)}: no answer within 30 s`);
      }
      if (c.cut) return false;
      if (a.status === null) {
        fig.noAnswer++;
        fail(`${where(c)}: the connection closed without an answer`);
      } else if (a.status >= 500) {
        fig.server5xx++;
        const id = /"requestId":"([^"]+)"/.exec(a.body)?.[1];
        const logged = id ? s.log.filter((l) => l.includes(id)).join('\n').slice(0, 2000) : '';
        fail(`${where(c)}: ${a.status} ${a.body.slice(0, 300)}${logged ? `\n${logged}` : ''}`);
      } else if (a.status >= 400) {
        fig.refused4xx++;
        if (!a.contentType.startsWith('application/problem+json')) {
          fig.notProblemJson++;
          fail(`${where(c)}: ${a.status} as ${a.contentType || 'no content type'}`);
        }
      } else {
        fig.ok2xx++;
        return true;
      }
      return false;
    };
    const add = (into: Counts, route: string): boolean => {
      const creates = CREATES[route];
      if (!creates) return false;
      for (const t of TABLES) into[t] += creates[t] ?? 0;
      return true;
    };
    /**
     * Runs `cases` again one at a time, each followed by the full check; names those after which a
     * refusal left something, or the one that ended the service. Returns the names and the counts after.
     */
    const oneByOne = async (cases: Case[], from: Counts, mode: 'litter' | 'crash' | 'delay'): Promise<{ named: string[]; now: Counts }> => {
      const named: string[] = [];
      let before = from;
      for (const c of cases) {
        if (mode === 'delay') await eventLoopDelay(s);
        const a = await c.run(s, ids);
        await opts.afterCase?.(c.n, s, a.status);
        if (mode === 'crash') {
          judge(c, a);
          if (!s.exited() && (await send(s.port, 'GET', '/health', { timeoutMs: 5000 })).status === null) {
            for (let k = 0; k < 50 && !s.exited(); k++) await new Promise((res) => setTimeout(res, 100));
          }
          if (s.exited()) {
            named.push(where(c));
            figures(c).crashes++;
            fail(`${where(c)}: the service exited\n${s.log.slice(-30).join('\n')}`);
            before = await restart();
          }
          continue;
        }
        if (mode === 'delay') {
          const d = await eventLoopDelay(s);
          named.push(`${where(c)}: ${Math.round(d.maxMs)} ms`);
          continue;
        }
        const accepted = !c.cut && a.status !== null && a.status < 300;
        if (accepted || c.maybeStored) {
          await settle();
          before = (await leftovers(s, null)).now;
          continue;
        }
        const { now, problems } = await leftovers(s, before);
        if (problems.length) {
          named.push(where(c));
          figures(c).litter++;
          fail(`${where(c)}: a refused request left ${problems.join('; ')}`);
        }
        before = now;
      }
      return { named, now: before };
    };

    await settle();
    let state = (await leftovers(s, null)).now;
    const fdBaselineTargets = serviceFdTargets(s);
    const fdBaseline = fdBaselineTargets.length;
    const batchSize = opts.batch ?? 200;
    await eventLoopDelay(s); // the warm-up's delays are not the campaign's
    // The fuzzer's own loop, measured alike: on a shared machine a process can wait for a core, and a
    // delay that both loops see in the same batch is the machine's rather than one request's.
    const ownLoop = monitorEventLoopDelay({ resolution: 10 });
    ownLoop.enable();
    let next = 1;
    while (report.cases < opts.cases) {
      // Garbage collections go after the batch's check, one at a time: run beside uploads they could
      // take their temporary files, and they would collect what the cases before them left before the
      // check could see it.
      const made = Array.from({ length: Math.min(batchSize, opts.cases - report.cases) }, () => makeCase(next++));
      const batch = made.filter((c) => c.route !== 'POST /artifacts/gc');
      const collections = made.filter((c) => c.route === 'POST /artifacts/gc');
      report.cases += made.length;
      const answers = new Map<Case, Answer & { hung?: boolean }>();
      let cursor = 0;
      const sending = Date.now();
      await Promise.all(
        Array.from({ length: Math.min(concurrency, batch.length) }, async () => {
          while (cursor < batch.length && !s.exited()) {
            const c = batch[cursor++];
            const a = await c.run(s, ids);
            answers.set(c, a);
            await opts.afterCase?.(c.n, s, a.status);
          }
        }),
      );
      report.sendingSeconds += (Date.now() - sending) / 1000;
      for (const c of batch) figures(c).cases++;
      // A crash shows as a refused connection before the exit event arrives.
      if (!s.exited() && (await send(s.port, 'GET', '/health', { timeoutMs: 5000 })).status === null) {
        for (let k = 0; k < 50 && !s.exited(); k++) await new Promise((res) => setTimeout(res, 100));
      }
      if (s.exited()) {
        // Answers cut short by the exit say nothing; the batch goes again, one case at a time, on a fresh service.
        report.crashes++;
        fail(`cases ${made[0].n}–${made[made.length - 1].n}: the service exited\n${s.log.slice(-30).join('\n')}`);
        state = await restart();
        const { named, now } = await oneByOne(batch, state, 'crash');
        report.crashes += Math.max(0, named.length - 1);
        if (named.length === 0) fail(`cases ${made[0].n}–${made[made.length - 1].n}: the exit did not come again when run one at a time`);
        state = now;
      } else {
        const expected = { ...state };
        let predictable = true;
        const refused: Case[] = [];
        for (const c of batch) {
          const accepted = judge(c, answers.get(c)!);
          if (accepted) predictable = add(expected, c.route) && predictable;
          else refused.push(c);
          if (c.maybeStored) predictable = false;
        }
        let t = Date.now();
        await settle();
        t = spent('settle', t);
        const { now, problems } = await leftovers(s, predictable ? expected : null);
        t = spent('check', t);
        state = now;
        if (problems.length || !predictable) {
          report.batchesRechecked++;
          const again = await oneByOne(refused, state, 'litter');
          t = spent('recheck', t);
          state = again.now;
          if (problems.length && again.named.length === 0) fail(`cases ${made[0].n}–${made[made.length - 1].n}: ${problems.join('; ')} (not left again when run one at a time)`);
        }
      }
      for (const c of collections) {
        figures(c).cases++;
        if (s.exited()) break;
        const a = await c.run(s, ids);
        judge(c, a);
        await opts.afterCase?.(c.n, s, a.status);
        if ((await send(s.port, 'GET', '/health', { timeoutMs: 5000 })).status === null) {
          for (let k = 0; k < 50 && !s.exited(); k++) await new Promise((res) => setTimeout(res, 100));
        }
        if (s.exited()) {
          report.crashes++;
          figures(c).crashes++;
          fail(`${where(c)}: the service exited\n${s.log.slice(-30).join('\n')}`);
          state = await restart();
        }
      }
      if (!s.exited()) {
        let t = Date.now();
        const delay = await eventLoopDelay(s);
        report.eventLoop.maxMs = Math.max(report.eventLoop.maxMs, Math.round(delay.maxMs));
        report.eventLoop.worstP99Ms = Math.max(report.eventLoop.worstP99Ms, Math.round(delay.p99Ms));
        report.eventLoop.fuzzerMaxMs = Math.max(report.eventLoop.fuzzerMaxMs, Math.round(ownLoop.max / 1e6));
        if (delay.maxMs > 100 && report.eventLoop.over100ms.length < 3) {
          // Which request: the batch again, one case at a time, the delay read around each.
          t = spent('check', t);
          const { named } = await oneByOne(batch, state, 'delay');
          const worst = named.map((x) => ({ x, ms: Number(/(\d+) ms$/.exec(x)?.[1]) })).sort((a, b) => b.ms - a.ms)[0];
          report.eventLoop.over100ms.push(`cases ${made[0].n}–${made[made.length - 1].n}: ${Math.round(delay.maxMs)} ms (the fuzzer's own loop: ${Math.round(ownLoop.max / 1e6)} ms); one at a time the longest was ${worst?.x ?? 'none'}`);
          await settle();
          state = (await leftovers(s, null)).now;
          await eventLoopDelay(s);
          t = spent('delayProbe', t);
        }
        ownLoop.reset();
        let fds = serviceFds(s);
        // A built-in dataset being parsed or cached (a template or evaluation accepted in this batch
        // reads 50 MB of MNIST in a worker thread) holds its files for a while on a busy machine: that
        // is work in flight, so it gets up to two minutes to end; anything else gets two seconds.
        const datasetRead = (t: string) => t.includes('/node_modules/') || t.startsWith(join(s.dataDir, 'cache'));
        const deadline = Date.now() + 120_000;
        for (let k = 0; fds > fdBaseline; k++) {
          const inFlight = extraFds(fdBaselineTargets, serviceFdTargets(s)).every(datasetRead);
          if (k >= 20 && (!inFlight || Date.now() > deadline)) break;
          await new Promise((res) => setTimeout(res, 100));
          fds = serviceFds(s);
        }
        spent('check', t);
        report.fdGrowth = Math.max(report.fdGrowth, fds - fdBaseline);
        if (fds > fdBaseline) fail(`after case ${report.cases}: ${fds - fdBaseline} more descriptors than after warm-up (${extraFds(fdBaselineTargets, serviceFdTargets(s)).join(', ')})`);
      }
      report.seconds = Math.round((Date.now() - started) / 1000);
      report.casesPerSecond = Math.round((10 * report.cases) / Math.max(1, (Date.now() - started) / 1000)) / 10;
      opts.onBatch?.(report);
      say(`${report.cases}/${opts.cases} cases, ${report.casesPerSecond}/s, ${report.crashes} crashes, ${report.failures.length} failures`);
    }
  } finally {
    report.traces += countTraces(s.log);
    report.seconds = Math.round((Date.now() - started) / 1000);
    report.casesPerSecond = Math.round((10 * report.cases) / Math.max(1, (Date.now() - started) / 1000)) / 10;
    report.sendingSeconds = Math.round(report.sendingSeconds);
    await s.stop();
  }
  return report;
}

async function main() {
  const arg = (name: string, dflt: number) => {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 ? Number(process.argv[i + 1]) : dflt;
  };
  const out = process.argv.indexOf('--out');
  // With --out, the figures so far are rewritten after every batch (a long run can be read while it goes).
  const write = (rep: FuzzReport) => out >= 0 && writeFileSync(process.argv[out + 1], JSON.stringify({ ...rep, failures: rep.failures.slice(0, 50) }, null, 2));
  const report = await runFuzz({ cases: arg('cases', 1000), seed: arg('seed', 1), batch: arg('batch', 200), concurrency: arg('concurrency', 6), log: (l) => console.error(l), onBatch: write });
  write(report);
  console.log(JSON.stringify({ ...report, failures: report.failures.slice(0, 50) }, null, 2));
  const clean = report.crashes === 0 && report.fdGrowth <= 0 && report.failures.length === 0;
  process.exit(clean ? 0 : 1);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    console.error(err);
    process.exit(2);
  });
}
