import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { DType } from '../tensors.js';
import {
  bf16BitsToF32Bits,
  decodeFloat32,
  encodeFromFloat32,
  f16BitsToF32Bits,
  f16ToF32,
  f32BitsToBf16Bits,
  f32BitsToF16Bits,
  f32ToBf16,
  f32ToF16,
  f64ToF32,
  float32Bits,
  float32FromBits,
} from './dtype.js';

const FIXTURES = new URL('../../../test/fixtures/checkpoint/', import.meta.url);

/** The IEEE half definition written out, independent of the bit manipulation under test. */
function halfValue(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return mant ? Number.NaN : sign * Infinity;
  if (exp === 0) return sign * mant * 2 ** -24;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

describe('F16 <-> F32', () => {
  it('decodes all 65536 half patterns exactly and encodes them back bit for bit (NaN payloads included)', () => {
    for (let h = 0; h < 65536; h++) {
      const bits = f16BitsToF32Bits(h);
      const v = float32FromBits(bits);
      const want = halfValue(h);
      if (Number.isNaN(want)) {
        expect(Number.isNaN(v)).toBe(true);
        expect(bits >>> 31).toBe(h >>> 15);
      } else if (!Object.is(v, want)) {
        throw new Error(`half ${h.toString(16)} decoded to ${v}, expected ${want}`);
      }
      if (f32BitsToF16Bits(bits) !== h) throw new Error(`half ${h.toString(16)} did not survive the round trip`);
    }
  });

  it("rounds float32 to half exactly like Python's struct 'e' (round half to even, overflow to Inf)", () => {
    const lines = readFileSync(new URL('f16-vectors.txt', FIXTURES), 'utf8').trim().split('\n');
    expect(lines.length).toBeGreaterThan(5000);
    for (const line of lines) {
      const [f, h] = line.split(' ').map((s) => Number.parseInt(s, 16));
      if (f32BitsToF16Bits(f) !== h) throw new Error(`f32 ${line.split(' ')[0]} -> ${f32BitsToF16Bits(f).toString(16)}, Python says ${line.split(' ')[1]}`);
    }
  });

  it('sends each midpoint between neighbouring halves to the even one, and one float32 ulp off to the nearer', () => {
    // One float32 ulp towards larger (dir 1) or smaller (-1) magnitude.
    const next = (x: number, dir: 1 | -1) => float32FromBits(float32Bits(x) + dir);
    for (let h = 0; h < 0x7bff; h++) {
      for (const sign of [0, 0x8000]) {
        const lo = halfValue(h | sign);
        const hi = halfValue((h + 1) | sign);
        const mid = (lo + hi) / 2; // exact in float32: 12 significant bits at most
        expect(Math.fround(mid)).toBe(mid);
        const even = (h & 1) === 0 ? h : h + 1;
        if (f32ToF16(mid) !== (even | sign)) throw new Error(`midpoint after ${h.toString(16)} rounded wrong`);
        if (f32ToF16(next(mid, -1)) !== (h | sign)) throw new Error(`below midpoint ${h}`);
        if (f32ToF16(next(mid, 1)) !== ((h + 1) | sign)) throw new Error(`above midpoint ${h}`);
      }
    }
    // Beyond the largest half plus half an ulp: Inf; just below: the largest half.
    expect(f32ToF16(65520)).toBe(0x7c00);
    expect(f32ToF16(65519.996)).toBe(0x7bff);
    expect(f32ToF16(-1e30)).toBe(0xfc00);
    expect(f32ToF16(2 ** -25)).toBe(0); // tie with zero: even
    expect(f32ToF16(Math.fround(2 ** -25 * 1.0001))).toBe(1);
    expect(f32ToF16(-0)).toBe(0x8000);
    expect(f32ToF16(1e-40)).toBe(0);
    expect(Number.isNaN(f16ToF32(f32ToF16(Number.NaN)))).toBe(true);
    // A NaN whose payload lies only in the low float32 bits must stay a NaN, not become Inf.
    expect(f32BitsToF16Bits(0x7f800001)).toBe(0x7e00);
  });
});

describe('BF16 <-> F32', () => {
  it('round-trips all 65536 bfloat16 patterns bit for bit', () => {
    for (let h = 0; h < 65536; h++) {
      if (f32BitsToBf16Bits(bf16BitsToF32Bits(h)) !== h) throw new Error(`bf16 ${h.toString(16)} did not survive`);
    }
  });

  it('rounds float32 to the nearest bfloat16, ties to even, NaN stays NaN', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), (bits) => {
        const x = float32FromBits(bits);
        const got = f32BitsToBf16Bits(bits);
        if (Number.isNaN(x)) return Number.isNaN(float32FromBits(got << 16));
        // The two candidates: truncation and the next bfloat16 away from zero.
        const lo = bits >>> 16;
        const hi = lo + 1;
        const mag = (b: number) => ((b & 0x7fff) === 0x7f80 ? 2 ** 128 : Math.abs(float32FromBits(b << 16)));
        const dLo = Math.abs(Math.abs(x) - mag(lo));
        const dHi = Math.abs(mag(hi) - Math.abs(x));
        const want = dLo < dHi ? lo : dHi < dLo ? hi : (lo & 1) === 0 ? lo : hi;
        return got === want;
      }),
      { numRuns: 20_000 },
    );
    expect(f32ToBf16(1)).toBe(0x3f80);
    expect(bf16ToF32Checked(0xc020)).toBe(-2.5);
    expect(f32ToBf16(3.4028234663852886e38)).toBe(0x7f80); // rounds up to Inf
    expect(f32BitsToBf16Bits(0x7f800001)).toBe(0x7fc0);
  });
});

function bf16ToF32Checked(h: number): number {
  return float32FromBits(bf16BitsToF32Bits(h));
}

describe('F64 -> F32', () => {
  it('rounds to nearest even', () => {
    expect(f64ToF32(1 + 2 ** -24)).toBe(1);
    expect(f64ToF32(1 + 3 * 2 ** -24)).toBe(1 + 2 ** -22);
    expect(f64ToF32(1e300)).toBe(Infinity);
    expect(f64ToF32(1e-50)).toBe(0);
  });
});

const FLOAT_DTYPES: DType[] = ['F32', 'F16', 'BF16', 'F64'];
const SIZE: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F64: 8 };

describe('decodeFloat32 / encodeFromFloat32', () => {
  it('round-trips float32 data through every float dtype at every byte misalignment', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...FLOAT_DTYPES),
        fc.array(fc.float({ noDefaultInfinity: false }), { maxLength: 40 }),
        fc.integer({ min: 0, max: 7 }),
        (dtype, values, shift) => {
          const data = new Float32Array(values);
          const encoded = encodeFromFloat32(dtype, data);
          // Same bytes at an odd offset must decode to the same values.
          const backing = new Uint8Array(encoded.byteLength + 8);
          backing.set(encoded, shift);
          const unaligned = backing.subarray(shift, shift + encoded.byteLength);
          const a = decodeFloat32(dtype, encoded);
          const b = decodeFloat32(dtype, unaligned);
          expect(Array.from(new Uint32Array(b.buffer, b.byteOffset, b.length))).toEqual(Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length)));
          // Each value equals the scalar conversion of the original.
          for (let i = 0; i < data.length; i++) {
            const x = data[i];
            const want = dtype === 'F16' ? f16ToF32(f32ToF16(x)) : dtype === 'BF16' ? bf16ToF32Checked(f32ToBf16(x)) : x;
            if (!Object.is(a[i], want) && !(Number.isNaN(want) && Number.isNaN(a[i]))) return false;
          }
          // Encoding into an unaligned output gives the same bytes.
          const outBacking = new Uint8Array(encoded.byteLength + 8);
          const out = encodeFromFloat32(dtype, data, outBacking.subarray(shift));
          expect(Array.from(out)).toEqual(Array.from(encoded));
          expect(out.byteLength).toBe(data.length * SIZE[dtype]);
          return true;
        },
      ),
      { numRuns: 400 },
    );
  });

  it('reuses the caller buffers when they are large enough', () => {
    const into = new Float32Array(10);
    const res = decodeFloat32('F16', new Uint8Array([0x00, 0x3c, 0x00, 0xc0]), into);
    expect(res.buffer).toBe(into.buffer);
    expect(Array.from(res)).toEqual([1, -2]);
    const small = new Float32Array(1);
    expect(decodeFloat32('F16', new Uint8Array(4), small).buffer).not.toBe(small.buffer);
    const outBytes = new Uint8Array(64);
    expect(encodeFromFloat32('BF16', new Float32Array([1]), outBytes).buffer).toBe(outBytes.buffer);
  });

  it('decodes F64 by rounding to float32 and integers by value', () => {
    const f64 = new Uint8Array(new Float64Array([0.1, -1e300]).buffer);
    expect(Array.from(decodeFloat32('F64', f64))).toEqual([Math.fround(0.1), -Infinity]);
    const le = (arr: ArrayBufferView) => new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
    expect(Array.from(decodeFloat32('I8', le(new Int8Array([-128, 5]))))).toEqual([-128, 5]);
    expect(Array.from(decodeFloat32('U16', le(new Uint16Array([65535]))))).toEqual([65535]);
    expect(Array.from(decodeFloat32('I32', le(new Int32Array([-7]))))).toEqual([-7]);
    expect(Array.from(decodeFloat32('I64', le(new BigInt64Array([-(2n ** 40n)]))))).toEqual([-(2 ** 40)]);
    expect(Array.from(decodeFloat32('BOOL', new Uint8Array([1, 0])))).toEqual([1, 0]);
  });

  it('refuses byte counts that are not whole elements and non-float targets', () => {
    expect(() => decodeFloat32('F32', new Uint8Array(3))).toThrow(/whole number/);
    expect(() => encodeFromFloat32('I32', new Float32Array(1))).toThrow(/only float dtypes/);
  });
});
