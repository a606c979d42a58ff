import { close as fsClose, open as fsOpen, read as fsRead, readSync as fsReadSync } from 'node:fs';
import { decodeFloat32, encodeFromFloat32 } from '../checkpoint/dtype.js';
import { type CheckpointFormat, FileCheckpointReader } from '../checkpoint/file-reader.js';
import { safetensorsLayout } from '../checkpoint/safetensors.js';
import type { ByteSink } from '../checkpoint/tensor-writer.js';
import { TfjsWeightsWriter } from '../checkpoint/tfjs.js';
import { CoreInputError } from '../errors.js';
import { checkMaskFits, type Mask } from '../masks/mask.js';
import { compileRule, type PrunableRule } from '../pruning/prunable.js';
import { type CheckpointReader, DTYPE_BYTES, FLOAT_DTYPES, type TensorEntry } from '../tensors.js';
import { createMemory, jsKernels, type Kernels, TABLE_BYTES, TABLE_ENTRY_BYTES, wasmKernels, writeLaneTable } from './kernels.js';
import type { WasmMemory } from '../wasm-bytes.js';
import { compareLayouts, countDifferentElements, mismatchError } from './validate.js';
import { normalizeWeights } from './weights.js';

/**
 * The streamed weighted merge: the executor behind every linear soup (uniform, weighted, and the
 * sets greedy scores). It walks the checkpoint in groups of at most `chunkBytes` — a piece of a large
 * tensor, or several small tensors that lie back to back — reads the group's bytes from every
 * candidate into reused buffers (one large positioned read per candidate), computes each float
 * element's weighted sum in float64 in one fused SIMD pass, rounds once to float32 (then to F16/BF16
 * where stored so), writes pruned positions as +0, and appends the group's bytes to an output buffer
 * that the sink gets whole (4 groups) and writes while the next groups are read and computed. Memory
 * is a constant, about (m + 11) × chunkBytes
 * in one WebAssembly memory reused across merges, independent of tensor and model size.
 */

export interface MergeOptions {
  /** Output layout; defaults to the first weighted candidate's format (file readers know theirs). */
  format?: CheckpointFormat;
  /** safetensors `__metadata__`; defaults to the first weighted candidate's metadata. */
  metadata?: Record<string, string>;
  /** The shared mask (e.g. `validateCandidates(...).mask`): its tensors' pruned positions are written as +0. */
  mask?: Mask;
  /**
   * Without `mask`: tensors prunable under this rule (the default rule when absent) get the first
   * weighted candidate's exact-zero pattern, which is the shared mask once candidates are validated.
   */
  rule?: PrunableRule;
  signal?: AbortSignal;
  /** Bytes per read and per sink chunk (default 1 MiB; rounded to a multiple of 256, at least 4 KiB). */
  chunkBytes?: number;
  /**
   * How files are read. 'sync' (default): positioned reads on the calling thread, yielding to the
   * event loop every few milliseconds; cheapest in CPU, and fastest where cores are few or busy.
   * 'async': libuv's pool reads the next group while this one is computed (2m buffers); gains
   * only with idle cores to spare. Readers that are not files are always read through their API.
   */
  io?: 'sync' | 'async';
  /** false: the plain JS kernels even where WebAssembly SIMD exists (slower; for tests and comparisons). */
  simd?: boolean;
}

export interface MergeResult {
  bytesWritten: number;
  /** Tensors written. */
  tensors: number;
  /** Tensors whose pruned positions were re-applied. */
  maskedTensors: number;
  maskSource: 'given' | 'first-candidate';
  /** The normalised weights used (zero-weight candidates were not read). */
  weights: number[];
  /** Whether the WebAssembly SIMD kernels ran (false: the plain JS fallback). */
  simd: boolean;
}

const DEFAULT_CHUNK_BYTES = 1 << 20;
/** Output buffers: one being written by the sink while the next is filled. */
const OUT_SLOTS = 2;
/** Groups per output buffer: fewer, larger sink calls (each async write costs a thread hand-off). */
const OUT_GROUPS = 4;
const PAD = 64;
/** In 'sync' mode, the longest stretch without yielding to the event loop. */
const YIELD_MS = 10;

/** One piece of one tensor inside a group. */
interface Item {
  entry: TensorEntry;
  /** First element of the piece within its tensor (a multiple of 64, so mask bits start on a byte). */
  start: number;
  n: number;
  float: boolean;
  elementBytes: number;
  /** Byte offset in the group as stored (and as written): the file layout. */
  rawOff: number;
  /** Byte offset in the group when a candidate hands over float32 (non-file readers). */
  f32Off: number;
  /** Mask bits of the whole tensor (given mask), 'derive' (first candidate's zeros), or null. */
  mask: Uint8Array | 'derive' | null;
  /** Last piece of its tensor. */
  last: boolean;
}

interface Group {
  items: Item[];
  /** Start of the group in the output data (after any header). */
  outStart: number;
  rawBytes: number;
}

const round16 = (n: number) => (n + 15) & ~15;

/** Splits the tensors into pieces and packs consecutive pieces into groups of at most chunkBytes. */
function plan(entries: readonly TensorEntry[], chunkBytes: number, maskOf: (e: TensorEntry) => Item['mask']): Group[] {
  const floatsPerPiece = chunkBytes / 4;
  const groups: Group[] = [];
  let cur: Group | undefined;
  let f32Bytes = 0;
  let out = 0;
  for (const entry of entries) {
    const eb = DTYPE_BYTES[entry.dtype];
    const float = FLOAT_DTYPES.has(entry.dtype);
    const size = entry.byteLength / eb;
    // Float pieces fit the float32 staging and float64 scratch; other pieces their raw bytes.
    const per = float ? (eb === 8 ? floatsPerPiece / 2 : floatsPerPiece) : Math.floor(chunkBytes / eb / 64) * 64;
    const mask = float ? maskOf(entry) : null;
    for (let start = 0; start === 0 || start < size; start += per) {
      const n = Math.min(per, size - start);
      const raw = n * eb;
      const f32 = round16(float ? n * 4 : raw);
      if (!cur || cur.rawBytes + raw > chunkBytes || f32Bytes + f32 > chunkBytes) {
        cur = { items: [], outStart: out, rawBytes: 0 };
        groups.push(cur);
        f32Bytes = 0;
      }
      cur.items.push({ entry, start, n, float, elementBytes: eb, rawOff: cur.rawBytes, f32Off: f32Bytes, mask, last: start + per >= size });
      cur.rawBytes += raw;
      f32Bytes += f32;
      out += raw;
    }
  }
  return groups;
}

/** One WebAssembly memory with the kernels and the merge's buffers, reused across merges. */
class Engine {
  readonly memory: WasmMemory;
  readonly u8: Uint8Array;
  readonly kernels: Kernels;
  readonly simd: boolean;
  /** Input buffers: `slots` of chunkBytes (m per group in flight). */
  readonly slots: number[];
  readonly out: number[];
  readonly acc: number;
  readonly bits: number;
  readonly scratch: number;
  readonly table: number;

  constructor(
    readonly chunkBytes: number,
    slotCount: number,
    allowSimd: boolean,
  ) {
    const slot = chunkBytes + PAD;
    let p = TABLE_BYTES;
    const take = (bytes: number) => {
      const at = p;
      p += round16(bytes);
      return at;
    };
    this.table = take(slotCount * TABLE_ENTRY_BYTES);
    this.slots = Array.from({ length: slotCount }, () => take(slot));
    this.out = Array.from({ length: OUT_SLOTS }, () => take(OUT_GROUPS * chunkBytes + PAD));
    this.acc = take((chunkBytes / 4) * 8 + PAD);
    this.bits = take(chunkBytes / 32 + PAD);
    this.scratch = take(slot);
    this.memory = createMemory(p + PAD);
    writeLaneTable(this.memory.buffer);
    this.u8 = new Uint8Array(this.memory.buffer);
    const wasm = allowSimd ? wasmKernels(this.memory) : null;
    this.simd = wasm !== null;
    this.kernels = wasm ?? jsKernels(() => this.memory.buffer);
  }

  f32(p: number, n: number): Float32Array {
    return new Float32Array(this.memory.buffer, p, n);
  }

  f64(p: number, n: number): Float64Array {
    return new Float64Array(this.memory.buffer, p, n);
  }
}

// First touch of fresh memory is slow (about 15 µs a 4 KiB page on the machines measured): keep a few engines for the next merge.
const idle: Engine[] = [];
const MAX_IDLE = 2;

function acquire(chunkBytes: number, slots: number, simd: boolean): Engine {
  const i = idle.findIndex((e) => e.chunkBytes === chunkBytes && e.slots.length >= slots && (simd || !e.simd));
  return i >= 0 ? idle.splice(i, 1)[0] : new Engine(chunkBytes, slots, simd);
}

function release(e: Engine): void {
  idle.push(e);
  // Keep the largest ones: they serve every smaller request too.
  idle.sort((a, b) => b.slots.length - a.slots.length);
  idle.length = Math.min(idle.length, MAX_IDLE);
}

/** Drops the kept merge buffers (a worker that merges rarely can give the memory back). */
export function releaseMergeMemory(): void {
  idle.length = 0;
}

function readAt(fd: number, u8: Uint8Array, at: number, length: number, position: number, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (done: number) => {
      if (done === length) return resolve();
      fsRead(fd, u8, at + done, length - done, position + done, (err, bytesRead) => {
        if (err) return reject(err);
        if (bytesRead === 0) return reject(new Error(`${path} ended while reading bytes ${position}..${position + length}`));
        step(done + bytesRead);
      });
    };
    step(0);
  });
}

function readAtSync(fd: number, u8: Uint8Array, at: number, length: number, position: number, path: string): void {
  for (let done = 0; done < length; ) {
    const n = fsReadSync(fd, u8, at + done, length - done, position + done);
    if (n === 0) throw new Error(`${path} ended while reading bytes ${position}..${position + length}`);
    done += n;
  }
}

const openFd = (path: string) => new Promise<number>((res, rej) => fsOpen(path, 'r', (e, fd) => (e ? rej(e) : res(fd))));
const closeFd = (fd: number) => new Promise<void>((res) => fsClose(fd, () => res()));

/** How one candidate hands over a group's bytes. */
interface Source {
  /**
   * Puts the group's bytes at `at`: the file layout (rawOff) when `stored`, else float32 for float
   * tensors and raw bytes for the rest (f32Off). Returns undefined when done synchronously.
   */
  read(g: Group, u8: Uint8Array, at: number, sync: boolean): Promise<void> | undefined;
  readonly stored: boolean;
  close(): Promise<void>;
}

async function fileSource(reader: FileCheckpointReader, ref: readonly TensorEntry[], groups: readonly Group[]): Promise<Source> {
  const fd = await openFd(reader.path);
  const byName = new Map(reader.tensors.map((e) => [e.name, e]));
  // Where this file holds each reference tensor, relative to the output data layout. Constant
  // (files packed in the same order) → one read per group; otherwise one read per piece.
  const outOffset = new Map<string, number>();
  for (const g of groups) for (const it of g.items) if (it.start === 0) outOffset.set(it.entry.name, g.outStart + it.rawOff);
  const deltas = new Set(ref.filter((e) => e.byteLength > 0).map((e) => byName.get(e.name)!.byteOffset - outOffset.get(e.name)!));
  const packed = deltas.size <= 1;
  const delta = packed ? ([...deltas][0] ?? 0) : 0;
  return {
    stored: true,
    read(g, u8, at, sync) {
      const spans = packed
        ? [{ at, length: g.rawBytes, position: delta + g.outStart }]
        : g.items.map((it) => ({ at: at + it.rawOff, length: it.n * it.elementBytes, position: byName.get(it.entry.name)!.byteOffset + it.start * it.elementBytes }));
      const todo = spans.filter((s) => s.length > 0);
      if (sync) {
        for (const s of todo) readAtSync(fd, u8, s.at, s.length, s.position, reader.path);
        return undefined;
      }
      return Promise.all(todo.map((s) => readAt(fd, u8, s.at, s.length, s.position, reader.path))).then(() => {});
    },
    close: () => closeFd(fd),
  };
}

/** Any other reader (MemoryCheckpoint, sparse exports): whole tensors through its own API, cached. */
function readerSource(reader: CheckpointReader): Source {
  let name: string | undefined;
  let floats: Float32Array | undefined;
  let raw: Uint8Array | undefined;
  let current: Float32Array | Uint8Array | undefined;
  // Reads may run ahead, but this source's cache serves one group at a time.
  let queue: Promise<void> = Promise.resolve();
  const readGroup = async (g: Group, u8: Uint8Array, at: number) => {
    for (const it of g.items) {
      if (it.n === 0) continue;
      if (name !== it.entry.name) {
        name = undefined;
        if (it.float) {
          current = await reader.readFloat32(it.entry.name, floats);
          if (!floats || current.length > floats.length) floats = current;
        } else {
          current = await reader.readRaw(it.entry.name, raw);
          if (!raw || current.byteLength > raw.byteLength) raw = current;
        }
        name = it.entry.name;
      }
      const src = it.float
        ? new Uint8Array((current as Float32Array).buffer, (current as Float32Array).byteOffset + it.start * 4, it.n * 4)
        : (current as Uint8Array).subarray(it.start * it.elementBytes, (it.start + it.n) * it.elementBytes);
      u8.set(src, at + it.f32Off);
    }
  };
  return {
    stored: false,
    read(g, u8, at) {
      const p = queue.then(() => readGroup(g, u8, at));
      queue = p.catch(() => {});
      return p;
    },
    close: async () => {},
  };
}

/** TensorFlow.js weights have no header; constructing the format's writer refuses dtypes it cannot hold. */
function tfjsPrefix(tensors: readonly TensorEntry[]): Uint8Array {
  new TfjsWeightsWriter(tensors, async () => {});
  return new Uint8Array(0);
}

/** Integer/bool elements that differ from the first candidate, per tensor, while its pieces pass. */
type Differences = Map<string, { differing: number; candidate: number }>;

/**
 * Writes the weighted mean of the candidates to `sink` as one checkpoint with the first weighted
 * candidate's layout. `weights` are normalised (absent: uniform); candidates with weight 0 are not
 * read. Float tensors are averaged (F16/BF16/F32 as float32 values with float64 sums, written back
 * in their dtype; F64 in float64); integer and bool tensors must be identical across the weighted
 * candidates and are copied. Layout differences or differing integer tensors throw the validation's
 * 422. Output atomicity is the sink's (give it an artifact writer and abort it on error).
 */
export async function mergeCheckpoints(readers: readonly CheckpointReader[], weights: readonly number[] | null | undefined, sink: ByteSink, opts: MergeOptions = {}): Promise<MergeResult> {
  const w = normalizeWeights(readers.length, weights);
  const active = w.map((x, i) => (x > 0 ? i : -1)).filter((i) => i >= 0);
  const first = readers[active[0]];
  const ref = first.tensors;
  const layout = active.slice(1).flatMap((j) => compareLayouts(ref, readers[j].tensors, j));
  if (layout.length > 0) throw mismatchError(layout);

  const own = first as Partial<{ format: CheckpointFormat; metadata: Record<string, string> }>;
  const format = opts.format ?? own.format;
  if (!format) throw new Error('mergeCheckpoints: say which format to write (safetensors or tfjs-weights)');
  const header = format === 'safetensors' ? safetensorsLayout(ref, opts.metadata ?? own.metadata ?? {}).header : tfjsPrefix(ref);

  let maskOf: (e: TensorEntry) => Item['mask'];
  if (opts.mask) {
    checkMaskFits(opts.mask, ref);
    const bits = new Map(opts.mask.tensors.map((t) => [t.name, t.bits]));
    for (const e of ref) {
      if (bits.has(e.name) && !FLOAT_DTYPES.has(e.dtype)) {
        throw new CoreInputError('mask-mismatch', `the mask covers ${e.name}, which is ${e.dtype}: only float tensors can be pruned`, { tensor: e.name }, 422);
      }
    }
    maskOf = (e) => bits.get(e.name) ?? null;
  } else {
    const prunable = compileRule(opts.rule);
    maskOf = (e) => (prunable(e) ? 'derive' : null);
  }

  const chunkBytes = Math.max(4096, Math.floor((opts.chunkBytes ?? DEFAULT_CHUNK_BYTES) / 256) * 256);
  const groups = plan(ref, chunkBytes, maskOf);
  const m = active.length;
  const sync = (opts.io ?? 'sync') === 'sync';
  const sets = sync ? 1 : 2;
  const engine = acquire(chunkBytes, sets * m, opts.simd ?? true);
  const sources: Source[] = [];
  const writes: (Promise<void> | undefined)[] = new Array(OUT_SLOTS);
  let chain: Promise<void> = Promise.resolve();
  let ahead: Promise<void> | undefined;
  let bytesWritten = 0;
  const write = (bytes: Uint8Array): Promise<void> => {
    chain = chain.then(async () => {
      await sink(bytes);
      bytesWritten += bytes.byteLength;
    });
    chain.catch(() => {}); // observed by whoever awaits it; avoids an unhandled rejection meanwhile
    return chain;
  };
  const slotsOf = (gi: number) => engine.slots.slice((gi % sets) * m, (gi % sets) * m + m);
  const readGroup = (gi: number): Promise<void> | undefined => {
    const slots = slotsOf(gi);
    const pending = sources.map((s, c) => s.read(groups[gi], engine.u8, slots[c], sync)).filter((p) => p !== undefined);
    if (pending.length === 0) return undefined;
    const all = Promise.all(pending).then(() => {});
    all.catch(() => {});
    return all;
  };

  try {
    for (const j of active) {
      const r = readers[j];
      sources.push(r instanceof FileCheckpointReader ? await fileSource(r, ref, groups) : readerSource(r));
    }
    const stored = sources.map((s) => s.stored);
    const weightsOfActive = active.map((j) => w[j]);
    if (header.byteLength > 0) write(header);
    const differences: Differences = new Map();
    let lastYield = performance.now();
    // Groups are appended to output buffer `slot` until it is full; then the sink gets it whole.
    let slot = 0;
    let fill = 0;
    const flush = () => {
      if (fill > 0) writes[slot] = write(new Uint8Array(engine.memory.buffer, engine.out[slot], fill));
      slot = (slot + 1) % OUT_SLOTS;
      fill = 0;
    };
    if (!sync && groups.length > 0) ahead = readGroup(0);
    for (let gi = 0; gi < groups.length; gi++) {
      opts.signal?.throwIfAborted();
      const current = sync ? readGroup(gi) : ahead;
      if (current) await current;
      if (!sync) ahead = gi + 1 < groups.length ? readGroup(gi + 1) : undefined;
      const g = groups[gi];
      if (fill + g.rawBytes > OUT_GROUPS * chunkBytes) flush();
      await writes[slot];
      mergeGroup(engine, g, slotsOf(gi), stored, weightsOfActive, engine.out[slot] + fill, differences, active);
      fill += g.rawBytes;
      for (const it of g.items) {
        const d = it.last ? differences.get(it.entry.name) : undefined;
        if (d) throw mismatchError([{ tensor: it.entry.name, kind: 'values', candidate: d.candidate, expected: it.entry.dtype, differing: d.differing }]);
      }
      if (sync && performance.now() - lastYield > YIELD_MS) {
        await new Promise((resolve) => setImmediate(resolve));
        lastYield = performance.now();
      }
    }
    flush();
    await chain;
    const masked = new Set(groups.flatMap((g) => g.items.filter((it) => it.mask !== null).map((it) => it.entry.name)));
    return { bytesWritten, tensors: ref.length, maskedTensors: masked.size, maskSource: opts.mask ? 'given' : 'first-candidate', weights: w, simd: engine.simd };
  } finally {
    // Nothing may still write into the engine's memory when it goes back to the pool.
    await Promise.allSettled([ahead, chain]);
    await Promise.all(sources.map((s) => s.close()));
    release(engine);
  }
}

/** Merges one group whose bytes from each candidate c are at `slots[c]` into `out` (stored layout). */
function mergeGroup(e: Engine, g: Group, slots: readonly number[], stored: readonly boolean[], weights: readonly number[], out: number, differences: Differences, active: readonly number[]): void {
  const k = e.kernels;
  const m = slots.length;
  for (const it of g.items) {
    const n = it.n;
    if (n === 0) continue;
    const at = (c: number) => slots[c] + (stored[c] ? it.rawOff : it.f32Off);
    const o = out + it.rawOff;
    if (!it.float) {
      const bytes = n * it.elementBytes;
      e.u8.copyWithin(o, at(0), at(0) + bytes);
      for (let c = 1; c < m; c++) {
        const differing = countDifferentElements(e.u8.subarray(at(c), at(c) + bytes), e.u8.subarray(o, o + bytes), it.elementBytes);
        if (differing === 0) continue;
        const d = differences.get(it.entry.name) ?? { differing: 0, candidate: active[c] };
        d.differing += differing;
        differences.set(it.entry.name, d);
      }
      continue;
    }
    const dtype = it.entry.dtype;
    const bits = e.bits;
    if (it.mask instanceof Uint8Array) {
      // This piece's mask bits: it starts at a multiple of 64 elements, so on a byte boundary.
      const from = it.start >> 3;
      e.u8.set(it.mask.subarray(from, from + ((n + 7) >> 3)), bits);
    }
    if (dtype === 'F64' && stored.some(Boolean)) {
      mergeF64(e, it, at, stored, weights, o, bits);
      continue;
    }
    const masked = it.mask !== null;
    const direct = dtype === 'F32' && o % 4 === 0;
    const target = direct ? o : e.scratch;
    // float32 inputs in place (aligned, or any alignment for the SIMD kernels): one fused pass.
    const inPlace = (c: number) => !stored[c] || (dtype === 'F32' && (e.simd || at(c) % 4 === 0));
    if (slots.every((_, c) => inPlace(c))) {
      const table = new DataView(e.memory.buffer, e.table, m * TABLE_ENTRY_BYTES);
      for (let c = 0; c < m; c++) {
        table.setInt32(c * TABLE_ENTRY_BYTES, at(c), true);
        table.setFloat64(c * TABLE_ENTRY_BYTES + 8, weights[c], true);
      }
      if (it.mask === 'derive') k.meanDerived(target, e.table, m, n);
      else if (masked) k.meanMasked(target, e.table, m, n, bits);
      else k.mean(target, e.table, m, n);
    } else {
      // F16/BF16 (or unaligned float32 without SIMD): decode each candidate, accumulate in float64.
      for (let c = 0; c < m; c++) {
        let x = at(c);
        if (!inPlace(c)) {
          if (dtype === 'F32') e.u8.copyWithin(e.scratch, x, x + n * 4);
          else decodeFloat32(dtype, e.u8.subarray(x, x + n * it.elementBytes), e.f32(e.scratch, n));
          x = e.scratch;
        }
        if (c === 0) {
          k.accSet(e.acc, x, n, weights[c]);
          if (it.mask === 'derive') k.impliedBits(bits, x, n);
        } else {
          k.accAdd(e.acc, x, n, weights[c]);
        }
      }
      if (masked) k.finishMasked(target, e.acc, n, bits);
      else k.finish(target, e.acc, n);
    }
    if (direct) continue;
    if (dtype === 'F32') e.u8.copyWithin(o, e.scratch, e.scratch + n * 4);
    else encodeFromFloat32(dtype, e.f32(e.scratch, n), e.u8.subarray(o, o + n * it.elementBytes));
  }
}

/**
 * F64 stays float64 end to end (plain JS: a rare dtype). With no wider type to sum in, the mean is
 * taken as x₀ + Σⱼ wⱼ·(xⱼ − x₀): identical candidates give x₀ exactly (Σ wⱼ·x₀ need not), and the
 * differences of close candidates are exact. Non-file candidates hand over float32.
 */
function mergeF64(e: Engine, it: Item, at: (c: number) => number, stored: readonly boolean[], weights: readonly number[], o: number, bits: number): void {
  const n = it.n;
  const views = stored.map((s, c) => (s ? new DataView(e.memory.buffer, at(c), n * 8) : e.f32(at(c), n)));
  const value = (c: number, i: number) => {
    const v = views[c];
    return v instanceof DataView ? v.getFloat64(i * 8, true) : v[i];
  };
  const corr = e.f64(e.acc, n).fill(0);
  for (let c = 1; c < stored.length; c++) {
    const wc = weights[c];
    for (let i = 0; i < n; i++) corr[i] = corr[i] + wc * (value(c, i) - value(0, i));
  }
  const result = new DataView(e.memory.buffer, o, n * 8);
  for (let i = 0; i < n; i++) {
    const x0 = value(0, i);
    const pruned = it.mask === 'derive' ? x0 === 0 : it.mask !== null && ((e.u8[bits + (i >> 3)] >> (i & 7)) & 1) === 0;
    result.setFloat64(i * 8, pruned ? 0 : x0 + corr[i], true);
  }
}
