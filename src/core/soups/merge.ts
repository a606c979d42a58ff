import { close as fsClose, open as fsOpen, read as fsRead } from 'node:fs';
import { decodeFloat32, encodeFromFloat32 } from '../checkpoint/dtype.js';
import { type CheckpointFormat, FileCheckpointReader } from '../checkpoint/file-reader.js';
import { safetensorsLayout } from '../checkpoint/safetensors.js';
import type { ByteSink } from '../checkpoint/tensor-writer.js';
import { TfjsWeightsWriter } from '../checkpoint/tfjs.js';
import { CoreInputError } from '../errors.js';
import { checkMaskFits, type Mask } from '../masks/mask.js';
import { compileRule, type PrunableRule } from '../pruning/prunable.js';
import { type CheckpointReader, DTYPE_BYTES, type DType, FLOAT_DTYPES, type TensorEntry } from '../tensors.js';
import { createMemory, jsKernels, type Kernels, TABLE_BYTES, type WasmMemory, wasmKernels, writeLaneTable } from './kernels.js';
import { compareLayouts, countDifferentElements, mismatchError } from './validate.js';
import { normalizeWeights } from './weights.js';

/**
 * The streamed weighted merge: the executor behind every linear soup (uniform, weighted, and the
 * sets greedy scores). It walks the checkpoint in groups of at most `chunkBytes` — a piece of a large
 * tensor, or several small tensors that lie back to back — and for each group reads the same bytes
 * from every candidate into a ring of reused buffers (reads run ahead on libuv's threads while the
 * main thread accumulates), accumulates w·x in float64, rounds once to float32 (then to F16/BF16
 * where stored so), re-applies the shared mask, and hands the group's bytes to the sink, which writes
 * while the next group is computed. Memory is a constant (about 10 × chunkBytes, in one
 * WebAssembly memory reused across merges), independent of tensor and model size.
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
/** Reads in flight plus the one being accumulated. */
const RING = 4;
/** Output buffers: one being written by the sink while the next is computed. */
const OUT_SLOTS = 2;
const PAD = 64;

/** TensorFlow.js weights have no header; constructing the format's writer refuses dtypes it cannot hold. */
function tfjsPrefix(tensors: readonly TensorEntry[]): Uint8Array {
  new TfjsWeightsWriter(tensors, async () => {});
  return new Uint8Array(0);
}

/** One piece of one tensor inside a group. */
interface Item {
  entry: TensorEntry;
  /** First element of the piece within its tensor (a multiple of 64). */
  start: number;
  n: number;
  float: boolean;
  elementBytes: number;
  /** Byte offset in the group as stored (and as written): the file layout. */
  rawOff: number;
  /** Byte offset in the group when a candidate hands over float32 (non-file readers). */
  f32Off: number;
  /** Element offset of the piece's accumulator (and its mask bits at accOff / 8). */
  accOff: number;
  /** Mask bits of the whole tensor (given mask), or 'derive' (first candidate's zeros), or null. */
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

const round8 = (n: number) => (n + 7) & ~7;
const round16 = (n: number) => (n + 15) & ~15;

/** Splits the tensors into pieces and packs consecutive pieces into groups of at most chunkBytes. */
function plan(entries: readonly TensorEntry[], chunkBytes: number, maskOf: (e: TensorEntry) => Item['mask']): Group[] {
  const floatsPerGroup = chunkBytes / 4;
  const groups: Group[] = [];
  let cur: Group | undefined;
  let f32Bytes = 0;
  let accElems = 0;
  let out = 0;
  for (const entry of entries) {
    const eb = DTYPE_BYTES[entry.dtype];
    const float = FLOAT_DTYPES.has(entry.dtype);
    const size = entry.byteLength / eb;
    // Float pieces fit the float32 staging and the float64 accumulator; F64 pieces their raw bytes.
    const per = float ? (eb === 8 ? floatsPerGroup / 2 : floatsPerGroup) : Math.floor(chunkBytes / eb / 64) * 64;
    const mask = float ? maskOf(entry) : null;
    for (let start = 0; start < size || (size === 0 && start === 0); start += per) {
      const n = Math.min(per, size - start);
      const raw = n * eb;
      const f32 = round16(float ? n * 4 : raw);
      const acc = float ? round8(n) : 0;
      if (!cur || cur.rawBytes + raw > chunkBytes || f32Bytes + f32 > chunkBytes || accElems + acc > floatsPerGroup) {
        cur = { items: [], outStart: out, rawBytes: 0 };
        groups.push(cur);
        f32Bytes = 0;
        accElems = 0;
      }
      cur.items.push({ entry, start, n, float, elementBytes: eb, rawOff: cur.rawBytes, f32Off: f32Bytes, accOff: accElems, mask, last: start + per >= size });
      cur.rawBytes += raw;
      f32Bytes += f32;
      accElems += acc;
      out += raw;
      if (size === 0) break;
    }
  }
  return groups;
}

/** One WebAssembly memory with the kernels and the merge's fixed buffers, reused across merges. */
class Engine {
  readonly memory: WasmMemory;
  readonly u8: Uint8Array;
  readonly kernels: Kernels;
  readonly simd: boolean;
  readonly ring: number[];
  readonly out: number[];
  readonly acc: number;
  readonly bits: number;
  readonly scratch: number;

  constructor(readonly chunkBytes: number) {
    const slot = chunkBytes + PAD;
    let p = TABLE_BYTES;
    const take = (bytes: number) => {
      const at = p;
      p += round16(bytes);
      return at;
    };
    this.ring = Array.from({ length: RING }, () => take(slot));
    this.out = Array.from({ length: OUT_SLOTS }, () => take(slot));
    this.acc = take((chunkBytes / 4) * 8 + PAD);
    this.bits = take(chunkBytes / 32 + PAD);
    this.scratch = take(slot);
    this.memory = createMemory(p + PAD);
    writeLaneTable(this.memory.buffer);
    this.u8 = new Uint8Array(this.memory.buffer);
    const wasm = wasmKernels(this.memory);
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

// First touch of fresh memory is slow here (STACK.md): keep a few engines for the next merge.
const idle: Engine[] = [];
const MAX_IDLE = 2;

function acquire(chunkBytes: number): Engine {
  const i = idle.findIndex((e) => e.chunkBytes === chunkBytes);
  return i >= 0 ? idle.splice(i, 1)[0] : new Engine(chunkBytes);
}

function release(e: Engine): void {
  if (idle.length < MAX_IDLE) idle.push(e);
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

const openFd = (path: string) => new Promise<number>((res, rej) => fsOpen(path, 'r', (e, fd) => (e ? rej(e) : res(fd))));
const closeFd = (fd: number) => new Promise<void>((res) => fsClose(fd, () => res()));

/** How one candidate hands over a group's bytes. */
interface Source {
  /** Puts the group's bytes (file layout, or float32 layout for non-file readers) at `at`. */
  read(g: Group, u8: Uint8Array, at: number): Promise<void>;
  /** True: slot holds stored bytes (rawOff); false: float32 for floats, raw for the rest (f32Off). */
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
    async read(g, u8, at) {
      if (packed) return g.rawBytes === 0 ? undefined : readAt(fd, u8, at, g.rawBytes, delta + g.outStart, reader.path);
      await Promise.all(
        g.items.filter((it) => it.n > 0).map((it) => {
          const e = byName.get(it.entry.name)!;
          return readAt(fd, u8, at + it.rawOff, it.n * it.elementBytes, e.byteOffset + it.start * it.elementBytes, reader.path);
        }),
      );
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
  // Reads run ahead concurrently, but this source's cache serves one group at a time.
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

/** Per-tensor state while its pieces pass. */
interface Pending {
  differing: number;
  candidate: number;
}

/**
 * Writes the weighted mean of the candidates to `sink` as one checkpoint with the first weighted
 * candidate's layout. `weights` are normalised (uniform soup: all equal); candidates with weight 0
 * are not read. Float tensors are averaged (F16/BF16/F32 as float32 values accumulated in float64,
 * written back in their dtype; F64 in float64); integer and bool tensors must be identical across the
 * weighted candidates and are copied. Layout differences or differing integer tensors throw the
 * validation's 422. Output atomicity is the sink's (give it an artifact writer and abort on error).
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
  const engine = acquire(chunkBytes);
  const { u8, kernels: k } = engine;
  const sources: Source[] = [];
  const reads: (Promise<void> | undefined)[] = new Array(RING);
  const writes: (Promise<void> | undefined)[] = new Array(OUT_SLOTS);
  let chain: Promise<void> = Promise.resolve();
  let bytesWritten = 0;
  const write = (bytes: Uint8Array): Promise<void> => {
    chain = chain.then(async () => {
      await sink(bytes);
      bytesWritten += bytes.byteLength;
    });
    chain.catch(() => {}); // observed by whoever awaits it; avoids an unhandled rejection meanwhile
    return chain;
  };

  try {
    for (const j of active) {
      const r = readers[j];
      sources.push(r instanceof FileCheckpointReader ? await fileSource(r, ref, groups) : readerSource(r));
    }
    if (header.byteLength > 0) write(header);

    const m = active.length;
    const total = groups.length * m;
    let issued = 0;
    const issue = () => {
      if (issued >= total) return;
      const u = issued++;
      const p = sources[u % m].read(groups[Math.floor(u / m)], u8, engine.ring[u % RING]);
      p.catch(() => {});
      reads[u % RING] = p;
    };
    for (let i = 0; i < RING; i++) issue();

    const pending = new Map<string, Pending>();
    for (let u = 0; u < total; u++) {
      opts.signal?.throwIfAborted();
      const gi = Math.floor(u / m);
      const c = u % m;
      const g = groups[gi];
      const slot = engine.ring[u % RING];
      const out = engine.out[gi % OUT_SLOTS];
      await reads[u % RING];
      if (c === 0) await writes[gi % OUT_SLOTS];
      accumulate(engine, k, g, slot, out, sources[c].stored, w[active[c]], c, pending, active[c]);
      issue();
      if (c === m - 1) {
        finish(engine, k, g, out);
        for (const it of g.items) {
          const p = pending.get(it.entry.name);
          if (it.last && p) {
            pending.delete(it.entry.name);
            if (p.differing > 0) {
              throw mismatchError([{ tensor: it.entry.name, kind: 'values', candidate: p.candidate, expected: it.entry.dtype, differing: p.differing }]);
            }
          }
        }
        if (g.rawBytes > 0) writes[gi % OUT_SLOTS] = write(new Uint8Array(engine.memory.buffer, out, g.rawBytes));
      }
    }
    await chain;
    const masked = new Set(groups.flatMap((g) => g.items.filter((it) => it.mask !== null).map((it) => it.entry.name)));
    return { bytesWritten, tensors: ref.length, maskedTensors: masked.size, maskSource: opts.mask ? 'given' : 'first-candidate', weights: w, simd: engine.simd };
  } finally {
    // Nothing may still write into the engine's memory when it goes back to the pool.
    await Promise.allSettled([...reads, chain]);
    await Promise.all(sources.map((s) => s.close()));
    release(engine);
  }
}

/** Adds candidate `c`'s bytes of group `g` (in `slot`) to the accumulators, or copies/compares raw tensors. */
function accumulate(e: Engine, k: Kernels, g: Group, slot: number, out: number, stored: boolean, weight: number, c: number, pending: Map<string, Pending>, candidate: number): void {
  const acc = e.acc;
  for (const it of g.items) {
    if (it.n === 0) continue;
    const n = it.n;
    const at = slot + (stored ? it.rawOff : it.f32Off);
    if (!it.float) {
      const bytes = n * it.elementBytes;
      if (c === 0) {
        e.u8.copyWithin(out + it.rawOff, at, at + bytes);
      } else {
        const differing = countDifferentElements(e.u8.subarray(at, at + bytes), e.u8.subarray(out + it.rawOff, out + it.rawOff + bytes), it.elementBytes);
        if (differing > 0) {
          const p = pending.get(it.entry.name) ?? { differing: 0, candidate };
          if (p.differing === 0) p.candidate = candidate;
          p.differing += differing;
          pending.set(it.entry.name, p);
        }
      }
      continue;
    }
    const a = acc + it.accOff * 8;
    const bits = e.bits + it.accOff / 8;
    if (stored && it.entry.dtype === 'F64') {
      accumulateF64(e, it, at, a, bits, weight, c === 0);
      continue;
    }
    let x = at;
    if (stored && it.entry.dtype !== 'F32') {
      decodeFloat32(it.entry.dtype, e.u8.subarray(at, at + n * it.elementBytes), e.f32(e.scratch, n));
      x = e.scratch;
    } else if (x % 4 !== 0) {
      // Unaligned float32 (after odd-sized tensors): the JS kernels need aligned views.
      e.u8.copyWithin(e.scratch, x, x + n * 4);
      x = e.scratch;
    }
    if (c === 0) {
      k.accSet(a, x, n, weight);
      if (it.mask === 'derive') k.impliedBits(bits, x, n);
    } else {
      k.accAdd(a, x, n, weight);
    }
  }
}

/** F64 stays float64 end to end (plain JS: rare dtype). */
function accumulateF64(e: Engine, it: Item, at: number, a: number, bits: number, weight: number, firstCandidate: boolean): void {
  const n = it.n;
  let x = at;
  if (x % 8 !== 0) {
    e.u8.copyWithin(e.scratch, x, x + n * 8);
    x = e.scratch;
  }
  const src = e.f64(x, n);
  const dst = e.f64(a, n);
  if (firstCandidate) {
    for (let i = 0; i < n; i++) dst[i] = weight * src[i];
    if (it.mask === 'derive') {
      const b = e.u8;
      b.fill(0, bits, bits + ((n + 7) >> 3));
      for (let i = 0; i < n; i++) if (!(src[i] === 0)) b[bits + (i >> 3)] |= 1 << (i & 7);
    }
  } else {
    for (let i = 0; i < n; i++) dst[i] = dst[i] + weight * src[i];
  }
}

/** Rounds the group's accumulators into `out` in the stored dtypes, pruned positions as +0. */
function finish(e: Engine, k: Kernels, g: Group, out: number): void {
  for (const it of g.items) {
    if (!it.float || it.n === 0) continue;
    const n = it.n;
    const a = e.acc + it.accOff * 8;
    const bits = e.bits + it.accOff / 8;
    if (it.mask instanceof Uint8Array) {
      // Mask bits of this piece: it starts at a multiple of 64 elements, so on a byte boundary.
      const from = it.start >> 3;
      e.u8.set(it.mask.subarray(from, from + ((n + 7) >> 3)), bits);
    }
    const masked = it.mask !== null;
    const o = out + it.rawOff;
    const dtype: DType = it.entry.dtype;
    if (dtype === 'F64') {
      const src = e.f64(a, n);
      const dst = e.f64(e.scratch, n);
      for (let i = 0; i < n; i++) dst[i] = masked && ((e.u8[bits + (i >> 3)] >> (i & 7)) & 1) === 0 ? 0 : src[i];
      e.u8.copyWithin(o, e.scratch, e.scratch + n * 8);
      continue;
    }
    const direct = dtype === 'F32' && o % 4 === 0;
    const target = direct ? o : e.scratch;
    if (masked) k.finishMasked(target, a, n, bits);
    else k.finish(target, a, n);
    if (direct) continue;
    if (dtype === 'F32') e.u8.copyWithin(o, e.scratch, e.scratch + n * 4);
    else encodeFromFloat32(dtype, e.f32(e.scratch, n), e.u8.subarray(o, o + n * it.elementBytes));
  }
}
