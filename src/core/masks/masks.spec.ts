import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryCheckpoint } from '../checkpoint/memory.js';
import { CoreInputError } from '../errors.js';
import { prune } from '../pruning/methods.js';
import { parseMask, serializeMask } from './codec.js';
import { diffMasks, maskHash } from './compare.js';
import { impliedMask } from './implied.js';
import { allocateMask, applyMask, checkMaskFits, countRevived, fillKept, isKept, type Mask, summarizeMask } from './mask.js';
import { parseSparse, SparseCheckpoint, sparseExportSize, writeSparse } from './sparse.js';

/** A mask from explicit kept flags. */
function maskOf(tensors: { name: string; shape: number[]; kept: boolean[] }[]): Mask {
  const mask = allocateMask(tensors);
  for (const [ti, t] of tensors.entries()) {
    const tm = mask.tensors[ti];
    t.kept.forEach((k, i) => {
      if (k) tm.bits[i >> 3] |= 1 << (i & 7);
    });
    tm.kept = t.kept.filter(Boolean).length;
  }
  return mask;
}

const pattern = (n: number, f: (i: number) => boolean) => Array.from({ length: n }, (_, i) => f(i));

describe('mask basics', () => {
  it('packs LSB-first: element i is bit i&7 of byte i>>3, padding bits zero', () => {
    const m = maskOf([{ name: 'w', shape: [2, 5], kept: pattern(10, (i) => i === 0 || i === 3 || i === 9) }]);
    expect([...m.tensors[0].bits]).toEqual([0b00001001, 0b00000010]);
    fillKept(m.tensors[0]);
    expect([...m.tensors[0].bits]).toEqual([0xff, 0b11]);
    expect(m.tensors[0].kept).toBe(10);
  });

  it('summarizes per-tensor and overall sparsity', () => {
    const m = maskOf([
      { name: 'a', shape: [4], kept: [true, false, false, false] },
      { name: 'b', shape: [2, 2], kept: [true, true, true, false] },
    ]);
    const s = summarizeMask(m);
    expect(s).toMatchObject({ size: 8, kept: 4, pruned: 4, sparsity: 0.5 });
    expect(s.tensors.map((t) => t.sparsity)).toEqual([0.75, 0.25]);
  });

  it('applyMask zeroes exactly the pruned positions (fast paths and tail)', () => {
    const n = 8 * 5 + 3;
    const kept = pattern(n, (i) => (i < 8 ? true : i < 16 ? false : i % 3 === 0));
    const m = maskOf([{ name: 'w', shape: [n], kept }]);
    const data = Float32Array.from({ length: n }, (_, i) => i + 1);
    // Pruned NaN and -0 become +0 too.
    data[9] = Number.NaN;
    data[17] = -0;
    applyMask(data, m.tensors[0]);
    expect(Array.from(data)).toEqual(kept.map((k, i) => (k ? i + 1 : 0)));
    expect(countRevived(data, m.tensors[0])).toBe(0);
    data[9] = 0.5;
    expect(countRevived(data, m.tensors[0])).toBe(1);
    expect(() => applyMask(new Float32Array(n - 1), m.tensors[0])).toThrow(CoreInputError);
  });

  it('checkMaskFits reports missing tensors and shape differences', () => {
    const m = maskOf([
      { name: 'a', shape: [2, 2], kept: [true, true, true, true] },
      { name: 'b', shape: [4], kept: [true, true, true, true] },
    ]);
    expect(() => checkMaskFits(m, [{ name: 'a', shape: [2, 2] }, { name: 'b', shape: [4] }])).not.toThrow();
    expect(() => checkMaskFits(m, [{ name: 'a', shape: [4] }])).toThrow(/lacks 1 .*b.*shapes differ for a/);
  });
});

describe('hash and diff', () => {
  const a = () =>
    maskOf([
      { name: 'x', shape: [3, 3], kept: pattern(9, (i) => i % 2 === 0) },
      { name: 'y', shape: [5], kept: pattern(5, (i) => i > 1) },
    ]);

  it('equal masks hash equal regardless of tensor order; one bit or a shape changes it', () => {
    const m = a();
    const reordered: Mask = { tensors: [...m.tensors].reverse() };
    expect(maskHash(reordered)).toBe(maskHash(m));
    expect(maskHash(m)).toMatch(/^[0-9a-f]{64}$/);
    const flipped = a();
    flipped.tensors[1].bits[0] ^= 1;
    expect(maskHash(flipped)).not.toBe(maskHash(m));
    const reshaped = maskOf([
      { name: 'x', shape: [9], kept: pattern(9, (i) => i % 2 === 0) },
      { name: 'y', shape: [5], kept: pattern(5, (i) => i > 1) },
    ]);
    expect(maskHash(reshaped)).not.toBe(maskHash(m));
  });

  it('diff counts Hamming distance per tensor, and reports missing, extra and reshaped tensors', () => {
    const b = maskOf([
      { name: 'x', shape: [3, 3], kept: pattern(9, (i) => i % 2 === 0 || i === 1 || i === 3) },
      { name: 'y', shape: [5], kept: pattern(5, (i) => i > 1 && i !== 4) },
    ]);
    const d = diffMasks(a(), b);
    expect(d.equal).toBe(false);
    expect(d.tensors).toEqual([
      { name: 'x', differing: true, hamming: 2, keptOnlyInA: 0, keptOnlyInB: 2 },
      { name: 'y', differing: true, hamming: 1, keptOnlyInA: 1, keptOnlyInB: 0 },
    ]);
    expect(d.hamming).toBe(3);
    expect(diffMasks(a(), a()).equal).toBe(true);
    const c = maskOf([
      { name: 'x', shape: [9], kept: pattern(9, () => true) },
      { name: 'z', shape: [1], kept: [true] },
    ]);
    const dc = diffMasks(a(), c);
    expect(dc).toMatchObject({ equal: false, missing: ['y'], extra: ['z'], shapeDifferences: [{ name: 'x', a: [3, 3], b: [9] }], tensors: [] });
  });
});

describe('mask file', () => {
  const m = maskOf([
    { name: 'conv1/kernel', shape: [3, 3, 1, 2], kept: pattern(18, (i) => i % 3 !== 0) },
    { name: 'fc.weight', shape: [7], kept: pattern(7, (i) => i === 6) },
    { name: 'empty', shape: [0, 4], kept: [] },
  ]);

  it('round-trips, with the documented header', () => {
    const bytes = serializeMask(m);
    expect(String.fromCharCode(...bytes.subarray(0, 4))).toBe('SPMK');
    const back = parseMask(bytes);
    expect(maskHash(back)).toBe(maskHash(m));
    expect(back.tensors.map((t) => [t.name, t.shape, t.kept])).toEqual(m.tensors.map((t) => [t.name, t.shape, t.kept]));
    // Works from an unaligned slice of a bigger buffer too.
    const shifted = new Uint8Array(bytes.length + 3);
    shifted.set(bytes, 3);
    expect(maskHash(parseMask(shifted.subarray(3)))).toBe(maskHash(m));
  });

  it('rejects malformed files with a 400', () => {
    const good = serializeMask(m);
    const cases: Uint8Array[] = [good.subarray(0, 11), good.subarray(0, good.length - 1), new Uint8Array([...good, 0])];
    const badPadding = good.slice();
    badPadding[badPadding.length - 1] |= 0x80; // fc.weight has 7 bits; 'empty' has none, so the last byte is fc's
    cases.push(badPadding);
    const badKept = good.slice();
    badKept[badKept.length - 1] ^= 0x01;
    cases.push(badKept);
    for (const c of cases) {
      try {
        parseMask(c);
        expect.unreachable();
      } catch (e) {
        expect(e).toBeInstanceOf(CoreInputError);
        expect((e as CoreInputError).status).toBe(400);
      }
    }
  });

  it('fuzz: random and mutated bytes either parse to a valid mask or throw CoreInputError', () => {
    const good = serializeMask(m);
    const check = (bytes: Uint8Array) => {
      try {
        const back = parseMask(bytes);
        // Anything that parses re-serializes to the same bytes (the format is canonical).
        expect(serializeMask(back)).toEqual(bytes);
      } catch (e) {
        if (!(e instanceof CoreInputError)) throw e;
      }
    };
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (b) => check(b)), { numRuns: 500 });
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(good.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }), fc.nat(good.length), (edits, cut) => {
        const b = good.slice();
        for (const [p, v] of edits) b[p] = v;
        check(b);
        check(b.subarray(0, cut));
      }),
      { numRuns: 2000 },
    );
  });
});

describe('implied mask', () => {
  it('is the exact-zero pattern of the prunable tensors; equals the pruning mask once applied', async () => {
    const w = Float32Array.from([0, -0, 1, Number.NaN, 2, 0, 3, 4]);
    const reader = new MemoryCheckpoint([
      { name: 'k/kernel', shape: [2, 4], data: w },
      { name: 'k/bias', shape: [4], data: new Float32Array(4) },
    ]);
    const m = await impliedMask(reader);
    expect(m.tensors.map((t) => t.name)).toEqual(['k/kernel']);
    expect(pattern(8, (i) => isKept(m.tensors[0], i))).toEqual([false, false, true, true, true, false, true, true]);
    expect(m.tensors[0].kept).toBe(5);

    const data = Float32Array.from({ length: 50 }, (_, i) => Math.sin(i) + 1.5);
    const pr = await prune(new MemoryCheckpoint([{ name: 'd/kernel', shape: [5, 10], data }]), { method: 'magnitude-global', sparsity: 0.7 });
    applyMask(data, pr.mask.tensors[0]);
    const implied = await impliedMask(new MemoryCheckpoint([{ name: 'd/kernel', shape: [5, 10], data }]));
    expect(maskHash(implied)).toBe(maskHash(pr.mask));
  });
});

describe('sparse export', () => {
  const kernel = Float32Array.from({ length: 60 }, (_, i) => (i % 4 === 0 ? 0 : i - 30.5));
  const tensors = [
    { name: 'c/kernel', shape: [3, 4, 5], data: kernel },
    { name: 'c/bias', shape: [5], data: Float32Array.from([1, 2, 3, 4, 5]) },
    { name: 'empty/kernel', shape: [0, 3], data: new Float32Array(0) },
  ];

  async function exportBytes(reader: MemoryCheckpoint, mask?: Mask): Promise<Uint8Array> {
    const chunks: Uint8Array[] = [];
    const n = await writeSparse(reader, async (c) => void chunks.push(c), { mask, rule: { include: ['*kernel'] } });
    const out = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
    let o = 0;
    for (const c of chunks) {
      out.set(c, o);
      o += c.length;
    }
    expect(out.length).toBe(n);
    return out;
  }

  it('round-trips a model through its implied mask, at the computed size', async () => {
    const reader = new MemoryCheckpoint(tensors);
    const bytes = await exportBytes(reader);
    expect(String.fromCharCode(...bytes.subarray(0, 4))).toBe('SPSW');
    const sparse = new SparseCheckpoint(bytes);
    expect(sparse.tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual(tensors.map((t) => [t.name, 'F32', t.shape]));
    for (const t of tensors) expect(await sparse.readFloat32(t.name)).toEqual(t.data);
    expect(sparse.mask.tensors[0].kept).toBe(45);
    const size = sparseExportSize(reader.tensors, await impliedMask(reader, { include: ['*kernel'] }));
    expect(size.sparseBytes).toBe(bytes.length);
    expect(size.denseBytes).toBe(65 * 4);
  });

  it('with a pruning mask: values at pruned positions are dropped, and 90 % sparse is much smaller than dense', async () => {
    const data = Float32Array.from({ length: 4000 }, (_, i) => Math.cos(i * 0.37));
    const reader = new MemoryCheckpoint([{ name: 'w/kernel', shape: [40, 100], data }]);
    const { mask } = await prune(reader, { method: 'magnitude-global', sparsity: 0.9 });
    const bytes = await exportBytes(reader, mask);
    const sparse = parseSparse(bytes);
    const expected = data.slice();
    applyMask(expected, mask.tensors[0]);
    expect(await sparse.readFloat32('w/kernel', new Float32Array(5000))).toEqual(expected);
    expect(maskHash(sparse.mask)).toBe(maskHash(mask));
    const size = sparseExportSize(reader.tensors, mask);
    // 500 bits-bytes + 400 values · 4 + header, against 16000 dense bytes.
    expect(size.sparseBytes).toBe(bytes.length);
    expect(size.ratio).toBeLessThan(0.16);
  });

  it('fuzz: mutated exports either parse or throw CoreInputError', async () => {
    const good = await exportBytes(new MemoryCheckpoint(tensors));
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(good.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 3 }), fc.nat(good.length), (edits, cut) => {
        const b = good.slice();
        for (const [p, v] of edits) b[p] = v;
        for (const x of [b, b.subarray(0, cut)]) {
          try {
            new SparseCheckpoint(x);
          } catch (e) {
            if (!(e instanceof CoreInputError)) throw e;
          }
        }
      }),
      { numRuns: 1500 },
    );
  });
});
