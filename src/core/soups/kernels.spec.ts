import { describe, expect, it } from 'vitest';
import { Xoshiro128 } from '../random.js';
import { createMemory, jsKernels, type Kernels, TABLE_BYTES, TABLE_ENTRY_BYTES, wasmKernels, writeLaneTable } from './kernels.js';

const rng = new Xoshiro128(7);
const SPECIALS = [0, -0, Number.NaN, Number.POSITIVE_INFINITY, -1e-45, 1.4e-45, 3.4e38, -2.5];

function setup() {
  const memory = createMemory(1 << 20);
  writeLaneTable(memory.buffer);
  const wasm = wasmKernels(memory);
  const js = jsKernels(() => memory.buffer);
  return { memory, wasm, js };
}

/** Float32 values with zeros, specials and ordinary numbers mixed. */
function fill(view: Float32Array): void {
  for (let i = 0; i < view.length; i++) {
    const r = rng.uniform();
    view[i] = r < 0.3 ? 0 : r < 0.35 ? SPECIALS[i % SPECIALS.length] : (rng.uniform() - 0.5) * 8;
  }
}

const bitsOf = (f: Float32Array) => Array.from(new Uint32Array(f.buffer.slice(f.byteOffset, f.byteOffset + f.byteLength)));

describe('merge kernels', () => {
  it('the hand-assembled module validates and instantiates (WebAssembly SIMD is present here)', () => {
    expect(setup().wasm).not.toBeNull();
  });

  it('wasm and JS kernels agree bit for bit, tails and specials included', () => {
    const { memory, wasm, js } = setup();
    const X = TABLE_BYTES;
    const Y = X + 8192;
    const ACC = Y + 8192;
    const BITS = ACC + 16384;
    const OUT = BITS + 1024;
    const TABLE = OUT + 8192;
    const table = new DataView(memory.buffer, TABLE, 2 * TABLE_ENTRY_BYTES);
    table.setInt32(0, X, true);
    table.setFloat64(8, 0.3, true);
    table.setInt32(TABLE_ENTRY_BYTES, Y, true);
    table.setFloat64(TABLE_ENTRY_BYTES + 8, 0.7, true);
    const noNaN = (b: number) => ((b & 0x7f800000) === 0x7f800000 && b & 0x7fffff ? -1 : b);
    const outBits = (n: number) => bitsOf(new Float32Array(memory.buffer, OUT, n)).map(noNaN);
    for (const n of [0, 1, 7, 8, 9, 31, 64, 65, 257, 1000]) {
      fill(new Float32Array(memory.buffer, X, 1024));
      fill(new Float32Array(memory.buffer, Y, 1024));
      const results: { acc: number[]; bits: number[]; out: number[]; masked: number[]; fused: number[]; fusedMasked: number[]; derived: number[] }[] = [];
      for (const k of [wasm!, js] as Kernels[]) {
        new Uint8Array(memory.buffer, BITS, 256).fill(0);
        k.accSet(ACC, X, n, 0.3);
        k.accAdd(ACC, Y, n, 0.7);
        k.impliedBits(BITS, X, n);
        const acc = Array.from(new Float64Array(memory.buffer, ACC, n), (v) => (Number.isNaN(v) ? 'NaN' : v)) as number[];
        const bits = Array.from(new Uint8Array(memory.buffer, BITS, (n + 7) >> 3));
        k.finish(OUT, ACC, n);
        const out = outBits(n);
        k.finishMasked(OUT, ACC, n, BITS);
        const masked = outBits(n);
        k.mean(OUT, TABLE, 2, n);
        const fused = outBits(n);
        k.meanMasked(OUT, TABLE, 2, n, BITS);
        const fusedMasked = outBits(n);
        k.meanDerived(OUT, TABLE, 2, n);
        const derived = outBits(n);
        results.push({ acc, bits, out, masked, fused, fusedMasked, derived });
      }
      expect(results[0]).toEqual(results[1]);
      // The fused pass does the same operations in the same order as accumulate-then-finish.
      expect(results[0].fused).toEqual(results[0].out);
      expect(results[0].fusedMasked).toEqual(results[0].masked);
      // BITS hold X's zero pattern (impliedBits above): deriving it in the pass gives the same.
      expect(results[0].derived).toEqual(results[0].masked);
    }
  });

  it('finishMasked writes exactly n values and +0 at every pruned position (even where the sum is -0)', () => {
    const { memory, wasm } = setup();
    const ACC = TABLE_BYTES;
    const BITS = ACC + 1024;
    const OUT = BITS + 64;
    const n = 13;
    const acc = new Float64Array(memory.buffer, ACC, 16);
    for (let i = 0; i < 16; i++) acc[i] = i % 2 ? -0 : i + 0.5;
    const bits = new Uint8Array(memory.buffer, BITS, 2);
    bits[0] = 0b10100101;
    bits[1] = 0b00010011;
    const out = new Float32Array(memory.buffer, OUT, 16);
    out.fill(99);
    wasm!.finishMasked(OUT, ACC, n, BITS);
    const kept = (i: number) => (bits[i >> 3] >> (i & 7)) & 1;
    for (let i = 0; i < n; i++) {
      if (kept(i)) expect(Object.is(out[i], acc[i] === 0 ? acc[i] : Math.fround(acc[i]))).toBe(true);
      else expect(Object.is(out[i], 0)).toBe(true);
    }
    expect(Array.from(out.subarray(n))).toEqual([99, 99, 99]);
  });

  it('impliedBits marks ±0 pruned and NaN kept, LSB first', () => {
    const { memory, wasm } = setup();
    const X = TABLE_BYTES;
    const BITS = X + 64;
    new Float32Array(memory.buffer, X, 8).set([1, 0, -0, Number.NaN, 0, 0, 2, 0]);
    wasm!.impliedBits(BITS, X, 8);
    expect(new Uint8Array(memory.buffer, BITS, 1)[0]).toBe(0b01001001);
  });

  it('the SIMD path tolerates unaligned float32 input', () => {
    const { memory, wasm } = setup();
    const X = TABLE_BYTES + 3;
    const ACC = TABLE_BYTES + 1024;
    const values = Float32Array.from({ length: 20 }, (_, i) => i - 7.25);
    new Uint8Array(memory.buffer, X, 80).set(new Uint8Array(values.buffer));
    wasm!.accSet(ACC, X, 20, 0.5);
    expect(Array.from(new Float64Array(memory.buffer, ACC, 20))).toEqual(Array.from(values, (v) => 0.5 * v));
  });
});
