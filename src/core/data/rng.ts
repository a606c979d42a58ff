import { CoreInputError } from '../errors.js';

/**
 * Small, fast, seedable PRNG shared by splits, batch order and corruptions. sfc32 (Chris Doty-Humphrey's
 * "small fast chaotic" generator, 128-bit state) passes PractRand to many terabytes, unlike
 * Math.random-grade LCGs whose low bits repeat; that matters when 60k indices are shuffled by `int(n)`.
 * Every stream is fixed by its seed alone, so the same seed gives the same numbers on any machine.
 */

/** Wellons' lowbias32 integer hash: a full-avalanche 32-bit mixer used to derive seeds from seeds. */
export function mix32(x: number): number {
  x >>>= 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** A client-given seed must be a safe integer; anything else would silently collapse to another seed. */
export function checkSeed(seed: number, what = 'seed'): number {
  if (!Number.isSafeInteger(seed)) {
    throw new CoreInputError('invalid-seed', `${what} must be a safe integer, got ${String(seed)}`, { seed });
  }
  return seed;
}

/**
 * Folds a seed and any number of integers (image index, class, purpose tag) into one 32-bit seed.
 * Both 32-bit halves of a safe-integer seed take part, so 1 and 2^32 + 1 give different streams.
 */
export function deriveSeed(seed: number, ...parts: number[]): number {
  let h = mix32((seed >>> 0) ^ 0x9e3779b9);
  h = mix32(h ^ (Math.floor(seed / 0x1_0000_0000) >>> 0));
  for (const p of parts) h = mix32((h + 0x6a09e667) ^ mix32(p >>> 0) ^ (Math.floor(p / 0x1_0000_0000) >>> 0));
  return h;
}

export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  private spare = Number.NaN;

  constructor(seed: number) {
    const s = deriveSeed(seed);
    this.a = mix32(s ^ 0x243f6a88);
    this.b = mix32(s ^ 0x85a308d3);
    this.c = mix32(s ^ 0x13198a2e);
    this.d = 1;
    // The first outputs of a freshly seeded sfc32 are weakly mixed; the reference code discards 12.
    for (let i = 0; i < 12; i++) this.nextUint32();
  }

  nextUint32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  float(): number {
    const hi = this.nextUint32() >>> 5;
    const lo = this.nextUint32() >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform integer in [0, n), n ≤ 2^32, without modulo bias (rejection sampling). */
  int(n: number): number {
    if (n <= 1) return 0;
    const limit = 0x1_0000_0000 - (0x1_0000_0000 % n);
    let r = this.nextUint32();
    while (r >= limit) r = this.nextUint32();
    return r % n;
  }

  /** Standard normal by the Box–Muller transform (the second value is kept for the next call). */
  normal(): number {
    if (!Number.isNaN(this.spare)) {
      const v = this.spare;
      this.spare = Number.NaN;
      return v;
    }
    // 32-bit uniforms suffice here (tails to about 6.7σ) and halve the cost; u is never 0.
    const u = (this.nextUint32() + 0.5) / 4294967296;
    const r = Math.sqrt(-2 * Math.log(u));
    const t = (2 * Math.PI * this.nextUint32()) / 4294967296;
    this.spare = r * Math.sin(t);
    return r * Math.cos(t);
  }

  /**
   * Poisson(λ) by sequential inversion: O(λ) work, exact, and fine for the λ ≤ a few hundred that
   * shot noise on 8-bit pixels needs. Larger λ falls back to a rounded normal approximation.
   */
  poisson(lambda: number): number {
    if (!(lambda > 0)) return 0;
    if (lambda > 500) return Math.max(0, Math.round(lambda + Math.sqrt(lambda) * this.normal()));
    let k = 0;
    let p = Math.exp(-lambda);
    let cdf = p;
    const u = this.float();
    while (u > cdf && k < 10_000) {
      k++;
      p *= lambda / k;
      cdf += p;
    }
    return k;
  }
}

/** Fisher–Yates in place. */
export function shuffleInPlace<T extends { length: number; [i: number]: number }>(a: T, rng: Rng): T {
  for (let i = a.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
  return a;
}
