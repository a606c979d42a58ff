import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { zipSync } from 'fflate';
import { describe, expect, it } from 'vitest';
import { CoreInputError } from '../errors.js';
import { crc32, encodeNpy, parseNpy, parseNpz } from './npz.js';

const FIX = join(import.meta.dirname, '../../../test/fixtures/data');
const LIMITS = { maxEntryBytes: 1 << 20, maxTotalBytes: 1 << 21, maxEntries: 16 };

function inputError(f: () => unknown, pattern?: RegExp): CoreInputError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(CoreInputError);
    if (pattern) expect((e as Error).message).toMatch(pattern);
    return e as CoreInputError;
  }
  throw new Error('expected a CoreInputError');
}

function npyWithHeader(header: string, body: Uint8Array = new Uint8Array(0)): Uint8Array {
  const h = header + ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const out = new Uint8Array(10 + h.length + body.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, h.length & 0xff, h.length >> 8]);
  for (let i = 0; i < h.length; i++) out[10 + i] = h.charCodeAt(i);
  out.set(body, 10 + h.length);
  return out;
}

describe('npy', () => {
  it('round-trips the dtypes datasets use', () => {
    const a = parseNpy(encodeNpy('float32', [2, 3], [1, 2, 3, 4, 5, 6.5]));
    expect(a).toMatchObject({ dtype: 'float32', shape: [2, 3] });
    expect(Array.from(a.data as Float32Array)).toEqual([1, 2, 3, 4, 5, 6.5]);
    const l = parseNpy(encodeNpy('int64', [3], [0, 9, 2]));
    expect(l.dtype).toBe('int64');
    expect(Array.from(l.data as BigInt64Array)).toEqual([0n, 9n, 2n]);
    expect(parseNpy(encodeNpy('uint8', [1], [200])).data[0]).toBe(200);
  });

  it('rejects bad headers, dtypes, orders and lengths by name', () => {
    inputError(() => parseNpy(new Uint8Array(5)), /too short/);
    inputError(() => parseNpy(new Uint8Array(20)), /bad magic/);
    inputError(() => parseNpy(npyWithHeader("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", new Uint8Array(8))), /unsupported dtype '<c8'/);
    inputError(() => parseNpy(npyWithHeader("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", new Uint8Array(4))), /big-endian/);
    inputError(() => parseNpy(npyWithHeader("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", new Uint8Array(16))), /Fortran/);
    inputError(() => parseNpy(npyWithHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", new Uint8Array(15))), /needs more than|length mismatch/);
    inputError(() => parseNpy(npyWithHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", new Uint8Array(8))), /needs 4 data bytes, got 8/);
    inputError(() => parseNpy(npyWithHeader("{'descr': '<f4', 'shape': (1,), }", new Uint8Array(4))), /required/);
    inputError(() => parseNpy(npyWithHeader("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,), }")), /repeated key/);
    inputError(() => parseNpy(npyWithHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }; import os")), /trailing/);
    // A declared shape far beyond the bytes present fails fast, without allocating.
    inputError(() => parseNpy(npyWithHeader("{'descr': '<f8', 'fortran_order': False, 'shape': (99999999, 99999999, 99999999), }")), /needs more than the 0 data bytes/);
    // Fortran order with one non-trivial dimension is the same layout, so it is accepted.
    const one = parseNpy(npyWithHeader("{'descr': '|u1', 'fortran_order': True, 'shape': (3, 1), }", new Uint8Array([1, 2, 3])));
    expect(Array.from(one.data as Uint8Array)).toEqual([1, 2, 3]);
  });
});

describe('npz (zip) reader', () => {
  it('reads numpy-written np.savez and np.savez_compressed files', () => {
    const a = parseNpz(readFileSync(join(FIX, 'uint8-images.npz')), ['x', 'y'], LIMITS);
    expect(a.ignored).toEqual(['extra.npy']);
    const x = a.arrays.get('x')!;
    expect(x).toMatchObject({ dtype: 'uint8', shape: [21, 4, 4] });
    expect((x.data as Uint8Array)[16 * 20 + 4 * 3 + 2]).toBe((16 * 20 + 14) % 256);
    expect(a.arrays.get('y')!.dtype).toBe('int64');
    const b = parseNpz(readFileSync(join(FIX, 'float-vectors-with-test.npz')), ['x', 'y', 'x_test', 'y_test'], LIMITS);
    expect(b.arrays.get('x_test')).toMatchObject({ dtype: 'float32', shape: [8, 5] });
    expect((b.arrays.get('x_test')!.data as Float32Array)[5 * 7 + 4]).toBeCloseTo(-7.4, 5);
  });

  it('computes the standard CRC-32', () => {
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
  });

  it('detects corruption, lying sizes and oversize entries', () => {
    const npy = encodeNpy('uint8', [4096], new Array(4096).fill(0));
    const z = zipSync({ 'x.npy': npy }, { level: 6 });
    // Flip a byte of the compressed data: inflate error or CRC mismatch, never a silent wrong array.
    const bad = z.slice();
    bad[30 + 'x.npy'.length + 20] ^= 0xff;
    inputError(() => parseNpz(bad, ['x'], LIMITS), /x\.npy/);
    // Declare a smaller uncompressed size in the central directory than the data inflates to.
    const lie = z.slice();
    const v = new DataView(lie.buffer);
    const cd = v.getUint32(lie.length - 22 + 16, true);
    v.setUint32(cd + 24, 100, true);
    inputError(() => parseNpz(lie, ['x'], LIMITS), /inflated to more than.*declared 100/);
    // A declared size over the limit is refused before inflating (413).
    const e = inputError(() => parseNpz(z, ['x'], { ...LIMITS, maxEntryBytes: 1000 }), /uncompressed \(at most 1000\)/);
    expect(e.status).toBe(413);
    inputError(() => parseNpz(new Uint8Array(100), ['x'], LIMITS), /not a zip/);
    const dup = zipSync({ 'a.npy': npy, 'b.npy': npy }, { level: 0 });
    inputError(() => parseNpz(dup, ['a', 'b'], { ...LIMITS, maxEntries: 1 }), /too many entries/);
  });

  it('a zip bomb (16 MiB of zeros declared as 1 KiB) is stopped, not inflated into memory', () => {
    const bomb = zipSync({ 'x.npy': new Uint8Array(16 << 20) }, { level: 9 });
    const v = new DataView(bomb.buffer);
    const cd = v.getUint32(bomb.length - 22 + 16, true);
    v.setUint32(cd + 24, 1024, true);
    // The refusal names the limit it hit while inflating: the entry was never inflated whole.
    inputError(() => parseNpz(bomb, ['x'], LIMITS), /inflated to more than/);
  });

  it('fuzz: random and mutated archives parse or throw CoreInputError', () => {
    const valid = zipSync({ 'x.npy': encodeNpy('float32', [3, 2], [1, 2, 3, 4, 5, 6]), 'y.npy': encodeNpy('int64', [3], [0, 1, 0]) }, { level: 6 });
    const stored = zipSync({ 'x.npy': encodeNpy('uint8', [2, 2], [1, 2, 3, 4]) }, { level: 0 });
    const check = (b: Uint8Array) => {
      try {
        const { arrays } = parseNpz(b, ['x', 'y'], LIMITS);
        for (const a of arrays.values()) expect(a.data.length).toBe(a.shape.reduce((p, q) => p * q, 1));
      } catch (e) {
        if (!(e instanceof CoreInputError)) throw e;
      }
    };
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), check), { numRuns: 1000 });
    for (const base of [valid, stored]) {
      const mutated = fc
        .tuple(
          fc.array(fc.tuple(fc.nat(base.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }),
          fc.option(fc.nat(base.length), { freq: 4 }),
        )
        .map(([edits, cut]) => {
          // Mostly byte edits; some cases also truncate the archive.
          const b = base.slice(0, cut ?? base.length);
          for (const [at, val] of edits) if (at < b.length) b[at] = val;
          return b;
        });
      fc.assert(fc.property(mutated, check), { numRuns: 1500 });
    }
    // Mutated npy headers inside archives with valid CRCs, so the npy parser itself is exercised.
    const npy = encodeNpy('float32', [2, 2], [1, 2, 3, 4]);
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(npy.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 3 }), (edits) => {
        const b = npy.slice();
        for (const [at, val] of edits) b[at] = val;
        check(zipSync({ 'x.npy': b }, { level: 1 }));
      }),
      { numRuns: 1500 },
    );
  });
});
