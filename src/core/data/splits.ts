import { CoreInputError } from '../errors.js';
import { checkSeed, deriveSeed, Sfc32, shuffleInPlace } from '../random.js';

/** Purpose tags mixed into seeds so that the test holdout, the val holdout and batch order never share a stream. */
export const SEED_TAG = { test: 0x7e57, val: 0x7a1, batches: 0xba7c, corruption: 0xc022 } as const;

/**
 * The split's indices in an order fixed by `seed` (an epoch's batch order: pass e.g. `seed * 1000 + epoch`
 * or `deriveSeed(seed, epoch)` for a new order per epoch). `into` is reused when given and long enough,
 * so a training loop allocates nothing per epoch.
 */
export function shuffledIndices(split: ArrayLike<number>, seed: number, into?: Uint32Array): Uint32Array {
  checkSeed(seed);
  const out = into && into.length >= split.length ? into.subarray(0, split.length) : new Uint32Array(split.length);
  for (let i = 0; i < split.length; i++) out[i] = split[i];
  return shuffleInPlace(out, new Sfc32(deriveSeed(seed, SEED_TAG.batches)));
}

/** How many of `n` to hold out for `fraction`: rounded, but at least 1 and at most n − 1 when n ≥ 2 and fraction > 0. */
export function holdoutCount(n: number, fraction: number): number {
  if (!(fraction >= 0 && fraction < 1)) {
    throw new CoreInputError('invalid-fraction', `a holdout fraction must be in [0, 1), got ${fraction}`, { fraction });
  }
  if (fraction === 0 || n < 2) return 0;
  return Math.min(n - 1, Math.max(1, Math.round(fraction * n)));
}

/**
 * Stratified holdout: takes `holdoutCount(indices.length, fraction)` of `indices` out, spread over the
 * classes in proportion to their sizes (largest remainder, ties to the lower class), each class's
 * share drawn by a seeded shuffle of that class. Both results are sorted ascending: a split is a set;
 * order comes from `shuffledIndices` at training time. Deterministic in (indices, labels, fraction, seed).
 */
export function stratifiedHoldout(
  indices: ArrayLike<number>,
  labels: ArrayLike<number>,
  classes: number,
  fraction: number,
  seed: number,
): { kept: Uint32Array; heldOut: Uint32Array } {
  checkSeed(seed);
  const n = indices.length;
  const total = holdoutCount(n, fraction);
  const counts = new Uint32Array(classes);
  for (let i = 0; i < n; i++) counts[labels[indices[i]]]++;
  // Largest-remainder allocation so the per-class shares sum to exactly `total`.
  const take = new Uint32Array(classes);
  const rema: { c: number; r: number }[] = [];
  let assigned = 0;
  for (let c = 0; c < classes; c++) {
    const exact = n === 0 ? 0 : (total * counts[c]) / n;
    take[c] = Math.floor(exact);
    assigned += take[c];
    rema.push({ c, r: exact - take[c] });
  }
  rema.sort((p, q) => q.r - p.r || p.c - q.c);
  for (let k = 0; assigned < total; k++) {
    const c = rema[k % classes].c;
    if (take[c] < counts[c]) {
      take[c]++;
      assigned++;
    }
  }
  // Group indices by class (stable), shuffle each class with its own stream, take its share from the front.
  const offsets = new Uint32Array(classes + 1);
  for (let c = 0; c < classes; c++) offsets[c + 1] = offsets[c] + counts[c];
  const grouped = new Uint32Array(n);
  const fill = offsets.slice(0, classes);
  for (let i = 0; i < n; i++) grouped[fill[labels[indices[i]]]++] = indices[i];
  const heldOut = new Uint32Array(total);
  const kept = new Uint32Array(n - total);
  let h = 0;
  let k = 0;
  for (let c = 0; c < classes; c++) {
    const group = grouped.subarray(offsets[c], offsets[c + 1]);
    shuffleInPlace(group, new Sfc32(deriveSeed(seed, c)));
    for (let i = 0; i < group.length; i++) {
      if (i < take[c]) heldOut[h++] = group[i];
      else kept[k++] = group[i];
    }
  }
  return { kept: kept.sort(), heldOut: heldOut.sort() };
}

/** 0 … n−1. */
export function range(n: number, start = 0): Uint32Array {
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) out[i] = start + i;
  return out;
}
