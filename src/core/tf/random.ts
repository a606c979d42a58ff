/**
 * Seeded randomness for the tf core (batch order, sample choice). Private to `tf/`: the shared
 * `data/` helpers may replace it once they exist; the sequence must then stay the same or the
 * determinism tests will say so.
 */

/** mulberry32: a tiny 32-bit generator, good enough for shuffling and identical everywhere. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Mixes a seed with a stream number (epoch, purpose) so streams do not overlap. */
export function deriveSeed(seed: number, stream: number): number {
  let h = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(stream + 1, 0x85ebca77)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/** Fisher–Yates shuffle into `out` (reused between epochs). */
export function shuffleInto(source: ArrayLike<number>, seed: number, out: Uint32Array): Uint32Array {
  out.set(source as ArrayLike<number>);
  const rand = mulberry32(seed);
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = out[i];
    out[i] = out[j];
    out[j] = t;
  }
  return out;
}
