import { describe, expect, it } from 'vitest';
import { CoreInputError } from '../errors.js';
import { deriveSeed, Sfc32 } from '../random.js';
import { holdoutCount, range, shuffledIndices, stratifiedHoldout } from './splits.js';

describe('Sfc32', () => {
  it('is fixed by its seed and differs between seeds', () => {
    const a = new Array(5).fill(0);
    const r1 = new Sfc32(42);
    const r2 = new Sfc32(42);
    const r3 = new Sfc32(43);
    const s1 = a.map(() => r1.nextUint32());
    expect(a.map(() => r2.nextUint32())).toEqual(s1);
    expect(a.map(() => r3.nextUint32())).not.toEqual(s1);
    // Seeds that agree in their low 32 bits still give different streams.
    expect(new Sfc32(1).nextUint32()).not.toBe(new Sfc32(2 ** 32 + 1).nextUint32());
    expect(deriveSeed(7, 1, 2)).not.toBe(deriveSeed(7, 2, 1));
  });

  it('int(n) is uniform enough and in range; float in [0, 1); normal has mean 0 and sd 1', () => {
    const r = new Sfc32(1);
    const counts = new Array(7).fill(0);
    for (let i = 0; i < 70_000; i++) counts[r.int(7)]++;
    for (const c of counts) expect(Math.abs(c - 10_000)).toBeLessThan(400);
    let sum = 0;
    let sq = 0;
    for (let i = 0; i < 20_000; i++) {
      const f = r.float();
      expect(f >= 0 && f < 1).toBe(true);
      const z = r.normal();
      sum += z;
      sq += z * z;
    }
    expect(Math.abs(sum / 20_000)).toBeLessThan(0.03);
    expect(Math.abs(Math.sqrt(sq / 20_000) - 1)).toBeLessThan(0.03);
  });

  it('poisson has the right mean for small and large λ', () => {
    const r = new Sfc32(3);
    for (const lam of [0.5, 4, 60]) {
      let s = 0;
      for (let i = 0; i < 20_000; i++) s += r.poisson(lam);
      expect(Math.abs(s / 20_000 - lam)).toBeLessThan(0.05 * lam + 0.02);
    }
    expect(r.poisson(0)).toBe(0);
  });
});

describe('shuffledIndices', () => {
  const split = Uint32Array.from([3, 9, 10, 11, 20, 21, 40, 41, 42, 99]);
  it('is a permutation of the split fixed by the seed', () => {
    const a = shuffledIndices(split, 5);
    expect(Array.from(a).sort((p, q) => p - q)).toEqual(Array.from(split));
    expect(shuffledIndices(split, 5)).toEqual(a);
    expect(shuffledIndices(split, 6)).not.toEqual(a);
    expect(a).not.toEqual(split);
  });
  it('reuses a given buffer', () => {
    const buf = new Uint32Array(32);
    const a = shuffledIndices(split, 5, buf);
    expect(a.buffer).toBe(buf.buffer);
    expect(a).toEqual(shuffledIndices(split, 5));
  });
  it('refuses a seed that is not a safe integer', () => {
    expect(() => shuffledIndices(split, 1.5)).toThrow(CoreInputError);
    expect(() => shuffledIndices(split, Number.NaN)).toThrow(/seed/);
  });
});

describe('stratifiedHoldout', () => {
  // 3 classes of sizes 50, 30, 20 interleaved.
  const labels = Array.from({ length: 100 }, (_, i) => (i < 50 ? 0 : i < 80 ? 1 : 2));
  const idx = range(100);

  it('holds out exactly the rounded fraction, per class in proportion, disjoint and covering', () => {
    const { kept, heldOut } = stratifiedHoldout(idx, labels, 3, 0.1, 9);
    expect(heldOut.length).toBe(10);
    expect(kept.length).toBe(90);
    const per = [0, 0, 0];
    for (const i of heldOut) per[labels[i]]++;
    expect(per).toEqual([5, 3, 2]);
    const all = new Set([...kept, ...heldOut]);
    expect(all.size).toBe(100);
    // Sorted ascending: a split is a set.
    expect(Array.from(kept)).toEqual(Array.from(kept).sort((a, b) => a - b));
  });

  it('is deterministic in the seed and varies with it', () => {
    const a = stratifiedHoldout(idx, labels, 3, 0.2, 1).heldOut;
    expect(stratifiedHoldout(idx, labels, 3, 0.2, 1).heldOut).toEqual(a);
    expect(stratifiedHoldout(idx, labels, 3, 0.2, 2).heldOut).not.toEqual(a);
  });

  it('uses largest remainders so the total is exact', () => {
    // 7 classes of 3: 10 % of 21 = 2 (round(2.1)); remainders all equal, lowest classes first.
    const l = Array.from({ length: 21 }, (_, i) => i % 7);
    const { heldOut } = stratifiedHoldout(range(21), l, 7, 0.1, 0);
    expect(heldOut.length).toBe(2);
    expect(Array.from(heldOut, (i) => l[i]).sort()).toEqual([0, 1]);
  });

  it('holdoutCount keeps at least one on each side and rejects bad fractions', () => {
    expect(holdoutCount(5, 0.01)).toBe(1);
    expect(holdoutCount(5, 0.99)).toBe(4);
    expect(holdoutCount(1, 0.5)).toBe(0);
    expect(holdoutCount(100, 0)).toBe(0);
    expect(() => holdoutCount(10, 1)).toThrow(CoreInputError);
    expect(() => holdoutCount(10, -0.1)).toThrow(/fraction/);
  });
});
