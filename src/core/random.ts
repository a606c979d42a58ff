import { CoreInputError } from './errors.js';

/**
 * All seeded randomness of the service: one seed rule, one `Random` interface, the seed mixers and
 * the shuffles. Every stream is fixed by its seed alone, so a seed gives the same numbers on every
 * machine and backend.
 *
 * `Mulberry32` is the generator to reach for. Two older algorithms stay behind the same interface
 * because stored results depend on their exact streams: `Sfc32` draws the built-in datasets' test and
 * val holdouts (which images are trained on) and the corruptions' noise, and `Xoshiro128` draws
 * random pruning's masks. Replacing either would silently move every seeded split, corrupted image
 * and random mask away from what earlier runs recorded; `random.spec.ts` pins each stream.
 */

/**
 * The one seed rule: a non-negative safe integer. Every HTTP seed is validated that way already;
 * a fraction or a seed past 2^53 would silently collapse onto another seed's stream.
 */
export function isSeed(seed: unknown): seed is number {
  return typeof seed === 'number' && Number.isSafeInteger(seed) && seed >= 0;
}

/** `seed` itself, or a 400 `invalid-seed` naming `what`. */
export function checkSeed(seed: unknown, what = 'seed'): number {
  if (!isSeed(seed)) throw new CoreInputError('invalid-seed', `${what} must be a safe integer ≥ 0, got ${String(seed)}`, { seed });
  return seed;
}

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

/**
 * Folds a seed and any number of integers (image index, class, purpose tag) into one 32-bit seed.
 * Both 32-bit halves of a safe-integer seed take part, so 1 and 2^32 + 1 give different streams.
 * The data core's derivation (splits, corruptions, uploads).
 */
export function deriveSeed(seed: number, ...parts: number[]): number {
  let h = mix32((seed >>> 0) ^ 0x9e3779b9);
  h = mix32(h ^ (Math.floor(seed / 0x1_0000_0000) >>> 0));
  for (const p of parts) h = mix32((h + 0x6a09e667) ^ mix32(p >>> 0) ^ (Math.floor(p / 0x1_0000_0000) >>> 0));
  return h;
}

/**
 * Mixes a seed with one stream number (epoch, purpose) so streams do not overlap: the training
 * loop's derivation (batch order per epoch, augmentation per step, BN recalibration's sample).
 * Not `deriveSeed` because seeded training runs must keep their batch order.
 */
export function streamSeed(seed: number, stream: number): number {
  let h = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(stream + 1, 0x85ebca77)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/** A seeded stream of uniform 32-bit integers and what is drawn from them. */
export abstract class Random {
  private spare = Number.NaN;

  /** Uniform in [0, 2^32). */
  abstract nextUint32(): number;

  /** Uniform in [0, 1) from one draw (32 bits of resolution). */
  uniform(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform in [0, 1) with 53 random bits (two draws). */
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

/** mulberry32: a tiny 32-bit generator, identical everywhere; training's batch order and augmentation. */
export class Mulberry32 extends Random {
  private a: number;

  constructor(seed: number) {
    super();
    this.a = seed >>> 0;
  }

  nextUint32(): number {
    this.a = (this.a + 0x6d2b79f5) >>> 0;
    let t = this.a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
}

/**
 * sfc32 (Chris Doty-Humphrey's "small fast chaotic" generator, 128-bit state): passes PractRand to
 * many terabytes; the dataset splits and corruptions.
 */
export class Sfc32 extends Random {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    super();
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
}

/**
 * xoshiro128** (Blackman & Vigna), seeded through splitmix32 from the two 32-bit halves of the
 * seed, so distinct seeds give distinct states; random pruning.
 */
export class Xoshiro128 extends Random {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    super();
    let s = seed >>> 0;
    const next = () => {
      // splitmix32
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    s = (Math.floor(seed / 0x100000000) >>> 0) ^ 0x6a09e667;
    this.c = next();
    this.d = next();
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1;
  }

  nextUint32(): number {
    const r = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return r;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Fisher–Yates in place, with unbiased `int` draws (the splits' shuffle). */
export function shuffleInPlace<T extends { length: number; [i: number]: number }>(a: T, rng: Random): T {
  for (let i = a.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
  return a;
}

/**
 * Fisher–Yates of `source` into `out` (reused between epochs) with `Mulberry32(seed)` and
 * `floor(uniform · (i + 1))` draws: training's batch order, kept so seeded runs train the same.
 */
export function shuffleInto(source: ArrayLike<number>, seed: number, out: Uint32Array): Uint32Array {
  out.set(source as ArrayLike<number>);
  const rng = new Mulberry32(seed);
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    const t = out[i];
    out[i] = out[j];
    out[j] = t;
  }
  return out;
}
