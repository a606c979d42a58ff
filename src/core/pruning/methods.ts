import { CoreInputError } from '../errors.js';
import { allocateMask, fillKept, type Mask, type TensorMask, wordsOf } from '../masks/mask.js';
import type { CheckpointReader, TensorEntry } from '../tensors.js';
import { Xoshiro128 } from './prng.js';
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
  candLow = new Uint16Array(0);

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
      return magnitudeGlobal(reader, entries, checkSparsity(options.sparsity), buffers);
    case 'magnitude-layerwise':
      return magnitudeLayerwise(reader, entries, checkSparsity(options.sparsity), buffers);
    case 'random':
      return randomPrune(reader, entries, checkSparsity(options.sparsity), checkSeed(options.seed ?? 0), buffers);
    case 'n-of-m':
      return nOfM(reader, entries, options, buffers);
    default:
      throw new CoreInputError('unknown-method', `unknown pruning method ${JSON.stringify(options.method)}`, { method: options.method }, 422);
  }
}

function checkSeed(seed: unknown): number {
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0) {
    throw new CoreInputError('invalid-seed', `seed must be a non-negative integer, got ${String(seed)}`, { seed }, 422);
  }
  return seed;
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
 * Pass 1 histograms the high 15 key bits of every weight. Pass 2 writes the mask of every weight
 * outside the threshold's bucket and collects the bucket's members (index and low 16 bits); the
 * exact threshold is then found among them and their bits set. When the bucket is larger than
 * the largest tensor (many equal weights), a low-bits histogram pass and a third build pass
 * replace the collection, to keep memory bounded. `candidateCap` forces that path in tests.
 */
export async function magnitudeGlobal(
  reader: CheckpointReader,
  entries: readonly TensorEntry[],
  sparsity: number,
  buffers = new PruneBuffers(),
  candidateCap = Math.max(1 << 16, maxSize(entries)),
): Promise<PruneResult> {
  const n = total(entries);
  const k = Math.round(sparsity * n);
  const mask = allocateMask(entries);
  if (k === 0) {
    for (const t of mask.tensors) fillKept(t);
    return { mask, stats: stats('magnitude-global', entries, mask) };
  }
  const { hi, lo } = buffers;
  hi.fill(0);
  for (const e of entries) histHigh(await read(reader, e, buffers), hi);
  const { bucket, before } = findBucket(hi, k);
  const inBucket = hi[bucket];
  hi.fill(0);
  let t: number;
  let ties: number;
  if (inBucket <= candidateCap) {
    ({ key: t, ties } = await buildCollecting(reader, entries, mask, bucket, k - before, inBucket, buffers));
  } else {
    lo.fill(0);
    for (const e of entries) histLowIn(await read(reader, e, buffers), bucket, lo);
    const low = findBucket(lo, k - before);
    lo.fill(0);
    t = (bucket << 16) | low.bucket;
    ties = k - before - low.before;
    let left = ties;
    for (let i = 0; i < entries.length; i++) {
      const w = words(mask.tensors[i]);
      left = buildWords(await read(reader, entries[i], buffers), w, t, left);
      mask.tensors[i].kept = countWords(w);
    }
  }
  return { mask, stats: stats('magnitude-global', entries, mask, { threshold: keyToFloat(t), prunedAtThreshold: ties }) };
}

/** Pass 2 of magnitudeGlobal when the threshold bucket fits in the candidate buffers. */
async function buildCollecting(
  reader: CheckpointReader,
  entries: readonly TensorEntry[],
  mask: Mask,
  bucket: number,
  rank: number,
  inBucket: number,
  buffers: PruneBuffers,
): Promise<{ key: number; ties: number }> {
  if (buffers.candIndex.length < inBucket) {
    buffers.candIndex = new Uint32Array(inBucket);
    buffers.candLow = new Uint16Array(inBucket);
  }
  const { candIndex, candLow, lo } = buffers;
  // Keys above the bucket's top are kept; keys below its bottom are pruned; members are
  // tentatively kept and collected.
  const top = (bucket << 16) | 0xffff;
  const ends: number[] = [];
  let c = 0;
  for (let ti = 0; ti < entries.length; ti++) {
    const u = await read(reader, entries[ti], buffers);
    const w = words(mask.tensors[ti]);
    const nn = u.length;
    for (let base = 0; base < nn; base += 32) {
      const m = Math.min(32, nn - base);
      let word = 0;
      for (let j = 0; j < m; j++) {
        const key = u[base + j] & 0x7fffffff;
        if (key >>> 16 === bucket) {
          candIndex[c] = base + j;
          candLow[c++] = key;
          word |= 1 << j;
        } else word |= ((top - key) >>> 31) << j;
      }
      w[base >>> 5] = word;
    }
    ends.push(c);
  }
  lo.fill(0);
  for (let i = 0; i < c; i++) lo[candLow[i]]++;
  const low = findBucket(lo, rank);
  lo.fill(0);
  const ties = rank - low.before;
  let left = ties;
  let start = 0;
  for (let ti = 0; ti < entries.length; ti++) {
    const bits = mask.tensors[ti].bits;
    for (let i = start; i < ends[ti]; i++) {
      const l = candLow[i];
      if (l < low.bucket || (l === low.bucket && left-- > 0)) {
        const p = candIndex[i];
        bits[p >> 3] &= ~(1 << (p & 7));
      }
    }
    start = ends[ti];
    mask.tensors[ti].kept = countWords(words(mask.tensors[ti]));
  }
  return { key: (bucket << 16) | low.bucket, ties };
}

/** The same fraction in every prunable tensor: exactly round(s · n_t) pruned in each. */
export async function magnitudeLayerwise(
  reader: CheckpointReader,
  entries: readonly TensorEntry[],
  sparsity: number,
  buffers = new PruneBuffers(),
): Promise<PruneResult> {
  const mask = allocateMask(entries);
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
 * order, one xoshiro128** draw per non-zero weight. Same seed and model → same mask.
 */
export async function randomPrune(
  reader: CheckpointReader,
  entries: readonly TensorEntry[],
  sparsity: number,
  seed: number,
  buffers = new PruneBuffers(),
): Promise<PruneResult> {
  const n = total(entries);
  const k = Math.round(sparsity * n);
  const mask = allocateMask(entries);
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
        keep = need === 0 || rng.next() * remaining >= need;
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
  const mask = allocateMask(entries);
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
