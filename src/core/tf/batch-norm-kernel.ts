import * as tf from '@tensorflow/tfjs';

/**
 * Batch norm in training mode as one wasm kernel forward and one backward, instead of what
 * tfjs-layers builds (tf.moments, FusedBatchNorm and their gradients: ~40 elementwise kernels and
 * reductions over the activation per layer per step, a fifth of a `cnn-bn` step in the profile).
 *
 * Forward (`SparsoupBatchNormTrain`): per-channel mean and biased variance over every axis but the
 * last (float64 sums), then y = γ·(x − μ)/√(σ² + ε) + β; outputs [y, μ, σ²] as tfjs-layers'
 * `normalizeBatchInTraining` does. Backward (`SparsoupBatchNormGrad`): the exact gradient through
 * μ and σ² (dx = γ/(N·σ̂)·(N·dy − Σdy − x̂·Σdy·x̂), plus any gradient arriving at μ and σ²), dγ and dβ.
 *
 * `installFusedBatchNorm()` wraps `BatchNormalization.call` so that, on wasm with the last axis
 * normalised, a layer in training mode uses the kernel and updates its moving statistics exactly as
 * tfjs-layers does (moving ← moving − (moving − value)·(1 − momentum)); everything else takes the
 * original path.
 *
 * NOT installed by default: measured here (interleaved A/B, one BN layer on [128, 28, 28, 32],
 * forward + backward), these JavaScript loops ran 1.7–1.8× slower than tfjs's chain of native wasm
 * kernels (the forward alone was even); V8 does not vectorise them. It stays as the reference for a
 * native (C/SIMD) version and is tested against tfjs-layers.
 */

export const BN_TRAIN_KERNEL = 'SparsoupBatchNormTrain';
export const BN_GRAD_KERNEL = 'SparsoupBatchNormGrad';

type Info = tf.TensorInfo;
interface HeapBackend {
  makeOutput(shape: number[], dtype: tf.DataType): Info;
  typedArrayFromHeap(info: Info): Float32Array | Int32Array | Uint8Array;
}
type Args = { inputs: Record<string, Info>; backend: HeapBackend; attrs: Record<string, unknown> };

function dims(x: Info): { rows: number; cols: number } {
  const cols = x.shape[x.shape.length - 1];
  return { rows: x.shape.reduce((a, b) => a * b, 1) / cols, cols };
}

function bnTrain({ inputs, backend, attrs }: Args): Info[] {
  const { x, gamma, beta } = inputs;
  const eps = attrs.epsilon as number;
  const { rows, cols } = dims(x);
  const y = backend.makeOutput(x.shape, 'float32');
  const mean = backend.makeOutput([cols], 'float32');
  const variance = backend.makeOutput([cols], 'float32');
  const xs = backend.typedArrayFromHeap(x) as Float32Array;
  const g = backend.typedArrayFromHeap(gamma) as Float32Array;
  const b = backend.typedArrayFromHeap(beta) as Float32Array;
  const ys = backend.typedArrayFromHeap(y) as Float32Array;
  const mu = backend.typedArrayFromHeap(mean) as Float32Array;
  const va = backend.typedArrayFromHeap(variance) as Float32Array;
  // Four rows per pass into the float64 accumulators (V8 does not vectorise; fewer
  // read-modify-writes of the accumulator are what makes these loops ~3× faster).
  const n = rows * cols;
  const step4 = 4 * cols;
  const sum = new Float64Array(cols);
  let o = 0;
  for (; o + step4 <= n; o += step4) {
    for (let c = 0; c < cols; c++) sum[c] += xs[o + c] + xs[o + cols + c] + (xs[o + 2 * cols + c] + xs[o + 3 * cols + c]);
  }
  for (; o < n; o += cols) for (let c = 0; c < cols; c++) sum[c] += xs[o + c];
  const m64 = new Float64Array(cols);
  for (let c = 0; c < cols; c++) m64[c] = sum[c] / rows;
  // Two passes (centred squares): no cancellation whatever the mean.
  const sq = new Float64Array(cols);
  for (o = 0; o + step4 <= n; o += step4) {
    for (let c = 0; c < cols; c++) {
      const m = m64[c];
      const d0 = xs[o + c] - m;
      const d1 = xs[o + cols + c] - m;
      const d2 = xs[o + 2 * cols + c] - m;
      const d3 = xs[o + 3 * cols + c] - m;
      sq[c] += d0 * d0 + d1 * d1 + (d2 * d2 + d3 * d3);
    }
  }
  for (; o < n; o += cols) {
    for (let c = 0; c < cols; c++) {
      const d = xs[o + c] - m64[c];
      sq[c] += d * d;
    }
  }
  const scale = new Float32Array(cols);
  const shift = new Float32Array(cols);
  for (let c = 0; c < cols; c++) {
    mu[c] = m64[c];
    va[c] = sq[c] / rows;
    const s = g[c] / Math.sqrt(sq[c] / rows + eps);
    scale[c] = s;
    shift[c] = b[c] - m64[c] * s;
  }
  for (o = 0; o < n; o += cols) for (let c = 0; c < cols; c++) ys[o + c] = xs[o + c] * scale[c] + shift[c];
  return [y, mean, variance];
}

function bnGrad({ inputs, backend, attrs }: Args): Info[] {
  const { dy, x, gamma, mean, variance, dmean, dvariance } = inputs;
  const eps = attrs.epsilon as number;
  const { rows, cols } = dims(x);
  const dx = backend.makeOutput(x.shape, 'float32');
  const dgamma = backend.makeOutput([cols], 'float32');
  const dbeta = backend.makeOutput([cols], 'float32');
  const g = backend.typedArrayFromHeap(dy) as Float32Array;
  const xs = backend.typedArrayFromHeap(x) as Float32Array;
  const ga = backend.typedArrayFromHeap(gamma) as Float32Array;
  const mu = backend.typedArrayFromHeap(mean) as Float32Array;
  const va = backend.typedArrayFromHeap(variance) as Float32Array;
  const dm = backend.typedArrayFromHeap(dmean) as Float32Array;
  const dv = backend.typedArrayFromHeap(dvariance) as Float32Array;
  const out = backend.typedArrayFromHeap(dx) as Float32Array;
  const dg = backend.typedArrayFromHeap(dgamma) as Float32Array;
  const db = backend.typedArrayFromHeap(dbeta) as Float32Array;
  const inv = new Float64Array(cols);
  for (let c = 0; c < cols; c++) inv[c] = 1 / Math.sqrt(va[c] + eps);
  const sumDy = new Float64Array(cols);
  const sumDyX = new Float64Array(cols); // Σ dy·(x − μ)
  const n = rows * cols;
  const step4 = 4 * cols;
  let o = 0;
  for (; o + step4 <= n; o += step4) {
    for (let c = 0; c < cols; c++) {
      const m = mu[c];
      const g0 = g[o + c];
      const g1 = g[o + cols + c];
      const g2 = g[o + 2 * cols + c];
      const g3 = g[o + 3 * cols + c];
      sumDy[c] += g0 + g1 + (g2 + g3);
      sumDyX[c] += g0 * (xs[o + c] - m) + g1 * (xs[o + cols + c] - m) + (g2 * (xs[o + 2 * cols + c] - m) + g3 * (xs[o + 3 * cols + c] - m));
    }
  }
  for (; o < n; o += cols) {
    for (let c = 0; c < cols; c++) {
      const d = g[o + c];
      sumDy[c] += d;
      sumDyX[c] += d * (xs[o + c] - mu[c]);
    }
  }
  // dx = a·dy + k·(x − μ) + b0 per channel, folding the batch-statistics terms and any gradient
  // that reached μ (dm) or σ² (dv) directly.
  const a = new Float32Array(cols);
  const k = new Float32Array(cols);
  const b0 = new Float32Array(cols);
  for (let c = 0; c < cols; c++) {
    const s = ga[c] * inv[c];
    a[c] = s;
    k[c] = -s * inv[c] * inv[c] * (sumDyX[c] / rows) + (2 * dv[c]) / rows;
    b0[c] = -s * (sumDy[c] / rows) + dm[c] / rows;
    dg[c] = sumDyX[c] * inv[c];
    db[c] = sumDy[c];
  }
  // dx = a·dy + k·x + (b0 − k·μ): one multiply-add pair per input per element.
  const bias = new Float32Array(cols);
  for (let c = 0; c < cols; c++) bias[c] = b0[c] - k[c] * mu[c];
  for (o = 0; o < n; o += cols) for (let c = 0; c < cols; c++) out[o + c] = a[c] * g[o + c] + k[c] * xs[o + c] + bias[c];
  return [dx, dgamma, dbeta];
}

let fused = true;
let installed = false;

/** Tests: compare the kernel with tfjs-layers' own path. */
export function setFusedBatchNorm(on: boolean): void {
  fused = on;
}

interface BnLayer {
  axis: number;
  epsilon: number;
  momentum: number;
  center: boolean;
  scale: boolean;
  gamma: tf.LayerVariable;
  beta: tf.LayerVariable;
  movingMean: tf.LayerVariable;
  movingVariance: tf.LayerVariable;
}

/** Registers both kernels on wasm, the gradient, and wraps BatchNormalization.call. Once per thread. */
export function installFusedBatchNorm(): void {
  if (installed) return;
  installed = true;
  tf.registerKernel({ kernelName: BN_TRAIN_KERNEL, backendName: 'wasm', kernelFunc: bnTrain as unknown as tf.KernelFunc });
  tf.registerKernel({ kernelName: BN_GRAD_KERNEL, backendName: 'wasm', kernelFunc: bnGrad as unknown as tf.KernelFunc });
  tf.registerGradient({
    kernelName: BN_TRAIN_KERNEL,
    inputsToSave: ['x', 'gamma'],
    outputsToSave: [false, true, true],
    gradFunc: (dys, saved, attrs) => {
      const [dy, dmean, dvariance] = dys as tf.Tensor[];
      const [x, gamma, mean, variance] = saved;
      // Computed once, here: each input's thunk runs in its own tidy, which would free the others.
      const [dx, dgamma, dbeta] = tf.engine().runKernel(BN_GRAD_KERNEL, { dy, x, gamma, mean, variance, dmean, dvariance } as unknown as tf.NamedTensorMap, attrs as tf.NamedAttrMap) as tf.Tensor[];
      return { x: () => dx, gamma: () => dgamma, beta: () => dbeta };
    },
  });
  const probe = tf.layers.batchNormalization({});
  const proto = Object.getPrototypeOf(probe) as { call: (this: BnLayer, inputs: tf.Tensor | tf.Tensor[], kwargs: Record<string, unknown>) => tf.Tensor };
  const original = proto.call;
  proto.call = function (this: BnLayer, inputs, kwargs) {
    const input = Array.isArray(inputs) ? inputs[0] : inputs;
    const training = kwargs?.training === true;
    const lastAxis = this.axis === -1 || this.axis === input.rank - 1;
    if (!fused || !training || !lastAxis || !this.center || !this.scale || input.dtype !== 'float32' || input.rank < 2 || tf.getBackend() !== 'wasm') {
      return original.call(this, inputs, kwargs);
    }
    return tf.tidy(() => {
      const [y, mean, variance] = tf.engine().runKernel(BN_TRAIN_KERNEL, { x: input, gamma: this.gamma.read(), beta: this.beta.read() } as unknown as tf.NamedTensorMap, {
        epsilon: this.epsilon,
      }) as tf.Tensor[];
      const decay = 1 - this.momentum;
      for (const [variable, value] of [
        [this.movingMean, mean],
        [this.movingVariance, variance],
      ] as const) {
        tf.tidy(() => {
          const orig = variable.read();
          variable.write(tf.sub(orig, tf.mul(tf.sub(orig, value), decay)));
        });
      }
      return y;
    });
  };
}
