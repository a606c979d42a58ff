import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryCheckpoint } from '../checkpoint/memory.js';
import { CoreInputError } from '../errors.js';
import { maskHash } from '../masks/compare.js';
import { applyMask, isKept, type Mask } from '../masks/mask.js';
import { magnitudeGlobal, PruneBuffers, prune } from './methods.js';
import { selectPrunable } from './prunable.js';

type T = { name: string; shape: number[]; data: Float32Array };
const tensor = (name: string, shape: number[], values: number[]): T => ({ name, shape, data: Float32Array.from(values) });
const ckpt = (ts: T[]) => new MemoryCheckpoint(ts.map((t) => ({ ...t, data: t.data.slice() })));

function zeros(mask: Mask): number {
  return mask.tensors.reduce((a, t) => a + t.size - t.kept, 0);
}

/** Reference: sort every prunable weight by (|w|, tensor order, index), prune the first k. */
function referenceGlobal(ts: T[], s: number): boolean[][] {
  const all: { key: number; t: number; i: number }[] = [];
  const keyOf = (x: number) => new Uint32Array(Float32Array.of(x).buffer)[0] & 0x7fffffff;
  for (const [ti, t] of ts.entries()) for (const [i, x] of t.data.entries()) all.push({ key: keyOf(x), t: ti, i });
  all.sort((a, b) => a.key - b.key || a.t - b.t || a.i - b.i);
  const kept = ts.map((t) => new Array<boolean>(t.data.length).fill(true));
  const k = Math.round(s * all.length);
  for (let j = 0; j < k; j++) kept[all[j].t][all[j].i] = false;
  return kept;
}

const keptArrays = (mask: Mask) => mask.tensors.map((t) => Array.from({ length: t.size }, (_, i) => isKept(t, i)));

/** Applies a mask to tensors (what writing the pruned model does). */
function applied(ts: T[], mask: Mask): T[] {
  return ts.map((t) => {
    const data = t.data.slice();
    const tm = mask.tensors.find((m) => m.name === t.name);
    if (tm) applyMask(data, tm);
    return { ...t, data };
  });
}

describe('magnitude-global', () => {
  const ts = [
    tensor('a/kernel', [2, 3], [0.5, -0.1, 0.3, -0.9, 0.2, 0.05]),
    tensor('a/bias', [3], [0.0001, 0.0001, 0.0001]),
    tensor('b/kernel', [2, 2], [-0.4, 0.6, 0.01, -0.7]),
  ];

  it('prunes exactly round(s·N) of the prunable weights, smallest |w| first, biases untouched', async () => {
    const { mask, stats } = await prune(ckpt(ts), { method: 'magnitude-global', sparsity: 0.5 });
    expect(mask.tensors.map((t) => t.name)).toEqual(['a/kernel', 'b/kernel']);
    expect(stats.prunableWeights).toBe(10);
    expect(stats.pruned).toBe(5);
    expect(zeros(mask)).toBe(5);
    // |w| sorted: 0.01 0.05 0.1 0.2 0.3 | 0.4 0.5 0.6 0.7 0.9
    expect(keptArrays(mask)).toEqual([
      [true, false, false, true, false, false],
      [true, true, false, true],
    ]);
    expect(stats.threshold).toBeCloseTo(0.3, 6);
  });

  it('rounds s·N half up and accepts 0', async () => {
    expect((await prune(ckpt(ts), { method: 'magnitude-global', sparsity: 0.25 })).stats.pruned).toBe(3); // 2.5 → 3
    const none = await prune(ckpt(ts), { method: 'magnitude-global', sparsity: 0 });
    expect(none.stats.pruned).toBe(0);
    expect(none.mask.tensors.every((t) => t.kept === t.size)).toBe(true);
    expect((await prune(ckpt(ts), { method: 'magnitude-global', sparsity: 0.99 })).stats.pruned).toBe(10);
  });

  it('breaks ties by tensor order then index order', async () => {
    const tied = [tensor('x/kernel', [2, 2], [1, 2, 1, 2]), tensor('y/kernel', [1, 2], [1, 1])];
    const { mask, stats } = await prune(ckpt(tied), { method: 'magnitude-global', sparsity: 0.5 });
    // Four 1s, three pruned: x[0], x[2], y[0]; y[1] kept.
    expect(keptArrays(mask)).toEqual([
      [false, true, false, true],
      [false, true],
    ]);
    expect(stats.prunedAtThreshold).toBe(3);
  });

  it('keeps zeros zero and stacks: 0.5 then 0.75 equals pruning to 0.75 at once', async () => {
    const r = await prune(ckpt(ts), { method: 'magnitude-global', sparsity: 0.5 });
    const once = applied(ts, r.mask);
    const twice = await prune(ckpt(once), { method: 'magnitude-global', sparsity: 0.75 });
    const direct = await prune(ckpt(ts), { method: 'magnitude-global', sparsity: 0.75 });
    expect(maskHash(twice.mask)).toBe(maskHash(direct.mask));
    for (const [ti, t] of twice.mask.tensors.entries()) {
      for (let i = 0; i < t.size; i++) if (!isKept(r.mask.tensors[ti], i)) expect(isKept(t, i)).toBe(false);
    }
  });

  it('treats -0 as zero and NaN as the largest magnitude', async () => {
    const odd = [tensor('k/kernel', [2, 3], [Number.NaN, -0, 5, Number.POSITIVE_INFINITY, -1, 3])];
    const { mask } = await prune(ckpt(odd), { method: 'magnitude-global', sparsity: 0.7 }); // 4 of 6
    expect(keptArrays(mask)).toEqual([[true, false, false, true, false, false]]);
  });

  it('is deterministic (same mask hash) and matches the sorting reference, also on the 3-pass path', async () => {
    const rnd = (n: number, seed: number) => Array.from({ length: n }, (_, i) => Math.sin(seed * 1000 + i * 12.9898) * 2);
    const big = [tensor('p/kernel', [40, 50], rnd(2000, 1)), tensor('q/kernel', [30, 30], rnd(900, 2))];
    // Quantize so there are many exact ties.
    for (const t of big) for (let i = 0; i < t.data.length; i++) t.data[i] = Math.round(t.data[i] * 64) / 64;
    const reader = ckpt(big);
    const entries = selectPrunable(reader.tensors);
    const a = await magnitudeGlobal(reader, entries, 0.63);
    const b = await magnitudeGlobal(reader, entries, 0.63, new PruneBuffers(), undefined, { candidateCap: 0 });
    expect([a.stats.path, b.stats.path]).toEqual(['bucket', 'histogram']);
    expect(maskHash(a.mask)).toBe(maskHash(b.mask));
    expect(keptArrays(a.mask)).toEqual(referenceGlobal(big, 0.63));
    expect(maskHash((await magnitudeGlobal(reader, entries, 0.63)).mask)).toBe(maskHash(a.mask));
  });
});

describe('magnitude-global on larger models (sampled window fast path)', () => {
  /** Deterministic pseudo-normal values, quantized to create exact ties. */
  function model(sizes: number[], zeroFraction: number, seed: number): T[] {
    let x = seed;
    const rnd = () => {
      x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
      return x / 2 ** 32;
    };
    return sizes.map((n, i) => {
      const data = new Float32Array(n);
      for (let j = 0; j < n; j++) data[j] = rnd() < zeroFraction ? 0 : Math.round((rnd() + rnd() + rnd() - 1.5) * 4096) / 4096;
      return { name: `l${i}/kernel`, shape: [n / 100, 100], data };
    });
  }

  it('matches the exact paths and the sorting reference', async () => {
    const ts = model([120_000, 90_000, 60_000], 0, 1);
    const reader = ckpt(ts);
    const entries = selectPrunable(reader.tensors);
    for (const s of [0.9, 0.5, 0.02]) {
      const fast = await magnitudeGlobal(reader, entries, s);
      const exact = await magnitudeGlobal(reader, entries, s, new PruneBuffers(), undefined, { candidateCap: 0 });
      expect(fast.stats.pruned).toBe(Math.round(s * 270_000));
      expect([fast.stats.path, exact.stats.path]).toEqual(['window', 'histogram']);
      expect(maskHash((await magnitudeGlobal(reader, entries, s, new PruneBuffers(), undefined, { sample: false })).mask)).toBe(maskHash(fast.mask));
      expect(maskHash(fast.mask)).toBe(maskHash(exact.mask));
      if (s === 0.9) expect(keptArrays(fast.mask)).toEqual(referenceGlobal(ts, s));
    }
  });

  it('falls back to the exact path when the window holds too many weights (re-pruning mostly-zero models)', async () => {
    const ts = model([80_000, 80_000, 80_000, 80_000], 0.9, 2);
    const reader = ckpt(ts);
    const entries = selectPrunable(reader.tensors);
    for (const s of [0.85, 0.9, 0.93]) {
      const r = await magnitudeGlobal(reader, entries, s);
      expect(r.stats.path).toBe(s === 0.93 ? 'window' : 'histogram');
      expect(keptArrays(r.mask)).toEqual(referenceGlobal(ts, s));
    }
  });

  it('reuses an `into` mask and gives the same result as a fresh one', async () => {
    const reader = ckpt(model([100_000, 200_000], 0.3, 3));
    const buffers = new PruneBuffers();
    const a = await prune(reader, { method: 'magnitude-global', sparsity: 0.8, buffers });
    const hashA = maskHash(a.mask);
    const b = await prune(reader, { method: 'magnitude-global', sparsity: 0.6, buffers, into: a.mask });
    expect(b.mask).toBe(a.mask);
    expect(maskHash(b.mask)).toBe(maskHash((await prune(reader, { method: 'magnitude-global', sparsity: 0.6 })).mask));
    expect(maskHash(b.mask)).not.toBe(hashA);
    const c = await prune(reader, { method: 'random', sparsity: 0.6, seed: 1, into: a.mask });
    expect(maskHash(c.mask)).toBe(maskHash((await prune(reader, { method: 'random', sparsity: 0.6, seed: 1 })).mask));
  });
});

describe('magnitude-layerwise', () => {
  it('prunes exactly round(s·n) in every tensor', async () => {
    const ts = [tensor('a/kernel', [2, 3], [6, 5, 4, 3, 2, 1]), tensor('b/kernel', [5, 1], [0.1, 0.2, 0.3, 0.4, 0.5])];
    const { mask, stats } = await prune(ckpt(ts), { method: 'magnitude-layerwise', sparsity: 0.5 });
    expect(mask.tensors.map((t) => t.size - t.kept)).toEqual([3, 3]); // 3 and round(2.5) = 3
    expect(stats.pruned).toBe(6);
    expect(keptArrays(mask)).toEqual([
      [true, true, true, false, false, false],
      [false, false, false, true, true],
    ]);
  });
});

describe('random', () => {
  const ts = [tensor('a/kernel', [10, 10], Array.from({ length: 100 }, (_, i) => (i % 7 === 0 ? 0 : i + 1))), tensor('b/kernel', [5, 8], Array.from({ length: 40 }, (_, i) => -i - 1))];

  it('prunes an exact count, zeros first, deterministic per seed and sensitive to it', async () => {
    const a = await prune(ckpt(ts), { method: 'random', sparsity: 0.6, seed: 42 });
    const b = await prune(ckpt(ts), { method: 'random', sparsity: 0.6, seed: 42 });
    const c = await prune(ckpt(ts), { method: 'random', sparsity: 0.6, seed: 43 });
    expect(a.stats.pruned).toBe(84);
    expect(maskHash(a.mask)).toBe(maskHash(b.mask));
    expect(maskHash(a.mask)).not.toBe(maskHash(c.mask));
    for (let i = 0; i < 100; i += 7) expect(isKept(a.mask.tensors[0], i)).toBe(false);
  });

  it('is roughly uniform over the non-zero weights', async () => {
    const flat = [tensor('w/kernel', [100, 100], Array.from({ length: 10000 }, (_, i) => i + 1))];
    const { mask } = await prune(ckpt(flat), { method: 'random', sparsity: 0.5, seed: 7 });
    const t = mask.tensors[0];
    let firstHalf = 0;
    for (let i = 0; i < 5000; i++) firstHalf += isKept(t, i) ? 1 : 0;
    expect(t.kept).toBe(5000);
    expect(Math.abs(firstHalf - 2500)).toBeLessThan(200);
  });
});

describe('n-of-m', () => {
  it('keeps the N largest of every M along the tfjs input axis (dim rank−2)', async () => {
    // Dense [in=4, out=2]: groups are columns.
    const ts = [tensor('d/kernel', [4, 2], [1, -8, 4, 7, -3, 6, 2, 5])];
    const { mask } = await prune(ckpt(ts), { method: 'n-of-m', n: 2, m: 4, layout: 'tfjs' });
    // column 0: 1,4,-3,2 → keep 4,-3; column 1: -8,7,6,5 → keep -8,7
    expect(keptArrays(mask)).toEqual([[false, true, true, true, true, false, false, false]]);
  });

  it('groups along dim 1 for torch and keeps min(N, r) in a partial trailing group', async () => {
    // [out=2, in=5]: groups of 4 then a partial group of 1.
    const ts = [tensor('fc.weight', [2, 5], [1, 2, 3, 4, 9, 5, 5, 5, 5, 0])];
    const { mask, stats } = await prune(ckpt(ts), { method: 'n-of-m', n: 2, m: 4, layout: 'torch' });
    // row 0: 1,2,3,4 → keep 3,4; tail 9 kept. row 1: four ties → keep the last two; tail 0 kept (min(2,1)=1).
    expect(keptArrays(mask)).toEqual([[false, false, true, true, true, false, false, true, true, true]]);
    expect(stats.pruned).toBe(4);
  });

  it('every full group of a conv kernel has exactly N kept (both layouts)', async () => {
    const n = 3 * 3 * 8 * 5;
    const values = Array.from({ length: n }, (_, i) => Math.cos(i * 1.7) + (i % 3 === 0 ? 0 : 0.001 * i));
    for (const [layout, shape, axis] of [
      ['tfjs', [3, 3, 8, 5], 2],
      ['torch', [5, 8, 3, 3], 1],
    ] as const) {
      const { mask } = await prune(ckpt([tensor('c/kernel', [...shape], values)]), { method: 'n-of-m', n: 2, m: 4, layout });
      const tm = mask.tensors[0];
      const strides = shape.map((_, d) => shape.slice(d + 1).reduce((a, b) => a * b, 1));
      for (let flat = 0; flat < n; flat++) {
        const coord = Math.floor(flat / strides[axis]) % shape[axis];
        if (coord % 4 !== 0) continue;
        let kept = 0;
        for (let a = 0; a < 4; a++) kept += isKept(tm, flat + a * strides[axis]) ? 1 : 0;
        expect(kept).toBe(2);
      }
      expect(tm.kept).toBe(n / 2);
    }
  });

  it('rejects N > M, N < 1 and a missing layout', async () => {
    const r = ckpt([tensor('d/kernel', [4, 2], [1, 2, 3, 4, 5, 6, 7, 8])]);
    await expect(prune(r, { method: 'n-of-m', n: 5, m: 4, layout: 'tfjs' })).rejects.toThrow(CoreInputError);
    await expect(prune(r, { method: 'n-of-m', n: 0, m: 4, layout: 'tfjs' })).rejects.toThrow(CoreInputError);
    await expect(prune(r, { method: 'n-of-m', n: 2, m: 4 })).rejects.toThrow(/layout/);
  });
});

describe('option checks', () => {
  const r = ckpt([tensor('d/kernel', [2, 2], [1, 2, 3, 4])]);
  it('sparsity outside [0, 1) is a 422', async () => {
    for (const s of [-0.1, 1, 1.5, Number.NaN, undefined]) {
      await expect(prune(r, { method: 'magnitude-global', sparsity: s })).rejects.toMatchObject({ code: 'invalid-sparsity', status: 422 });
    }
    await expect(prune(r, { method: 'random', sparsity: 0.5, seed: -1 })).rejects.toMatchObject({ code: 'invalid-seed' });
    await expect(prune(r, { method: 'nope' as never, sparsity: 0.5 })).rejects.toMatchObject({ code: 'unknown-method' });
  });
});

describe('properties', () => {
  // Tensor sets with many ties and zeros: values drawn from a small set.
  const tensorSet = fc.array(
    fc
      .tuple(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 40 }))
      .chain(([r, c]) => fc.array(fc.constantFrom(0, -0, 0.5, -0.5, 1, 2, -3, 1e-30, 7.25), { minLength: r * c, maxLength: r * c }).map((v) => ({ r, c, v }))),
    { minLength: 1, maxLength: 4 },
  );
  const toTensors = (set: { r: number; c: number; v: number[] }[]) => set.map((s, i) => tensor(`t${i}/kernel`, [s.r, s.c], s.v));

  it('global and random prune exactly round(s·N); zeros stay zero; global matches the reference and stacks', async () => {
    await fc.assert(
      fc.asyncProperty(tensorSet, fc.double({ min: 0, max: 0.999, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true }), async (set, s1, f) => {
        const ts = toTensors(set);
        const n = ts.reduce((a, t) => a + t.data.length, 0);
        const g = await prune(ckpt(ts), { method: 'magnitude-global', sparsity: s1 });
        expect(g.stats.pruned).toBe(Math.round(s1 * n));
        expect(keptArrays(g.mask)).toEqual(referenceGlobal(ts, s1));
        const rnd = await prune(ckpt(ts), { method: 'random', sparsity: s1, seed: 3 });
        expect(rnd.stats.pruned).toBe(Math.round(s1 * n));
        // Zeros are pruned first by both.
        for (const m of [g.mask, rnd.mask]) {
          let zerosKept = 0;
          let zerosTotal = 0;
          m.tensors.forEach((tm, ti) => {
            ts[ti].data.forEach((x, i) => {
              if (x === 0) {
                zerosTotal++;
                if (isKept(tm, i)) zerosKept++;
              }
            });
          });
          expect(zerosTotal - zerosKept).toBe(Math.min(zerosTotal, Math.round(s1 * n)));
        }
        // Stacking: a higher sparsity on the pruned model prunes a superset, with the exact count.
        const s2 = s1 + (0.999 - s1) * f;
        const again = await prune(ckpt(applied(ts, g.mask)), { method: 'magnitude-global', sparsity: s2 });
        expect(again.stats.pruned).toBe(Math.round(s2 * n));
        again.mask.tensors.forEach((tm, ti) => {
          for (let i = 0; i < tm.size; i++) if (!isKept(g.mask.tensors[ti], i)) expect(isKept(tm, i)).toBe(false);
        });
        const lw = await prune(ckpt(ts), { method: 'magnitude-layerwise', sparsity: s1 });
        for (const tm of lw.mask.tensors) expect(tm.size - tm.kept).toBe(Math.round(s1 * tm.size));
      }),
      { numRuns: 150 },
    );
  });
});
