import * as tf from '@tensorflow/tfjs';

/**
 * One optimizer step for one weight: coupled L2 weight decay, the mask, momentum (or Adam's two
 * moments) and the update, either as a chain of tf ops (any backend) or, on wasm, as one fused
 * pass over the weight's data on the heap (`SparsoupOptimizerStep`, registered with the other wasm
 * fixes). The profile showed the chain as ~25 small kernels per weight per step, each a pass over
 * the weight; the fused kernel reads each input once and writes the new weight once.
 *
 * The fused pass rounds to float32 after every operation (`Math.fround`), in the chain's order, so
 * it computes what the chain computes, bit for bit where the backend's elementwise kernels are
 * IEEE float32 (they are on wasm and cpu).
 *
 * Measured on the development machine (interleaved A/B, `trainModel`'s `fusedOptimizer` option): the
 * fused JavaScript pass was 1.4–1.75× SLOWER than the chain, whose ~10 passes are native SIMD wasm
 * kernels while V8 runs this loop scalar. So `trainModel` uses the chain by default; the fused pass
 * stays, tested bit-for-bit against it, as the reference for a SIMD (wasm) version.
 *
 * The new weight is a fresh tensor (the variable is assigned it): XNNPACK caches packed weights by
 * tensor, so a weight must never change in place. The optimizer state (momentum buffer, Adam
 * moments) is private to the optimizer and is updated in place.
 */

export const OPTIMIZER_STEP_KERNEL = 'SparsoupOptimizerStep';

export interface OptimizerStepAttrs {
  optimizer: 'sgd' | 'adam';
  learningRate: number;
  momentum: number;
  nesterov: boolean;
  /** 0 when this weight is not decayed. */
  weightDecay: number;
  /** Adam's 1-based step (bias correction). */
  t: number;
}

export interface OptimizerSlotTensors {
  variable: tf.Variable;
  /** SGD: [momentum buffer]; Adam: [m, v]. */
  state: tf.Variable[];
  /** float 0/1, multiplies the gradient. */
  maskFloat?: tf.Tensor;
  /** bool, selects kept weights; pruned ones become +0. */
  maskBool?: tf.Tensor;
  zeros?: tf.Tensor;
}

const BETA1 = 0.9;
const BETA2 = 0.999;
const EPS = 1e-8;

/** Whether the fused kernel serves the current backend. */
export function fusedOptimizerAvailable(): boolean {
  return tf.getKernel(OPTIMIZER_STEP_KERNEL, tf.getBackend()) != null;
}

/** The chain of tf ops (the reference, and the path on backends without the fused kernel). Call inside a tidy. */
export function unfusedOptimizerStep(s: OptimizerSlotTensors, gradient: tf.Tensor, a: OptimizerStepAttrs): void {
  let g = gradient;
  if (a.weightDecay > 0) g = tf.add(g, tf.mul(s.variable, a.weightDecay));
  if (s.maskFloat) g = tf.mul(g, s.maskFloat);
  let next: tf.Tensor;
  if (a.optimizer === 'sgd') {
    let direction = g;
    if (a.momentum > 0) {
      const buf = s.state[0];
      buf.assign(tf.add(tf.mul(buf, a.momentum), g));
      direction = a.nesterov ? tf.add(g, tf.mul(buf, a.momentum)) : buf;
    }
    next = tf.sub(s.variable, tf.mul(direction, a.learningRate));
  } else {
    const [m, v] = s.state;
    m.assign(tf.add(tf.mul(m, BETA1), tf.mul(g, 1 - BETA1)));
    v.assign(tf.add(tf.mul(v, BETA2), tf.mul(tf.square(g), 1 - BETA2)));
    const mHat = tf.div(m, 1 - BETA1 ** a.t);
    const vHat = tf.div(v, 1 - BETA2 ** a.t);
    next = tf.sub(s.variable, tf.mul(tf.div(mHat, tf.add(tf.sqrt(vHat), EPS)), a.learningRate));
  }
  if (s.maskBool) next = tf.where(s.maskBool, next, s.zeros!);
  s.variable.assign(next);
}

/** The fused kernel through the engine (wasm). Call inside a tidy. */
export function fusedOptimizerStep(s: OptimizerSlotTensors, gradient: tf.Tensor, a: OptimizerStepAttrs): void {
  const inputs: Record<string, tf.Tensor> = { x: s.variable, g: gradient, s0: s.state[0] };
  if (s.state[1]) inputs.s1 = s.state[1];
  if (s.maskFloat) inputs.mask = s.maskFloat;
  const next = tf.engine().runKernel(OPTIMIZER_STEP_KERNEL, inputs as unknown as tf.NamedTensorMap, a as unknown as tf.NamedAttrMap) as tf.Tensor;
  s.variable.assign(next);
}

type Info = tf.TensorInfo;
interface HeapBackend {
  makeOutput(shape: number[], dtype: tf.DataType): Info;
  typedArrayFromHeap(info: Info): Float32Array | Int32Array | Uint8Array;
  refCount(dataId: object): number;
}

const f = Math.fround;

/**
 * The kernel: reads x, g, the state and the mask once, writes the new x into a fresh output and
 * the state in place. Every intermediate is rounded to float32 in the order the chain computes it.
 */
export function optimizerStepKernel({ inputs, backend, attrs }: { inputs: Record<string, Info>; backend: HeapBackend; attrs: Record<string, unknown> }): Info {
  const { x, g, s0, s1, mask } = inputs;
  const a = attrs as unknown as OptimizerStepAttrs;
  for (const st of [s0, s1]) {
    if (st && backend.refCount(st.dataId) !== 1) throw new Error('optimizer state is shared with another tensor; it cannot be updated in place');
  }
  const out = backend.makeOutput(x.shape, 'float32');
  // Views taken after the allocation: makeOutput may grow (and so detach) the heap.
  const w = backend.typedArrayFromHeap(x) as Float32Array;
  const gr = backend.typedArrayFromHeap(g) as Float32Array;
  const b0 = backend.typedArrayFromHeap(s0) as Float32Array;
  const b1 = s1 ? (backend.typedArrayFromHeap(s1) as Float32Array) : null;
  const m = mask ? (backend.typedArrayFromHeap(mask) as Float32Array) : null;
  const o = backend.typedArrayFromHeap(out) as Float32Array;
  const n = w.length;
  const lr = f(a.learningRate);
  const wd = f(a.weightDecay);
  const decay = a.weightDecay > 0;
  if (a.optimizer === 'sgd') {
    const mom = f(a.momentum);
    const useMomentum = a.momentum > 0;
    for (let i = 0; i < n; i++) {
      const wi = w[i];
      let gi = gr[i];
      if (decay) gi = f(gi + f(wi * wd));
      if (m) gi = f(gi * m[i]);
      let d = gi;
      if (useMomentum) {
        const bi = f(f(b0[i] * mom) + gi);
        b0[i] = bi;
        d = a.nesterov ? f(gi + f(bi * mom)) : bi;
      }
      // tf.where(mask, next, 0): pruned weights are +0 exactly.
      o[i] = m && m[i] === 0 ? 0 : f(wi - f(d * lr));
    }
    return out;
  }
  const c1 = f(1 - BETA1);
  const c2 = f(1 - BETA2);
  const beta1 = f(BETA1);
  const beta2 = f(BETA2);
  const bc1 = f(1 - BETA1 ** a.t);
  const bc2 = f(1 - BETA2 ** a.t);
  const eps = f(EPS);
  const v = b1!;
  for (let i = 0; i < n; i++) {
    const wi = w[i];
    let gi = gr[i];
    if (decay) gi = f(gi + f(wi * wd));
    if (m) gi = f(gi * m[i]);
    const mi = f(f(b0[i] * beta1) + f(gi * c1));
    const vi = f(f(v[i] * beta2) + f(f(gi * gi) * c2));
    b0[i] = mi;
    v[i] = vi;
    const mHat = f(mi / bc1);
    const vHat = f(vi / bc2);
    const stepSize = f(f(mHat / f(f(Math.sqrt(vHat)) + eps)) * lr);
    o[i] = m && m[i] === 0 ? 0 : f(wi - stepSize);
  }
  return out;
}
