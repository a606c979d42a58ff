/**
 * In-memory building blocks of magnitude selection: radix select over the bit patterns of |w|.
 *
 * The key of a float32 weight is its bit pattern with the sign cleared (`u & 0x7fffffff`).
 * Non-negative IEEE floats order like their bit patterns, so keys order like |w|: +0 and -0 are
 * key 0 (the smallest), then denormals, normals, +Infinity (0x7f800000), and NaN above all of
 * them. NaN weights therefore rank as the largest magnitudes: they are kept unless the target
 * needs more weights than all the non-NaN ones. They are never silently hidden by pruning.
 *
 * A key splits into a 15-bit high part (bits 30..16: exponent and 7 mantissa bits) and a 16-bit
 * low part. Selecting the k-th smallest key takes one histogram of the high parts over all weights,
 * then one of the low parts inside the chosen high bucket: O(N), no sort.
 *
 * Tie rule (everywhere in pruning): among weights with equal key, the one earlier in tensor order
 * (checkpoint order), then in row-major index order, is pruned first.
 */

export const HIGH_BUCKETS = 1 << 15;
export const LOW_BUCKETS = 1 << 16;

/** Bits of a float32 as seen through a Uint32 view (no copy). */
export function u32View(f: Float32Array): Uint32Array {
  return new Uint32Array(f.buffer, f.byteOffset, f.length);
}

export function keyToFloat(key: number): number {
  return new Float32Array(new Uint32Array([key]).buffer)[0];
}

/** Adds the high parts of the keys of `u` to `hist` (HIGH_BUCKETS entries). */
export function histHigh(u: Uint32Array, hist: Uint32Array): void {
  const n = u.length;
  for (let i = 0; i < n; i++) hist[(u[i] << 1) >>> 17]++;
}

/** Adds the low parts of the keys whose high part is `bucket` to `hist` (LOW_BUCKETS entries). */
export function histLowIn(u: Uint32Array, bucket: number, hist: Uint32Array): void {
  const n = u.length;
  for (let i = 0; i < n; i++) {
    const v = u[i];
    if ((v << 1) >>> 17 === bucket) hist[v & 0xffff]++;
  }
}

/**
 * The bucket holding the `rank`-th smallest element (1-based, 1 ≤ rank ≤ total) and how many
 * elements lie in lower buckets.
 */
export function findBucket(hist: Uint32Array, rank: number): { bucket: number; before: number } {
  let before = 0;
  for (let b = 0; b < hist.length; b++) {
    const c = hist[b];
    if (before + c >= rank) return { bucket: b, before };
    before += c;
  }
  throw new Error(`rank ${rank} beyond histogram total ${before}`);
}

/** Number of 1 bits in a uint32. */
export function popcount32(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  x = (x + (x >>> 4)) & 0x0f0f0f0f;
  return Math.imul(x, 0x01010101) >>> 24;
}

/**
 * Writes mask words for the weights `u` against threshold key `t`: key < t pruned, key > t kept,
 * key == t pruned while `ties` lasts (tie rule), then kept. `words` holds ceil(n / 32) words.
 * Returns the ties left over, for the next tensor.
 */
export function buildWords(u: Uint32Array, words: Uint32Array, t: number, ties: number): number {
  const n = u.length;
  const full = n >>> 5;
  for (let w = 0; w < full; w++) {
    const base = w << 5;
    let word = 0;
    for (let j = 0; j < 32; j++) {
      // d > 0: below threshold (pruned), d < 0: above (kept, the sign bit), d = 0: a tie.
      const d = t - (u[base + j] & 0x7fffffff);
      if (d === 0) {
        if (ties > 0) ties--;
        else word |= 1 << j;
      } else word |= (d >>> 31) << j;
    }
    words[w] = word;
  }
  if (n & 31) {
    const base = full << 5;
    let word = 0;
    for (let j = 0; j < (n & 31); j++) {
      const d = t - (u[base + j] & 0x7fffffff);
      if (d === 0) {
        if (ties > 0) ties--;
        else word |= 1 << j;
      } else word |= (d >>> 31) << j;
    }
    words[full] = word;
  }
  return ties;
}

export function countWords(words: Uint32Array): number {
  let kept = 0;
  for (let i = 0; i < words.length; i++) kept += popcount32(words[i]);
  return kept;
}

/**
 * Exact threshold for pruning `k` (1 ≤ k ≤ n) of the in-memory weights `u`: the threshold key and
 * how many weights equal to it are pruned. `hi` and `lo` are scratch histograms (left zeroed).
 */
export function thresholdOf(u: Uint32Array, k: number, hi: Uint32Array, lo: Uint32Array): { key: number; ties: number } {
  histHigh(u, hi);
  const { bucket, before } = findBucket(hi, k);
  hi.fill(0);
  histLowIn(u, bucket, lo);
  const low = findBucket(lo, k - before);
  lo.fill(0);
  return { key: (bucket << 16) | low.bucket, ties: k - before - low.before };
}
