import * as tf from '@tensorflow/tfjs';
import fc from 'fast-check';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { wasmApi } from '../wasm-bytes.js';
import { initBackend } from './backend.js';
import { enableRelaxedSimd, type GemmExports, gemmAvailable, gemmInternals, gemmModule, MR, NR, relaxedSimdAvailable } from './gemm.js';
import { setWasmKernels } from './kernel-set.js';

/** Seeded values: integers in [−4, 4] (every product and sum exact in float32) or uniform in [−0.5, 0.5). */
function values(n: number, seed: number, integers: boolean): Float32Array {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
  return Float32Array.from({ length: n }, () => (integers ? Math.floor(next() * 9) - 4 : next() - 0.5));
}

/** out[t] = act(A_t · B_t + bias) in float64, operands stored as tfjs stores them (transposed or not). */
function reference(
  a: Float32Array, b: Float32Array, batches: { a: number; b: number; out: number }, m: number, n: number, k: number,
  ta: boolean, tb: boolean, bias: Float32Array | null, relu: boolean,
): { out: Float64Array; scale: Float64Array } {
  const out = new Float64Array(batches.out * m * n);
  const scale = new Float64Array(batches.out * m * n); // Σ|a·b| + |bias|: what rounding error scales with
  for (let t = 0; t < batches.out; t++) {
    const ao = (batches.a === 1 ? 0 : t) * m * k;
    const bo = (batches.b === 1 ? 0 : t) * k * n;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = bias ? bias[j] : 0;
        let sc = Math.abs(s);
        for (let q = 0; q < k; q++) {
          const p = a[ao + (ta ? q * m + i : i * k + q)] * b[bo + (tb ? j * k + q : q * n + j)];
          s += p;
          sc += Math.abs(p);
        }
        out[(t * m + i) * n + j] = relu ? Math.max(s, 0) : s;
        scale[(t * m + i) * n + j] = sc;
      }
    }
  }
  return { out, scale };
}

describe('the FMA matrix-product kernel (gemm.ts)', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });
  afterEach(() => setWasmKernels('sparsoup'));

  it('compiles here (Relaxed SIMD switched on by the module itself) and is what dense products run on', () => {
    expect(gemmAvailable()).toBe(true);
    expect(relaxedSimdAvailable()).toBe(true);
    expect(enableRelaxedSimd()).toBe(true); // again: nothing to do, still available
    gemmInternals.resetStats();
    tf.tidy(() => tf.matMul(tf.ones([3, 5]), tf.ones([5, 2])).dataSync());
    expect(gemmInternals.stats.calls).toBe(1);
    expect(gemmInternals.stats.macs).toBe(3 * 5 * 2);
  });

  it('on its own memory: integer matrices of every edge shape come out exact, and nothing outside C is written', () => {
    const mod = gemmModule(false);
    expect(mod).not.toBeNull();
    const memory = new (wasmApi as NonNullable<typeof wasmApi>).Memory({ initial: 4 });
    const e = new (wasmApi as NonNullable<typeof wasmApi>).Instance(mod as object, { env: { memory } }).exports as unknown as GemmExports;
    for (const [m, n, k] of [[1, 1, 1], [MR - 1, NR - 1, 3], [MR, NR, 0], [MR + 1, NR + 1, 17], [2 * MR + 3, 3 * NR + 5, 9], [13, 2, 40]]) {
      const f = new Float32Array(memory.buffer);
      f.fill(0);
      const aP = Math.ceil(m / MR);
      const bP = Math.ceil(n / NR);
      // Layout in floats: A, B, Ap, Bp, bias (padded), scratch, then C inside a guard band of 7s.
      const A = 64;
      const B = A + m * k;
      const Ap = B + k * n;
      const Bp = Ap + aP * MR * k;
      const bias = Bp + bP * NR * k;
      const scratch = bias + bP * NR;
      const guard = scratch + MR * NR;
      const C = guard + 16;
      const a = values(m * k, m * 31 + k, true);
      const b = values(k * n, n * 17 + k, true);
      const bv = values(n, n, true);
      f.set(a, A);
      f.set(b, B);
      f.set(bv, bias);
      f.fill(7, guard, C + m * n + 16);
      for (let p = 0; p < aP; p++) e.pack((Ap + p * MR * k) * 4, 4, MR * 4, (A + p * MR * k) * 4, k * 4, 4, Math.min(MR, m - p * MR), k);
      for (let q = 0; q < bP; q++) e.pack((Bp + q * NR * k) * 4, NR * 4, 4, (B + q * NR) * 4, n * 4, 4, k, Math.min(NR, n - q * NR));
      e.gemm(C * 4, n * 4, Ap * 4, Bp * 4, m, n, k, bias * 4, 1, 0, scratch * 4);
      const { out } = reference(a, b, { a: 1, b: 1, out: 1 }, m, n, k, false, false, bv, false);
      expect(Array.from(f.subarray(C, C + m * n))).toEqual(Array.from(out));
      expect(Array.from(f.subarray(guard, C)).every((v) => v === 7)).toBe(true);
      expect(Array.from(f.subarray(C + m * n, C + m * n + 16)).every((v) => v === 7)).toBe(true);
    }
  });

  it('a shared memory (the threaded build) takes the shared variant of the module', () => {
    const api = wasmApi as NonNullable<typeof wasmApi>;
    const memory = new api.Memory({ initial: 1, maximum: 16, shared: true });
    expect(memory.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(() => new api.Instance(gemmModule(false) as object, { env: { memory } })).toThrow();
    const e = new api.Instance(gemmModule(true) as object, { env: { memory } }).exports as unknown as GemmExports;
    const f = new Float32Array(memory.buffer);
    f.set([2], 0); // A: 1×1, packed by hand: one panel of MR rows
    f.set([3], 8); // B: 1×1, one panel of NR columns
    e.gemm(256, 4, 0, 32, 1, 1, 1, 0, 0, 0, 128);
    expect(f[64]).toBe(6);
  });

  it('property: BatchMatMul and _FusedMatMul through tfjs (any transposes, broadcast batches, bias, ReLU) agree with float64 to float32 rounding', () => {
    let seed = 1;
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 19 }),
        fc.integer({ min: 1, max: 21 }),
        fc.integer({ min: 0, max: 37 }),
        fc.boolean(),
        fc.boolean(),
        fc.constantFrom('none', 'same', 'a1', 'b1'),
        fc.constantFrom('matmul', 'fused-linear', 'fused-relu', 'fused-relu-nobias'),
        (m, n, k, ta, tb, batching, kind) => {
          const bt = batching === 'none' ? 0 : 3;
          const batches = { a: batching === 'same' || batching === 'b1' ? bt : 1, b: batching === 'same' || batching === 'a1' ? bt : 1, out: Math.max(1, bt) };
          const a = values(batches.a * m * k, seed++, false);
          const b = values(batches.b * k * n, seed++, false);
          const fused = kind !== 'matmul';
          const bias = fused && kind !== 'fused-relu-nobias' ? values(n, seed++, false) : null;
          const relu = kind.startsWith('fused-relu');
          const shapeA = ta ? [k, m] : [m, k];
          const shapeB = tb ? [n, k] : [k, n];
          gemmInternals.resetStats();
          const got = tf.tidy(() => {
            const at = bt ? tf.tensor3d(a, [batches.a, shapeA[0], shapeA[1]]) : tf.tensor2d(a, shapeA as [number, number]);
            const btt = bt ? tf.tensor3d(b, [batches.b, shapeB[0], shapeB[1]]) : tf.tensor2d(b, shapeB as [number, number]);
            const out = fused
              ? tf.fused.matMul({ a: at, b: btt, transposeA: ta, transposeB: tb, bias: bias ? tf.tensor1d(bias) : undefined, activation: relu ? 'relu' : 'linear' })
              : tf.matMul(at, btt, ta, tb);
            expect(out.shape).toEqual(bt ? [batches.out, m, n] : [m, n]);
            return out.dataSync() as Float32Array;
          });
          expect(gemmInternals.stats.calls).toBe(1);
          const { out, scale } = reference(a, b, batches, m, n, k, ta, tb, bias, relu);
          for (let i = 0; i < out.length; i++) {
            // One float32 rounding per term at most (2⁻²⁴ relative), K + 1 terms.
            expect(Math.abs(got[i] - out[i])).toBeLessThanOrEqual((k + 2) * 2 ** -24 * scale[i] + 1e-30);
          }
        },
      ),
      { numRuns: 150, seed: 42 },
    );
  });

  it('ReLU keeps NaN (a diverged layer stays visible) and maps −x to +0', () => {
    const out = tf.tidy(() => {
      const a = tf.tensor2d([NaN, 1, -1, 2], [2, 2]);
      const b = tf.tensor2d([1, 0, 0, 1], [2, 2]);
      return Array.from(tf.fused.matMul({ a, b, activation: 'relu' }).dataSync());
    });
    // Row 0 is [NaN·1 + 1·0, NaN·0 + 1·1]: NaN in both (NaN·0 is NaN); row 1 is [−1, 2].
    expect(out.slice(0, 2).every(Number.isNaN)).toBe(true);
    expect(out.slice(2)).toEqual([0, 2]);
    expect(Object.is(out[2], 0)).toBe(true);
  });

  it("WASM_KERNELS 'tfjs' leaves every product to the backend's kernels, with the same values to float32 rounding", () => {
    const a = values(40 * 33, 5, false);
    const b = values(33 * 17, 6, false);
    const run = () => tf.tidy(() => tf.matMul(tf.tensor2d(a, [33, 40]), tf.tensor2d(b, [17, 33]), true, true).dataSync() as Float32Array);
    gemmInternals.resetStats();
    const fma = run();
    expect(gemmInternals.stats.calls).toBe(1);
    setWasmKernels('tfjs');
    gemmInternals.resetStats();
    const xnn = run();
    expect(gemmInternals.stats.calls).toBe(0);
    expect(gemmAvailable()).toBe(false);
    for (let i = 0; i < fma.length; i++) expect(Math.abs(fma[i] - xnn[i])).toBeLessThan(1e-5);
    expect(() => setWasmKernels('fast' as 'tfjs')).toThrow(/WASM_KERNELS must be one of sparsoup, tfjs/);
  });

  it('property: stride-1 convolutions (forward with bias and ReLU, and both gradients) agree with XNNPACK to float32 rounding', () => {
    let seed = 100;
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 1, max: 9 }),
        fc.integer({ min: 1, max: 9 }),
        fc.constantFrom(4, 8, 12),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 4 }),
        fc.constantFrom(8, 16, 5),
        fc.constantFrom('same', 'valid') as fc.Arbitrary<'same' | 'valid'>,
        (b, h, w, c, kh, kw, co, pad) => {
          if (pad === 'valid' && (kh > h || kw > w)) return;
          const run = () =>
            tf.tidy(() => {
              const x = tf.randomNormal([b, h, w, c], 0, 1, 'float32', seed);
              const f = tf.randomNormal([kh, kw, c, co], 0, 1, 'float32', seed + 1);
              const bias = tf.randomNormal([co], 0, 1, 'float32', seed + 2);
              const y = tf.fused.conv2d({ x: x as tf.Tensor4D, filter: f as tf.Tensor4D, strides: 1, pad, bias, activation: 'relu' });
              const dy = tf.randomNormal(y.shape, 0, 1, 'float32', seed + 3);
              const [dx, df] = tf.grads((xx: tf.Tensor, ff: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(xx as tf.Tensor4D, ff as tf.Tensor4D, 1, pad), dy)))([x, f]);
              return [y, dx, df].map((t) => t.dataSync() as Float32Array);
            });
          gemmInternals.resetStats();
          const fma = run();
          // On the FMA kernel: the forward twice (fused and plain); dx, a convolution of dy (co
          // channels in), where co comes in fours; dW where co comes in eights, or as the ≤ 4-channel
          // patch-matrix product.
          const forward = 2;
          const dx = co % 4 === 0 ? 1 : 0;
          const dw = co % 8 === 0 || c <= 4 ? 1 : 0;
          expect(gemmInternals.stats.calls).toBe(forward + dx + dw);
          setWasmKernels('tfjs');
          const xnn = run();
          setWasmKernels('sparsoup');
          seed += 4;
          fma.forEach((v, i) => {
            let peak = 0;
            for (const q of xnn[i]) peak = Math.max(peak, Math.abs(q));
            // K = kh·kw·c terms forward and dx, b·h·w positions for dW: float32 rounding of such sums.
            const terms = i === 2 ? b * h * w : kh * kw * Math.max(c, co);
            for (let j = 0; j < v.length; j++) expect(Math.abs(v[j] - xnn[i][j])).toBeLessThanOrEqual(terms * 2 ** -22 * (peak + 1));
          });
        },
      ),
      { numRuns: 60, seed: 11 },
    );
  });

  it('the gradients of a Dense layer (dW = xᵀ·dy, dx = dy·Wᵀ) match the XNNPACK path', () => {
    const x = tf.tensor2d(values(64 * 50, 7, false), [64, 50]);
    const w = tf.tensor2d(values(50 * 30, 8, false), [50, 30]);
    const bias = tf.tensor1d(values(30, 9, false));
    const grads = () =>
      tf.tidy(() => {
        const g = tf.grads((xx: tf.Tensor, ww: tf.Tensor) => tf.fused.matMul({ a: xx as tf.Tensor2D, b: ww as tf.Tensor2D, bias, activation: 'relu' }).square().sum());
        return g([x, w]).map((t) => t.dataSync() as Float32Array);
      });
    gemmInternals.resetStats();
    const [dxF, dwF] = grads();
    expect(gemmInternals.stats.calls).toBe(3); // forward, dx, dW
    setWasmKernels('tfjs');
    const [dxX, dwX] = grads();
    for (const [p, q] of [[dxF, dxX], [dwF, dwX]]) {
      let worst = 0;
      let peak = 0;
      for (let i = 0; i < p.length; i++) {
        worst = Math.max(worst, Math.abs(p[i] - q[i]));
        peak = Math.max(peak, Math.abs(q[i]));
      }
      expect(worst).toBeLessThan(1e-5 * peak);
    }
    tf.dispose([x, w, bias]);
  });
});
