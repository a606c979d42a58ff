import { CoreInputError } from '../errors.js';
import { allocateMask, fillKept, type Mask, sameShape, type TensorMask, wordsOf } from '../masks/mask.js';
import { checkSeed, Xoshiro128 } from '../random.js';
import type { CheckpointReader, TensorEntry } from '../tensors.js';
import { type PrunableRule, selectPrunable } from './prunable.js';
import {
  buildWords,
  countWords,
  findBucket,
  HIGH_BUCKETS,
  histHigh,
  histLowIn,
  keyToFloat,
  LOW_BUCKETS,
  thresholdOf,
  u32View,
} from './select.js';

/**
 * Selection methods. Each reads the prunable tensors one at a time through a CheckpointReader
 * (memory: the largest prunable tensor plus small buffers) and returns a mask, leaving the weights
 * alone: apply the mask with `applyMask` while writing the pruned model.
 *
 * Counts: `magnitude-global` and `random` prune exactly `round(s · N)` weights (`Math.round`, N =
 * prunable weights); `magnitude-layerwise` prunes exactly `round(s · n_t)` in every tensor.
 * Weights already zero are the smallest magnitudes, so they are pruned first and count toward the
 * target (`random` prunes them first too): pruning a pruned model to a higher sparsity is one IMP
 * step, and every zero stays zero. If a model already has more zeros than the target, the mask
 * prunes exactly the target (earliest zeros first, by the tie rule) and the other zeros are kept
 * positions that happen to be zero.
 */
export type PruneMethod = 'magnitude-global' | 'magnitude-layerwise' | 'random' | 'n-of-m';

/**
 * Kernel layouts, which fix the N:M input axis: `tfjs` kernels are [in, out] (dense) and
 * [kh, kw, in, out] (conv), input axis = rank − 2; `torch` (PyTorch / safetensors) kernels are
 * [out, in] and [out, in, kh, kw], input axis = 1. A rank-1 tensor (only when an include pattern
 * selects one) uses axis 0.
 */
export type KernelLayout = 'tfjs' | 'torch';

export interface PruneOptions {
  method: PruneMethod;
  /** Fraction of prunable weights to prune, in [0, 1). Required except for `n-of-m`. */
  sparsity?: number;
  /** `random`: non-negative safe integer seed (default 0). */
  seed?: number;
  /** `n-of-m`: keep `n` of every `m` consecutive weights along the input axis (1 ≤ n ≤ m ≤ 256). */
  n?: number;
  m?: number;
  /** `n-of-m`: required. */
  layout?: KernelLayout;
  rule?: PrunableRule;
  /** Reused scratch buffers (hot paths, benchmarks). Not shared between concurrent calls. */
  buffers?: PruneBuffers;
  /**
   * Write the result into this mask instead of a new one (same prunable tensors, as returned by an
   * earlier prune of the same architecture): skips the first touch of fresh memory. Its previous
   * contents are lost.
   */
  into?: Mask;
}

export interface PruneStats {
  method: PruneMethod;
  prunableTensors: number;
  prunableWeights: number;
  /** Weights the mask prunes. */
  pruned: number;
  /** pruned / prunableWeights. */
  sparsity: number;
  /** `magnitude-global`: largest pruned |w| (weights with |w| = threshold are split by the tie rule). */
  threshold?: number;
  /** `magnitude-global`: weights with |w| exactly the threshold that were pruned. */
  prunedAtThreshold?: number;
  /**
   * `magnitude-global`: which path found the threshold (all give the same mask): `window` (sampled
   * window, 2 reads), `bucket` (histogram + bucket collection), `histogram` (3-read exact path).
   */
  path?: 'window' | 'bucket' | 'histogram';
}

export interface PruneResult {
  mask: Mask;
  stats: PruneStats;
}

/** Scratch memory for pruning, reused across calls to avoid first-touch costs. */
export class PruneBuffers {
  scratch = new Float32Array(0);
  readonly hi = new Uint32Array(HIGH_BUCKETS);
  readonly lo = new Uint32Array(LOW_BUCKETS);
  candIndex = new Uint32Array(0);
  candKey = new Uint32Array(0);
  sample = new Uint32Array(0);

  growCandidates(n: number): void {
    const index = new Uint32Array(n);
    const key = new Uint32Array(n);
    index.set(this.candIndex);
    key.set(this.candKey);
    this.candIndex = index;
    this.candKey = key;
  }

  /** A scratch tensor buffer of at least n floats. */
  floats(n: number): Float32Array {
    if (this.scratch.length < n) this.scratch = new Float32Array(n);
    return this.scratch;
  }
}

export function checkSparsity(s: unknown): number {
  if (typeof s !== 'number' || !Number.isFinite(s) || s < 0 || s >= 1) {
    throw new CoreInputError('invalid-sparsity', `sparsity must be a number in [0, 1), got ${String(s)}`, { sparsity: s ?? null }, 422);
  }
  return s;
}

/** Prunes the prunable tensors of `reader` by `options.method`. */
export async function prune(reader: CheckpointReader, options: PruneOptions): Promise<PruneResult> {
  const entries = selectPrunable(reader.tensors, options.rule);
  const buffers = options.buffers ?? new PruneBuffers();
  switch (options.method) {
    case 'magnitude-global':
      return magnitudeGlobal(reader, entries, checkSparsity(options.sparsity), buffers, options.into);
    case 'magnitude-layerwise':
      return magnitudeLayerwise(reader, entries, checkSparsity(options.sparsity), buffers, options.into);
    case 'random':
      return randomPrune(reader, entries, checkSparsity(options.sparsity), checkSeed(options.seed ?? 0), buffers, options.into);
    case 'n-of-m':
      return nOfM(reader, entries, options, buffers, options.into);
    default:
      throw new CoreInputError('unknown-method', `unknown pruning method ${JSON.stringify(options.method)}`, { method: options.method }, 422);
  }
}

function total(entries: readonly TensorEntry[]): number {
  let n = 0;
  for (const e of entries) n += size(e);
  return n;
}

function size(e: Pick<TensorEntry, 'shape'>): number {
  return e.shape.reduce((a, b) => a * b, 1);
}

function maxSize(entries: readonly TensorEntry[]): number {
  let n = 0;
  for (const e of entries) n = Math.max(n, size(e));
  return n;
}

async function read(reader: CheckpointReader, e: TensorEntry, buffers: PruneBuffers): Promise<Uint32Array> {
  const f = await reader.readFloat32(e.name, buffers.floats(size(e)));
  if (f.length !== size(e)) throw new Error(`reader returned ${f.length} values for ${e.name}, expected ${size(e)}`);
  return u32View(f);
}

/**
 * A fresh mask for `entries`, or `into` cleared for reuse (same tensor names and shapes in the same
 * order, word-aligned as `allocateMask` makes them): reuse skips the first-touch cost of new memory.
 */
function maskFor(entries: readonly TensorEntry[], into?: Mask): Mask {
  if (!into) return allocateMask(entries);
  if (into.tensors.length !== entries.length || !into.tensors.every((t, i) => t.name === entries[i].name && sameShape(t.shape, entries[i].shape) && wordsOf(t))) {
    throw new Error('`into` mask does not match the prunable tensors');
  }
  for (const t of into.tensors) {
    t.bits.fill(0);
    t.kept = 0;
  }
  return into;
}

function words(tm: TensorMask): Uint32Array {
  const w = wordsOf(tm);
  if (!w) throw new Error('mask not word-aligned');
  return w;
}

function stats(method: PruneMethod, entries: readonly TensorEntry[], mask: Mask, extra: Partial<PruneStats> = {}): PruneStats {
  const n = total(entries);
  let kept = 0;
  for (const t of mask.tensors) kept += t.kept;
  return { method, prunableTensors: entries.length, prunableWeights: n, pruned: n - kept, sparsity: n === 0 ? 0 : (n - kept) / n, ...extra };
}

/**
 * One L1 threshold over all prunable tensors (the SMS default), exactly round(s · N) pruned.
 *
 * Fast path (two reads of every tensor, one full compute pass): pass 1 samples about one key in
 * 64 (pseudo-random strides, so no alignment with kernel shapes) and takes a key window around
 * the target rank with a 6σ margin; pass 2 writes the mask of every weight outside the window
 * and collects the window's members (index, key), then the exact threshold is selected among
 * them (radix select) and their bits set by the tie rule. The window is checked exactly (weights
 * below it < k ≤ below + members); when the check fails, or the members would exceed the
 * candidate cap (many equal weights, e.g. a model already at the target sparsity), the exact path
 * runs instead: a full 15-bit histogram pass, then the same collection restricted to the
 * threshold's bucket, or (bucket over the cap) a low-bits histogram pass and a build pass.
 * Every path gives the same mask. Memory: the largest tensor, 384 KiB of histograms, a sample of
 * N/64 keys and the candidates (8 bytes each, capped at the largest tensor's size).
 * `tuning` (tests, benchmarks) forces the exact paths: `sample: false` skips the window,
 * `candidateCap` lowers the cap.
 */
export async function magnitudeGlobal(
  reader: CheckpointReader,
  entries: readonly TensorEntry[],
  sparsity: number,
  buffers = new PruneBuffers(),
  into?: Mask,
  tuning: { sample?: boolean; candidateCap?: number } = {},
): Promise<PruneResult> {
  const candidateCap = tuning.candidateCap ?? Math.max(1 << 16, maxSize(entries));
  const n = total(entries);
  const k = Math.round(sparsity * n);
  const mask = maskFor(entries, into);
  if (k === 0) {
    for (const t of mask.tensors) fillKept(t);
    return { mask, stats: stats('magnitude-global', entries, mask) };
  }
  const done = (key: number, ties: number, path: PruneStats['path']) => ({
    mask,
    stats: stats('magnitude-global', entries, mask, { threshold: keyToFloat(key), prunedAtThreshold: ties, path }),
  });
  if (n >= SAMPLE_MIN && tuning.sample !== false) {
    const win = await sampleWindow(reader, entries, k, n, buffers);
    const r = await buildCollecting(reader, entries, mask, win.lo, win.hi, k, candidateCap, buffers);
    if (r) return done(r.key, r.ties, 'window');
  }
  const { hi, lo } = buffers;
  hi.fill(0);
  for (const e of entries) histHigh(await read(reader, e, buffers), hi);
  const { bucket, before } = findBucket(hi, k);
  const inBucket = hi[bucket];
  hi.fill(0);
  if (inBucket <= candidateCap) {
    const r = await buildCollecting(reader, entries, mask, bucket << 16, (bucket << 16) | 0xffff, k, candidateCap, buffers);
    if (!r) throw new Error('threshold bucket did not hold the target rank');
    return done(r.key, r.ties, 'bucket');
  }
  lo.fill(0);
  for (const e of entries) histLowIn(await read(reader, e, buffers), bucket, lo);
  const low = findBucket(lo, k - before);
  lo.fill(0);
  const t = (bucket << 16) | low.bucket;
  const ties = k - before - low.before;
  let left = ties;
  for (let i = 0; i < entries.length; i++) {
    const w = words(mask.tensors[i]);
    left = buildWords(await read(reader, entries[i], buffers), w, t, left);
    mask.tensors[i].kept = countWords(w);
  }
  return done(t, ties, 'histogram');
}

/** Below this many weights the exact path is cheap enough; sampling is skipped. */
const SAMPLE_MIN = 1 << 18;

/**
 * Pass 1 of the fast path: a key window [lo, hi] that holds the k-th smallest key with high
 * probability, from a sample of about n / 64 keys (exact order statistics of the sample ± 6σ).
 */
async function sampleWindow(reader: CheckpointReader, entries: readonly TensorEntry[], k: number, n: number, buffers: PruneBuffers): Promise<{ lo: number; hi: number }> {
  const cap = Math.ceil(n / 32) + 64;
  if (buffers.sample.length < cap) buffers.sample = new Uint32Array(cap);
  const sample = buffers.sample;
  let m = 0;
  let x = 0x2545f491; // xorshift32: strides 33..96 (mean 64.5), fixed seed so runs agree
  let next = 0;
  for (const e of entries) {
    const u = await read(reader, e, buffers);
    const len = u.length;
    while (next < len) {
      sample[m++] = u[next] & 0x7fffffff;
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      next += 33 + ((x >>> 26) & 63);
    }
    next -= len;
  }
  const s = sample.subarray(0, m);
  const p = k / n;
  const margin = 6 * Math.sqrt(m * p * (1 - p)) + 16;
  const rLo = Math.floor(p * m - margin);
  const rHi = Math.ceil(p * m + margin);
  const lo = rLo < 1 ? 0 : thresholdOf(s, rLo, buffers.hi, buffers.lo).key;
  const hi = rHi > m ? 0x7fffffff : thresholdOf(s, rHi, buffers.hi, buffers.lo).key;
  return { lo, hi };
}

/**
 * Builds the mask for keys outside [lo, hi] (below pruned, above kept) and collects the keys
 * inside, then selects the exact threshold among them. Null when the k-th key is not inside the
 * window or the window holds more than `cap` weights; the mask is then garbage, to be rebuilt.
 */
async function buildCollecting(
  reader: CheckpointReader,
  entries: readonly TensorEntry[],
  mask: Mask,
  lo: number,
  hi: number,
  k: number,
  cap: number,
  buffers: PruneBuffers,
): Promise<{ key: number; ties: number } | null> {
  const span = hi - lo;
  const ends: number[] = [];
  let c = 0;
  let kept = 0;
  for (let ti = 0; ti < entries.length; ti++) {
    const u = await read(reader, entries[ti], buffers);
    const w = words(mask.tensors[ti]);
    const nn = u.length;
    if (buffers.candIndex.length < Math.min(cap, c + nn)) buffers.growCandidates(Math.min(cap, Math.max(c + nn, 2 * buffers.candIndex.length)));
    const { candIndex, candKey } = buffers;
    const full = nn >>> 5;
    for (let wi = 0; wi < full; wi++) {
      const base = wi << 5;
      let word = 0;
      // Four at a time: the bits for "above the window" branch-free (sign of hi − key), then one
      // rarely taken branch when any of the four lies inside the window (lo ≤ key ≤ hi, one
      // unsigned compare each). About 2× the one-at-a-time loop.
      for (let j = 0; j < 32; j += 4) {
        const p = base + j;
        const k0 = u[p] & 0x7fffffff;
        const k1 = u[p + 1] & 0x7fffffff;
        const k2 = u[p + 2] & 0x7fffffff;
        const k3 = u[p + 3] & 0x7fffffff;
        word |= (((hi - k0) >>> 31) | (((hi - k1) >>> 31) << 1) | (((hi - k2) >>> 31) << 2) | (((hi - k3) >>> 31) << 3)) << j;
        if ((k0 - lo) >>> 0 <= span || (k1 - lo) >>> 0 <= span || (k2 - lo) >>> 0 <= span || (k3 - lo) >>> 0 <= span) {
          for (let q = 0; q < 4; q++) {
            const key = u[p + q] & 0x7fffffff;
            if ((key - lo) >>> 0 <= span) {
              if (c === cap) return null;
              candIndex[c] = p + q;
              candKey[c++] = key;
              word |= 1 << (j + q);
            }
          }
        }
      }
      w[wi] = word;
    }
    if (nn & 31) {
      const base = full << 5;
      let word = 0;
      for (let j = 0; j < (nn & 31); j++) {
        const key = u[base + j] & 0x7fffffff;
        if ((key - lo) >>> 0 <= span) {
          if (c === cap) return null;
          candIndex[c] = base + j;
          candKey[c++] = key;
          word |= 1 << j;
        } else word |= ((hi - key) >>> 31) << j;
      }
      w[full] = word;
    }
    const kt = countWords(w);
    mask.tensors[ti].kept = kt;
    kept += kt;
    ends.push(c);
  }
  const below = total(entries) - kept;
  if (below >= k || below + c < k) return null;
  const { candIndex, candKey } = buffers;
  const { key, ties } = thresholdOf(candKey.subarray(0, c), k - below, buffers.hi, buffers.lo);
  let left = ties;
  let start = 0;
  for (let ti = 0; ti < entries.length; ti++) {
    const tm = mask.tensors[ti];
    const bits = tm.bits;
    let cleared = 0;
    for (let i = start; i < ends[ti]; i++) {
      const v = candKey[i];
      if (v < key || (v === key && left-- > 0)) {
        const p = candIndex[i];
        bits[p >> 3] &= ~(1 << (p & 7));
        cleared++;
      }
    }
    tm.kept -= cleared;
    start = ends[ti];
  }
  return { key, ties };
}

/** The same fraction in every prunable tensor: exactly round(s · n_t) pruned in each. */
export async function magnitudeLayerwise(
  reader: CheckpointReader,
  entries: readonly TensorEntry[],
  sparsity: number,
  buffers = new PruneBuffers(),
  into?: Mask,
): Promise<PruneResult> {
  const mask = maskFor(entries, into);
  for (let i = 0; i < entries.length; i++) {
    const tm = mask.tensors[i];
    const k = Math.round(sparsity * tm.size);
    if (k === 0) {
      fillKept(tm);
      continue;
    }
    const u = await read(reader, entries[i], buffers);
    const { key, ties } = thresholdOf(u, k, buffers.hi, buffers.lo);
    const w = words(tm);
    buildWords(u, w, key, ties);
    tm.kept = countWords(w);
  }
  return { mask, stats: stats('magnitude-layerwise', entries, mask) };
}

/**
 * Seeded random pruning of exactly round(s · N) weights over all prunable tensors. Zeros are pruned
 * first (earliest first if there are more zeros than the target); the rest are drawn uniformly from
 * the non-zero weights by sequential selection sampling (Knuth's Algorithm S) in tensor then index
 * order, one Xoshiro128 draw per non-zero weight. Same seed and model → same mask.
 */
export async function randomPrune(
  reader: CheckpointReader,
  entries: readonly TensorEntry[],
  sparsity: number,
  seed: number,
  buffers = new PruneBuffers(),
  into?: Mask,
): Promise<PruneResult> {
  const n = total(entries);
  const k = Math.round(sparsity * n);
  const mask = maskFor(entries, into);
  let zeros = 0;
  if (k > 0) {
    for (const e of entries) {
      const u = await read(reader, e, buffers);
      for (let i = 0; i < u.length; i++) if ((u[i] & 0x7fffffff) === 0) zeros++;
    }
  }
  let zerosToPrune = Math.min(k, zeros);
  let need = k - zerosToPrune;
  let remaining = n - zeros;
  const rng = new Xoshiro128(seed);
  for (let ti = 0; ti < entries.length; ti++) {
    const tm = mask.tensors[ti];
    if (k === 0) {
      fillKept(tm);
      continue;
    }
    const u = await read(reader, entries[ti], buffers);
    const bits = tm.bits;
    let kept = 0;
    for (let i = 0; i < u.length; i++) {
      let keep: boolean;
      if ((u[i] & 0x7fffffff) === 0) {
        keep = zerosToPrune === 0;
        if (!keep) zerosToPrune--;
      } else {
        // Select (prune) with probability need / remaining: exact count, uniform subset.
        keep = need === 0 || rng.uniform() * remaining >= need;
        if (!keep) need--;
        remaining--;
      }
      if (keep) {
        bits[i >> 3] |= 1 << (i & 7);
        kept++;
      }
    }
    tm.kept = kept;
  }
  return { mask, stats: stats('random', entries, mask) };
}

/** The axis N:M groups run along (see KernelLayout). */
export function inputAxis(shape: readonly number[], layout: KernelLayout): number {
  if (shape.length < 2) return 0;
  return layout === 'tfjs' ? shape.length - 2 : 1;
}

/**
 * N:M semi-structured pruning: along the input axis, every group of M consecutive weights keeps
 * its N largest magnitudes (tie rule: among equal magnitudes the earlier index is pruned first).
 * When the input dimension is not a multiple of M, the trailing partial group of r < M weights
 * keeps min(N, r): with zero padding up to M every group still has at most N non-zeros, which is
 * what N:M hardware needs, and no layer is left out.
 */
export async function nOfM(
  reader: CheckpointReader,
  entries: readonly TensorEntry[],
  options: Pick<PruneOptions, 'n' | 'm' | 'layout'>,
  buffers = new PruneBuffers(),
  into?: Mask,
): Promise<PruneResult> {
  const { n, m, layout } = options;
  if (!Number.isInteger(n) || !Number.isInteger(m) || (n as number) < 1 || (m as number) > 256 || (n as number) > (m as number)) {
    throw new CoreInputError('invalid-n-of-m', `N:M needs integers 1 ≤ N ≤ M ≤ 256, got N=${String(n)}, M=${String(m)}`, { n: n ?? null, m: m ?? null }, 422);
  }
  if (layout !== 'tfjs' && layout !== 'torch') {
    throw new CoreInputError('invalid-layout', `N:M needs layout 'tfjs' or 'torch', got ${String(layout)}`, { layout: layout ?? null }, 422);
  }
  const N = n as number;
  const M = m as number;
  const mask = maskFor(entries, into);
  const keys = new Uint32Array(M);
  for (let ti = 0; ti < entries.length; ti++) {
    const tm = mask.tensors[ti];
    const u = await read(reader, entries[ti], buffers);
    const axis = inputAxis(tm.shape, layout);
    const len = tm.shape[axis] ?? 1;
    let inner = 1;
    for (let d = axis + 1; d < tm.shape.length; d++) inner *= tm.shape[d];
    const outer = len * inner === 0 ? 0 : tm.size / (len * inner);
    const bits = tm.bits;
    let kept = 0;
    for (let o = 0; o < outer; o++) {
      for (let g = 0; g < len; g += M) {
        const gl = Math.min(M, len - g);
        const keep = Math.min(N, gl);
        for (let i = 0; i < inner; i++) {
          const base = (o * len + g) * inner + i;
          for (let a = 0; a < gl; a++) keys[a] = u[base + a * inner] & 0x7fffffff;
          for (let a = 0; a < gl; a++) {
            // Rank among the group: larger keys, and equal keys later in the group, rank higher.
            const ka = keys[a];
            let rank = 0;
            for (let b = 0; b < gl; b++) {
              const kb = keys[b];
              if (kb > ka || (kb === ka && b > a)) rank++;
            }
            if (rank < keep) {
              const p = base + a * inner;
              bits[p >> 3] |= 1 << (p & 7);
              kept++;
            }
          }
        }
      }
    }
    tm.kept = kept;
  }
  return { mask, stats: stats('n-of-m', entries, mask) };
}
