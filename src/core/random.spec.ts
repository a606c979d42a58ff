import { describe, expect, it } from 'vitest';
import { shuffledIndices } from './data/splits.js';
import { CoreInputError } from './errors.js';
import { checkSeed, deriveSeed, isSeed, Mulberry32, Sfc32, shuffleInPlace, shuffleInto, streamSeed, Xoshiro128 } from './random.js';
import { augmentBatch, augmentSeed } from './tf/augment.js';

// Every value below was produced by the code before the three generators moved into this module
// (tf/random.ts, data/rng.ts, pruning/prng.ts). Seeded training (batch order, augmentation), the
// dataset splits, corruptions and random masks depend on these exact streams.
describe('pinned streams', () => {
  it('Mulberry32 and streamSeed: training batch order and augmentation', () => {
    const m = new Mulberry32(7);
    expect([m.uniform(), m.uniform(), m.uniform(), m.uniform()]).toEqual([0.011704753153026104, 0.06195825757458806, 0.97690763277933, 0.6990287057124078]);
    expect([streamSeed(1, 0), streamSeed(1, 1), streamSeed(42, 3), streamSeed(2 ** 31 - 1, 0x62e)]).toEqual([857305552, 2300179481, 3223609012, 3681239121]);
    expect([augmentSeed(1, 0), augmentSeed(5, 17)]).toEqual([3678648072, 1887511379]);
    const order = shuffleInto(Array.from({ length: 20 }, (_, i) => i), streamSeed(3, 1), new Uint32Array(20));
    expect(Array.from(order)).toEqual([19, 12, 15, 11, 18, 5, 14, 8, 7, 9, 6, 13, 0, 17, 1, 16, 3, 2, 4, 10]);
    const x = Float32Array.from({ length: 3 * 5 * 5 }, (_, i) => i + 1);
    augmentBatch(x, 3, [5, 5, 1], 123, 2);
    expect(Array.from(x)).toEqual([
      8, 7, 6, 0, 0, 13, 12, 11, 0, 0, 18, 17, 16, 0, 0, 23, 22, 21, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 26, 27, 28, 29, 0, 31, 32, 33, 34, 0, 36, 37, 38, 39, 0, 41,
      42, 43, 44, 63, 64, 65, 0, 0, 68, 69, 70, 0, 0, 73, 74, 75, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
  });

  it('Sfc32 and deriveSeed: splits and corruptions', () => {
    const r = new Sfc32(42);
    expect([r.nextUint32(), r.nextUint32(), r.float(), r.int(1000), r.normal(), r.normal(), r.poisson(3.5)]).toEqual([
      2501009184, 900119870, 0.6920443374881093, 85, -0.3489766909654211, 0.37152363588339327, 3,
    ]);
    expect([deriveSeed(1), deriveSeed(1, 2, 3), deriveSeed(2 ** 32 + 1, 7)]).toEqual([2385989600, 2308861378, 3711469949]);
    expect(Array.from(shuffleInPlace(Uint32Array.from({ length: 20 }, (_, i) => i), new Sfc32(9)))).toEqual([5, 12, 10, 8, 6, 14, 7, 15, 16, 17, 4, 18, 9, 2, 11, 13, 3, 0, 19, 1]);
    expect(Array.from(shuffledIndices(Uint32Array.from({ length: 20 }, (_, i) => i * 2), 11))).toEqual([22, 16, 0, 18, 14, 38, 28, 20, 4, 8, 34, 36, 30, 2, 10, 32, 24, 6, 26, 12]);
  });

  it('Xoshiro128: random pruning, both halves of a large seed', () => {
    const x = new Xoshiro128(7);
    expect([x.nextUint32(), x.nextUint32(), x.uniform()]).toEqual([1004282400, 3676362697, 0.5861437695566565]);
    const big = new Xoshiro128(2 ** 40 + 3);
    expect([big.nextUint32(), big.uniform()]).toEqual([3088717543, 0.16610282007604837]);
  });
});

describe('checkSeed', () => {
  it('accepts non-negative safe integers and refuses the rest with invalid-seed', () => {
    for (const ok of [0, 1, 2 ** 31 - 1, Number.MAX_SAFE_INTEGER]) expect(checkSeed(ok)).toBe(ok);
    for (const bad of [-1, 0.5, Number.MAX_SAFE_INTEGER + 1, Number.NaN, '3', undefined]) {
      expect(isSeed(bad)).toBe(false);
      expect(() => checkSeed(bad, 'valSeed')).toThrow(CoreInputError);
      expect(() => checkSeed(bad, 'valSeed')).toThrow(/valSeed must be a safe integer ≥ 0/);
    }
  });
});
