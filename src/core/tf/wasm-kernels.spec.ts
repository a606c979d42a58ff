import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { Mulberry32 } from '../random.js';
import { initBackend } from './backend.js';
import { maxPoolGradInternals } from './max-pool-grad.js';
import { internals, registerWasmKernelFixes } from './wasm-kernels.js';

// Deterministic pseudo-random inputs so a failure reproduces.
function randoms(n: number, seed: number): Float32Array {
  const rng = new Mulberry32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.uniform() - 0.5;
  return out;
}

const size = (s: number[]) => s.reduce((a, b) => a * b, 1);

/** Runs one kernel on a backend from plain arrays and returns its output values and shape. */
async function runOn(
  backend: 'cpu' | 'wasm',
  kernelName: string,
  inputs: Record<string, { shape: number[]; values: Float32Array }>,
  attrs: Record<string, unknown>,
): Promise<{ shape: number[]; values: Float32Array }> {
  await tf.setBackend(backend);
  return tf.tidy(() => {
    const ins: Record<string, tf.Tensor> = {};
    for (const [k, v] of Object.entries(inputs)) ins[k] = tf.tensor(v.values, v.shape);
    const out = tf.engine().runKernel(kernelName, ins, attrs as unknown as tf.NamedAttrMap) as tf.Tensor;
    return { shape: out.shape, values: out.dataSync() as Float32Array };
  });
}

/** max |a−b| / max |b|: a relative error that does not blow up on near-zero entries. */
function relError(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / scale;
}

async function compare(kernelName: string, inputs: Record<string, number[]>, attrs: Record<string, unknown>) {
  let seed = 1;
  const data = Object.fromEntries(
    Object.entries(inputs).map(([k, shape]) => [k, { shape, values: randoms(size(shape), seed++) }]),
  );
  const want = await runOn('cpu', kernelName, data, attrs);
  const got = await runOn('wasm', kernelName, data, attrs);
  expect(got.shape).toEqual(want.shape);
  const err = relError(got.values, want.values);
  expect(err).toBeLessThanOrEqual(1e-3);
  return err;
}

function outSize(x: number, k: number, s: number, pad: 'same' | 'valid' | number): number {
  if (pad === 'same') return Math.ceil(x / s);
  if (pad === 'valid') return Math.ceil((x - k + 1) / s);
  return Math.floor((x + 2 * pad - k) / s) + 1;
}

// Variants the templates use (3×3 same, 1×1 stride 2 shortcuts, 3×3 stride 2) plus awkward ones:
// valid padding that leaves trailing rows unused, non-square filters, explicit numeric padding.
const CONV_CASES: { x: number[]; k: number[]; s: number; pad: 'same' | 'valid' | number }[] = [
  { x: [4, 12, 12, 3], k: [3, 3, 3, 5], s: 1, pad: 'same' },
  { x: [3, 11, 11, 4], k: [3, 3, 4, 6], s: 2, pad: 'same' },
  { x: [3, 10, 9, 2], k: [1, 1, 2, 4], s: 2, pad: 'valid' },
  { x: [2, 13, 13, 3], k: [5, 5, 3, 2], s: 1, pad: 'valid' },
  { x: [2, 12, 12, 3], k: [3, 2, 3, 4], s: 3, pad: 'valid' },
  { x: [2, 9, 9, 2], k: [3, 3, 2, 3], s: 1, pad: 1 },
  { x: [2, 28, 28, 1], k: [5, 5, 1, 8], s: 1, pad: 'same' },
  // Stride 2 on even sizes (asymmetric 'same' padding), explicit padding with stride, and padding
  // wider than the filter (the native fallback).
  { x: [2, 12, 12, 3], k: [3, 3, 3, 4], s: 2, pad: 'same' },
  { x: [2, 10, 10, 2], k: [3, 3, 2, 3], s: 2, pad: 1 },
  { x: [2, 7, 7, 2], k: [3, 3, 2, 2], s: 1, pad: 3 },
];

describe('wasm kernel fixes match the cpu backend', () => {
  beforeAll(async () => {
    await initBackend('wasm');
    registerWasmKernelFixes();
  });

  // Both implementations (transposed convolution, patch-matrix matmul) on every case.
  it.each(CONV_CASES.flatMap((c) => [{ ...c, path: 'conv' }, { ...c, path: 'im2col' }]))(
    'Conv2DBackpropFilter ($path) x=$x k=$k s=$s pad=$pad',
    async ({ x, k, s, pad, path }) => {
      internals.setIm2colMaxChannels(path === 'conv' ? 0 : Number.POSITIVE_INFINITY);
      try {
        const dy = [x[0], outSize(x[1], k[0], s, pad), outSize(x[2], k[1], s, pad), k[3]];
        await compare('Conv2DBackpropFilter', { x, dy }, { strides: [s, s], pad, dataFormat: 'NHWC', filterShape: k });
      } finally {
        internals.setIm2colMaxChannels(4);
      }
    },
  );

  it.each(CONV_CASES)('Conv2DBackpropInput x=$x k=$k s=$s pad=$pad', async ({ x, k, s, pad }) => {
    const dy = [x[0], outSize(x[1], k[0], s, pad), outSize(x[2], k[1], s, pad), k[3]];
    await compare('Conv2DBackpropInput', { dy, filter: k }, { strides: [s, s], pad, dataFormat: 'NHWC', inputShape: x });
  });

  it.each([
    { a: [37, 50], b: [37, 21], transposeA: true, transposeB: false },
    { a: [37, 50], b: [21, 50], transposeA: false, transposeB: true },
    { a: [50, 37], b: [21, 50], transposeA: true, transposeB: true },
    { a: [3, 8, 5], b: [3, 8, 6], transposeA: true, transposeB: false },
    { a: [3, 5, 8], b: [1, 6, 8], transposeA: false, transposeB: true },
  ])('BatchMatMul a=$a b=$b tA=$transposeA tB=$transposeB', async ({ a, b, transposeA, transposeB }) => {
    await compare('BatchMatMul', { a, b }, { transposeA, transposeB });
  });

  it.each([
    { x: [1, 1, 1, 5], reps: [3, 4, 2, 1] },
    { x: [2, 3], reps: [2, 3] },
    { x: [2, 1, 3], reps: [1, 4, 2] },
    { x: [7], reps: [3] },
  ])('Tile x=$x reps=$reps', async ({ x, reps }) => {
    await compare('Tile', { x }, { reps });
  });

  it.each([
    { x: [6, 5, 4, 3], axis: [0, 1, 2], keepDims: false },
    { x: [6, 5, 4, 3], axis: [2, 0, 1], keepDims: true },
    { x: [9, 7], axis: 0, keepDims: false },
    { x: [6, 5, 4], axis: [1, 2], keepDims: false },
    { x: [6, 5, 4], axis: -1, keepDims: true },
  ])('Sum and Mean x=$x axis=$axis keepDims=$keepDims', async ({ x, axis, keepDims }) => {
    await compare('Sum', { x }, { axis, keepDims });
    await compare('Mean', { x }, { axis, keepDims });
  });

  it('Identity shares the buffer and disposing either side keeps the other intact', async () => {
    await tf.setBackend('wasm');
    const a = tf.tensor([1, 2, 3]);
    const b = tf.clone(a);
    a.dispose();
    expect(Array.from(b.dataSync())).toEqual([1, 2, 3]);
    b.dispose();
  });

  it.each([
    { x: [3, 8, 8, 4], f: 2, s: 2, pad: 'valid' as const },
    { x: [2, 9, 7, 3], f: 2, s: 2, pad: 'valid' as const },
    { x: [2, 9, 7, 3], f: 2, s: 2, pad: 'same' as const },
    { x: [2, 9, 9, 3], f: 3, s: 2, pad: 'same' as const },
    { x: [2, 7, 7, 2], f: 3, s: 1, pad: 'same' as const },
  ])('MaxPoolGrad x=$x f=$f s=$s $pad, incl. windows whose maximum is negative (native wasm drops those)', async ({
    x,
    f,
    s,
    pad,
  }) => {
    // Random input centred on 0: many windows have a negative maximum; ties practically never happen.
    const input = randoms(size(x), 7);
    const grad = async (backend: 'cpu' | 'wasm') => {
      await tf.setBackend(backend);
      return tf.tidy(() => {
        const t = tf.tensor4d(input, x as [number, number, number, number]);
        const y = tf.maxPool(t, f, s, pad);
        const weights = tf.tensor(randoms(y.size, 9), y.shape);
        return tf.grad((u: tf.Tensor) => tf.maxPool(u as tf.Tensor4D, f, s, pad).mul(weights).sum())(t).dataSync() as Float32Array;
      });
    };
    const cpu = await grad('cpu');
    const wasm = await grad('wasm');
    expect(relError(wasm, cpu)).toBeLessThanOrEqual(1e-6);
  });

  it.each([
    { x: [3, 8, 8, 4] },
    { x: [2, 9, 7, 8] },
    { x: [1, 6, 10, 12] },
    { x: [2, 5, 5, 3] },
  ])('MaxPoolGrad 2×2/2 x=$x: the SIMD kernel equals the JS loop bit for bit, with ties (first maximum wins), NaN and ±0', async ({ x }) => {
    await tf.setBackend('wasm');
    // Few distinct values so windows tie often; a NaN and signed zeros in some windows.
    const input = Float32Array.from(randoms(size(x), 11), (v) => Math.round(v * 2) / 2);
    input[5] = Number.NaN;
    input[17] = -0;
    const weights = randoms(size(x) / 4, 12);
    const grad = (simd: boolean) => {
      internals.setSimdPoolGrad(simd);
      maxPoolGradInternals.resetStats();
      try {
        return tf.tidy(() => {
          const t = tf.tensor4d(input, x as [number, number, number, number]);
          const y = tf.maxPool(t, 2, 2, 'valid');
          const w = tf.tensor(weights.subarray(0, y.size), y.shape);
          return tf.grad((u: tf.Tensor) => tf.maxPool(u as tf.Tensor4D, 2, 2, 'valid').mul(w).sum())(t).dataSync() as Float32Array;
        });
      } finally {
        internals.setSimdPoolGrad(true);
      }
    };
    const js = grad(false);
    expect(maxPoolGradInternals.stats.calls).toBe(0);
    const simd = grad(true);
    expect(maxPoolGradInternals.stats.calls).toBe(x[3] % 4 === 0 ? 1 : 0);
    expect(Array.from(simd).map((v) => Object.is(v, -0) ? '-0' : v)).toEqual(Array.from(js).map((v) => Object.is(v, -0) ? '-0' : v));
  });

  it('a conv layer gradient through tf.grad works on wasm and frees its intermediates', async () => {
    await tf.setBackend('wasm');
    const x = tf.tensor(randoms(2 * 10 * 10 * 3, 3), [2, 10, 10, 3]) as tf.Tensor4D;
    const w = tf.tensor(randoms(3 * 3 * 3 * 4, 4), [3, 3, 3, 4]) as tf.Tensor4D;
    const f = (xx: tf.Tensor4D, ww: tf.Tensor4D) => tf.conv2d(xx, ww, 2, 'same').square().sum();
    const run = () => tf.tidy(() => tf.grads(f as (...a: tf.Tensor[]) => tf.Tensor)([x, w]).map((g) => g.dataSync()));
    run();
    const before = tf.memory().numTensors;
    const bytes = tf.memory().numBytes;
    const [dxW, dwW] = run();
    expect(tf.memory().numTensors).toBe(before);
    expect(tf.memory().numBytes).toBe(bytes);
    await tf.setBackend('cpu');
    const [dxC, dwC] = tf.tidy(() => tf.grads(f as (...a: tf.Tensor[]) => tf.Tensor)([x, w]).map((g) => g.dataSync()));
    expect(relError(dxW as Float32Array, dxC as Float32Array)).toBeLessThanOrEqual(1e-3);
    expect(relError(dwW as Float32Array, dwC as Float32Array)).toBeLessThanOrEqual(1e-3);
    tf.dispose([x, w]);
  });
});
