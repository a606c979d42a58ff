import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { Mulberry32 } from '../random.js';
import { initBackend } from './backend.js';
import { evaluateModel } from './evaluate.js';
import { setWasmKernels } from './kernel-set.js';
import { referenceSparseMatMul, SPARSE_MIN_SPARSITY, SPARSE_MIN_SPARSITY_XNNPACK, type SparseMatMulMode, sparseColumns, sparseMatMulInternals, withSparseMatMul } from './sparse-matmul.js';
import { buildTemplate } from './templates.js';
import { syntheticDataset } from './testing.js';

/** Values in [−0.5, 0.5) with a fraction `sparsity` of exact zeros, seeded. */
function sparseValues(n: number, sparsity: number, seed: number): Float32Array {
  const rng = new Mulberry32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const keep = rng.uniform() >= sparsity;
    const v = rng.uniform() - 0.5;
    out[i] = keep ? v : 0;
  }
  return out;
}

/** One `_FusedMatMul` as a Dense layer runs it (x [rows, K] · W [K, N] + bias, activation), in `mode`. */
function fused(mode: SparseMatMulMode, x: Float32Array, rows: number, w: Float32Array, k: number, n: number, bias: Float32Array | null, relu: boolean, transposeB = false) {
  return withSparseMatMul(mode, () =>
    tf.tidy(() => {
      const a = tf.tensor2d(x, [rows, k]);
      const b = transposeB ? tf.tensor2d(w, [n, k]) : tf.tensor2d(w, [k, n]);
      const out = tf.fused.matMul({ a, b, transposeB, bias: bias ? tf.tensor1d(bias) : undefined, activation: relu ? 'relu' : 'linear' });
      expect(out.shape).toEqual([rows, n]);
      return out.dataSync() as Float32Array;
    }),
  );
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

describe('sparse × dense _FusedMatMul on wasm', () => {
  beforeAll(async () => {
    await initBackend('wasm');
    expect(sparseMatMulInternals.available()).toBe(true);
  });

  // Shapes around the kernel's 32-row panels (1, 31, 32, 33, 70 rows) and odd K, N; sparsities 0 … 1.
  const shapes: [number, number, number][] = [[1, 7, 5], [31, 16, 3], [32, 33, 9], [33, 1, 1], [70, 40, 17], [5, 300, 100]];
  const sparsities = [0, 0.5, 0.9, 0.98, 1];
  let seed = 1;
  for (const [rows, k, n] of shapes) {
    for (const s of sparsities) {
      for (const [relu, withBias, transposeB] of [[true, true, false], [false, false, false], [false, true, true]] as const) {
        const id = seed++;
        it(`rows ${rows}, K ${k}, N ${n}, sparsity ${s}, ${relu ? 'relu' : 'linear'}${withBias ? ' + bias' : ''}${transposeB ? ', transposed W' : ''}: equals the dense path to float32 rounding and the JS oracle exactly`, () => {
          const x = sparseValues(rows * k, 0.3, 1000 + id); // activations with zeros too (ReLU outputs)
          const w = sparseValues(k * n, s, 2000 + id);
          const bias = withBias ? sparseValues(n, 0, 3000 + id) : null;
          sparseMatMulInternals.resetStats();
          const sparse = fused('sparse', x, rows, w, k, n, bias, relu, transposeB);
          expect(sparseMatMulInternals.stats.sparse).toBe(1);
          // The dense side of a transposed W runs on W itself laid out [K, N]: wasm's own
          // _FusedMatMul adds the bias wrongly with transposeB (tfjs 4.22: [[1,2,3],[4,5,6]] ·
          // [[1,0,0],[0,1,0]]ᵀ + [10,20] gives 24 for 14), and no Dense layer transposes W.
          const wkn = transposeB ? Float32Array.from({ length: k * n }, (_, i) => w[(i % n) * k + Math.floor(i / n)]) : w;
          const dense = fused('dense', x, rows, wkn, k, n, bias, relu);
          expect(sparseMatMulInternals.stats.sparse).toBe(1); // 'dense' never takes the sparse path
          // Each output sums at most K products of |x|, |w| < 0.5: rounding error ≤ ~K·2⁻²⁴·K/4.
          expect(maxAbsDiff(sparse, dense)).toBeLessThanOrEqual(Math.max(1e-6, k * k * 2 ** -24));
          const cols = transposeB ? sparseColumns(w, k, n, true) : sparseColumns(w, k, n);
          expect(cols.sparsity).toBeCloseTo(k * n ? Array.from(w).filter((v) => v === 0).length / (k * n) : 0, 12);
          expect(Array.from(sparse)).toEqual(Array.from(referenceSparseMatMul(x, rows, cols, bias, relu)));
          if (s === 1) expect(Array.from(sparse)).toEqual(Array.from(dense)); // bias (and ReLU) only
        });
      }
    }
  }

  it("'auto' takes the sparse path from the crossover's zeros on, dense below; outside evaluation nothing changes", () => {
    const [rows, k, n] = [40, 50, 20];
    const x = sparseValues(rows * k, 0, 7);
    // The crossover follows the dense product: the FMA kernel here, XNNPACK with WASM_KERNELS=tfjs.
    expect(sparseMatMulInternals.minSparsity).toBe(SPARSE_MIN_SPARSITY);
    const between = sparseValues(k * n, (SPARSE_MIN_SPARSITY + SPARSE_MIN_SPARSITY_XNNPACK) / 2, 10);
    sparseMatMulInternals.resetStats();
    fused('auto', x, rows, between, k, n, null, true);
    expect(sparseMatMulInternals.stats).toEqual({ sparse: 0, dense: 1 });
    setWasmKernels('tfjs');
    try {
      expect(sparseMatMulInternals.minSparsity).toBe(SPARSE_MIN_SPARSITY_XNNPACK);
      fused('auto', x, rows, between, k, n, null, true);
      expect(sparseMatMulInternals.stats).toEqual({ sparse: 1, dense: 1 });
    } finally {
      setWasmKernels('sparsoup');
    }
    const below = sparseValues(k * n, SPARSE_MIN_SPARSITY - 0.2, 8);
    const above = sparseValues(k * n, SPARSE_MIN_SPARSITY + 0.2, 9);
    sparseMatMulInternals.resetStats();
    fused('auto', x, rows, below, k, n, null, true);
    expect(sparseMatMulInternals.stats).toEqual({ sparse: 0, dense: 1 });
    fused('auto', x, rows, above, k, n, null, true);
    expect(sparseMatMulInternals.stats).toEqual({ sparse: 1, dense: 1 });
    // No withSparseMatMul scope (training, predict): the backend's own kernel, not even counted.
    tf.tidy(() => tf.fused.matMul({ a: tf.tensor2d(x, [rows, k]), b: tf.tensor2d(above, [k, n]), activation: 'relu' }).dataSync());
    expect(sparseMatMulInternals.stats).toEqual({ sparse: 1, dense: 1 });
  });

  it('a rewritten weight (variable.assign) is read again, not served from the cache', () => {
    const [rows, k, n] = [8, 12, 6];
    const x = sparseValues(rows * k, 0, 11);
    const v = tf.variable(tf.tensor2d(sparseValues(k * n, 0.9, 12), [k, n]));
    const run = () => withSparseMatMul('sparse', () => tf.tidy(() => tf.fused.matMul({ a: tf.tensor2d(x, [rows, k]), b: v }).dataSync() as Float32Array));
    const first = run();
    const w2 = sparseValues(k * n, 0.9, 13);
    v.assign(tf.tensor2d(w2, [k, n]));
    const second = run();
    expect(Array.from(second)).toEqual(Array.from(referenceSparseMatMul(x, rows, sparseColumns(w2, k, n), null, false)));
    expect(Array.from(second)).not.toEqual(Array.from(first));
    v.dispose();
  });

  it('no tensors or heap left behind by a sparse call', () => {
    const x = sparseValues(33 * 20, 0, 21);
    const w = sparseValues(20 * 10, 0.9, 22);
    fused('sparse', x, 33, w, 20, 10, null, true); // first call compiles and instantiates
    const before = tf.memory().numTensors;
    const bytes = tf.memory().numBytes;
    for (let i = 0; i < 5; i++) fused('sparse', x, 33, w, 20, 10, null, true);
    expect(tf.memory().numTensors).toBe(before);
    expect(tf.memory().numBytes).toBe(bytes);
  });

  it('a pruned lenet-300-100: evaluateModel gives the same accuracy and the same logits to float32 rounding, sparse or dense', () => {
    const ds = syntheticDataset({ n: 600, side: 8, classes: 4, seed: 5 });
    const model = buildTemplate('lenet-300-100', { inputShape: ds.inputShape, classes: ds.classes, seed: 3 });
    // Global magnitude pruning of the kernels to 95 % (biases kept), as the service prunes.
    const kernels = model.weights.filter((w) => w.name.endsWith('kernel'));
    const all = kernels.flatMap((w) => Array.from(w.read().dataSync() as Float32Array, Math.abs)).sort((a, b) => a - b);
    const threshold = all[Math.floor(0.95 * all.length)];
    let sparseLayers = 0;
    for (const w of kernels) {
      const v = (w.read().dataSync() as Float32Array).map((x) => (Math.abs(x) < threshold ? 0 : x));
      if (v.filter((x) => x === 0).length / v.length >= sparseMatMulInternals.minSparsity) sparseLayers++;
      w.write(tf.tensor(v, w.shape as number[]));
    }
    expect(sparseLayers).toBeGreaterThanOrEqual(2);
    sparseMatMulInternals.resetStats();
    const sparse = evaluateModel(model, ds, 'test', { batchSize: 64, sparse: 'auto' });
    const batches = Math.ceil(ds.splits.test.length / 64);
    expect(sparseMatMulInternals.stats).toEqual({ sparse: sparseLayers * batches, dense: (3 - sparseLayers) * batches });
    const dense = evaluateModel(model, ds, 'test', { batchSize: 64, sparse: 'dense' });
    expect(sparse.accuracy).toBe(dense.accuracy);
    expect(maxAbsDiff(sparse.logits, dense.logits)).toBeLessThan(1e-4);
    expect(sparse.loss).toBeCloseTo(dense.loss, 5);
    model.dispose();
  });
});
