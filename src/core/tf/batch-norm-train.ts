import * as tf from '@tensorflow/tfjs';
import { add, bump, compiledOnce, funcCode, get, I32, i32c, moduleBytes, mul, set, simd, V128, vec, vload, vstore, whileBelow } from '../wasm-bytes.js';
import { wasmKernels } from './kernel-set.js';
import { type HeapBackend, heapInstance, heapOffset } from './wasm-heap.js';

/**
 * Batch norm in training mode on the wasm backend as two kernels, forward and backward, over a
 * hand-written WebAssembly SIMD module on the backend's heap.
 *
 * Why: tfjs-layers trains a `BatchNormalization` layer as `tf.moments` followed by `tf.batchNorm`,
 * and differentiates that chain op by op: at cnn-bn's activations ([128, 28, 28, 32]: 3.2 M floats)
 * its backward pass is some twenty full-size elementwise kernels and reductions, a quarter of a
 * training step (`npm run bench:profile`). An earlier attempt at one fused kernel in JavaScript over
 * the heap was slower than those kernels, because V8 runs such loops scalar; this is the same
 * arithmetic as WebAssembly SIMD.
 *
 * For x [rows, C] (NHWC flattened: rows = N·H·W, C a multiple of 4), per channel, with float64 sums:
 * - forward: m = Σx / rows, v = Σ(x − m)² / rows (two passes, biased, as `tf.moments`),
 *   s = 1 / √(v + ε), y = x·(γs) + (β − m·γs); outputs y, m, v (m and v feed the moving averages);
 * - backward, for dy and (from the statistics outputs, usually zero) dm, dv:
 *   dβ = Σdy, dγ = s·Σdy(x − m),
 *   dx = γs·dy + k₂·(x − m) + (dm − γs·Σdy) / rows with k₂ = 2·dv / rows − γs³·Σdy(x − m) / rows,
 *   written as one pass dx = a·dy + b·x + c.
 * The results agree with tfjs's chain to float32 rounding, not bit for bit.
 *
 * `FastBatchNormalization` is tfjs-layers' `BatchNormalization` with only its training-mode call
 * changed, registered under the same class name so saved models load into it; anywhere the kernels do
 * not apply (another backend, WASM_KERNELS=tfjs, channels not last or not a multiple of 4, no γ or β)
 * it is the original.
 */

// ---- the module ----

const highToLow = simd(0x0d, 8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15);
const promoteLow = simd(0x5f);
const f32x4add = simd(0xe4);
const f32x4sub = simd(0xe5);
const f32x4mul = simd(0xe6);
const f64x2add = simd(0xf0);


/**
 * for every row of `main` (nv vectors of 4 floats) and every vector in it: `body`, with local `cp`
 * the vector's byte offset within the row (into the per-channel arrays); `main` and every pointer of
 * `streams` advance 16 bytes per vector.
 */
function rowsLoop(main: number, streams: number[], rows: number, nv: number, cp: number, end: number, rowEnd: number, body: number[]): number[] {
  return [
    ...get(main), ...get(rows), ...get(nv), ...mul, ...i32c(16), ...mul, ...add, ...set(end),
    ...whileBelow(main, end, [
      ...i32c(0), ...set(cp),
      ...get(main), ...get(nv), ...i32c(16), ...mul, ...add, ...set(rowEnd),
      ...whileBelow(main, rowEnd, [
        ...body,
        ...[main, ...streams].flatMap((p) => bump(p, i32c(16))),
        ...bump(cp, i32c(16)),
      ]),
    ]),
  ];
}

/** acc (float64 per channel, at acc + 2·cp) += the float32x4 in local `v`, both halves. */
function accumulate(acc: number, cp: number, v: number, a: number): number[] {
  return [
    ...get(acc), ...get(cp), ...get(cp), ...add, ...add, ...set(a),
    ...get(a), ...get(a), ...vload(0), ...get(v), ...promoteLow, ...f64x2add, ...vstore(0),
    ...get(a), ...get(a), ...vload(16), ...get(v), ...get(v), ...highToLow, ...promoteLow, ...f64x2add, ...vstore(16),
  ];
}

// Locals after the parameters: cp, end, rowEnd, a (i32), then v, w (v128).
function sumsBody(): number[] {
  // sums(acc, x, rows, nv)
  const [acc, x, rows, nv, cp, end, rowEnd, a, v] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  return rowsLoop(x, [], rows, nv, cp, end, rowEnd, [...get(x), ...vload(), ...set(v), ...accumulate(acc, cp, v, a)]);
}

function sqdevBody(): number[] {
  // sqdev(acc, x, mean, rows, nv): acc += (x − mean)²
  const [acc, x, mean, rows, nv, cp, end, rowEnd, a, v] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  return rowsLoop(x, [], rows, nv, cp, end, rowEnd, [
    ...get(x), ...vload(), ...get(mean), ...get(cp), ...add, ...vload(), ...f32x4sub, ...set(v),
    ...get(v), ...get(v), ...f32x4mul, ...set(v),
    ...accumulate(acc, cp, v, a),
  ]);
}

function dotsBody(): number[] {
  // dots(accA, accB, dy, x, mean, rows, nv): accA += dy, accB += dy·(x − mean)
  const [accA, accB, dy, x, mean, rows, nv, cp, end, rowEnd, a, v, w] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
  return rowsLoop(x, [dy], rows, nv, cp, end, rowEnd, [
    ...get(dy), ...vload(), ...set(v),
    ...get(x), ...vload(), ...get(mean), ...get(cp), ...add, ...vload(), ...f32x4sub, ...get(v), ...f32x4mul, ...set(w),
    ...accumulate(accA, cp, v, a),
    ...accumulate(accB, cp, w, a),
  ]);
}

function affineBody(): number[] {
  // affine(y, x, a, b, rows, nv): y = x·a + b
  const [y, x, pa, pb, rows, nv, cp, end, rowEnd] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const at = (p: number) => [...get(p), ...get(cp), ...add, ...vload()];
  return rowsLoop(x, [y], rows, nv, cp, end, rowEnd, [...get(y), ...get(x), ...vload(), ...at(pa), ...f32x4mul, ...at(pb), ...f32x4add, ...vstore()]);
}

function affine2Body(): number[] {
  // affine2(dx, dy, x, a, b, c, rows, nv): dx = dy·a + x·b + c
  const [dx, dy, x, pa, pb, pc, rows, nv, cp, end, rowEnd] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  const at = (p: number) => [...get(p), ...get(cp), ...add, ...vload()];
  return rowsLoop(x, [dx, dy], rows, nv, cp, end, rowEnd, [
    ...get(dx),
    ...get(dy), ...vload(), ...at(pa), ...f32x4mul,
    ...get(x), ...vload(), ...at(pb), ...f32x4mul, ...f32x4add,
    ...at(pc), ...f32x4add,
    ...vstore(),
  ]);
}

export function batchNormModuleBytes(shared = false): Uint8Array<ArrayBuffer> {
  const t = (n: number) => [0x60, ...vec(new Array(n).fill([I32])), ...vec([])];
  const types = [t(4), t(5), t(7), t(6), t(8)];
  return moduleBytes(
    types,
    [
      { name: 'sums', type: 0, code: funcCode([[4, I32], [1, V128]], sumsBody()) },
      { name: 'sqdev', type: 1, code: funcCode([[4, I32], [1, V128]], sqdevBody()) },
      { name: 'dots', type: 2, code: funcCode([[4, I32], [2, V128]], dotsBody()) },
      { name: 'affine', type: 3, code: funcCode([[3, I32]], affineBody()) },
      { name: 'affine2', type: 4, code: funcCode([[3, I32]], affine2Body()) },
    ],
    shared,
  );
}

export interface BatchNormExports {
  sums(acc: number, x: number, rows: number, nv: number): void;
  sqdev(acc: number, x: number, mean: number, rows: number, nv: number): void;
  dots(accA: number, accB: number, dy: number, x: number, mean: number, rows: number, nv: number): void;
  affine(y: number, x: number, a: number, b: number, rows: number, nv: number): void;
  affine2(dx: number, dy: number, x: number, a: number, b: number, c: number, rows: number, nv: number): void;
}

const compiled = [false, true].map((shared) => compiledOnce(() => batchNormModuleBytes(shared)));
export const batchNormModule = (shared = false) => compiled[shared ? 1 : 0]();
const KEY = {};

// ---- the kernels ----

export const BN_TRAIN = 'SparsoupBatchNormTrain';
export const BN_GRAD = 'SparsoupBatchNormGrad';

type Info = tf.TensorInfo;
const stats = { forward: 0, backward: 0 };
let enabled = true;
/** For tests and benches: kernel calls since the last reset; a switch back to tfjs's chain (A/B). */
export const batchNormTrainInternals = {
  stats,
  setEnabled(on: boolean): void {
    enabled = on;
  },
  resetStats(): void {
    stats.forward = 0;
    stats.backward = 0;
  },
};

function instanceOf(backend: HeapBackend) {
  const inst = heapInstance<BatchNormExports>(backend, KEY, batchNormModule);
  if (!inst) throw new Error('the batch-norm module is unavailable on this backend');
  return inst;
}

/** Temporary float32 buffers on the heap, freed together. */
function temps(backend: HeapBackend, sizes: number[]): { infos: Info[]; free(): void } {
  const infos = sizes.map((n) => backend.makeOutput([Math.max(1, n)], 'float32'));
  return {
    infos,
    free: () => {
      for (const t of infos) backend.disposeData(t.dataId);
    },
  };
}

const channelsOf = (x: Info) => x.shape[x.shape.length - 1];
const rowsOf = (x: Info) => tf.util.sizeFromShape(x.shape) / Math.max(1, channelsOf(x));

/** Forward: inputs x, gamma, beta; attrs epsilon; outputs [y, mean, variance]. */
function forward({ inputs, backend, attrs }: { inputs: Record<string, Info>; backend: HeapBackend; attrs: Record<string, unknown> }): Info[] {
  const { x, gamma, beta } = inputs;
  const eps = attrs.epsilon as number;
  const C = channelsOf(x);
  const rows = rowsOf(x);
  const inst = instanceOf(backend);
  const y = backend.makeOutput(x.shape, 'float32');
  const mean = backend.makeOutput([C], 'float32');
  const variance = backend.makeOutput([C], 'float32');
  // acc: 2·C floats = C float64; a, b: the per-channel scale and shift.
  const tmp = temps(backend, [2 * C, C, C]);
  const [accP, aP, bP] = tmp.infos.map((t) => heapOffset(backend, t));
  const [xP, yP, meanP, varP] = [x, y, mean, variance].map((t) => heapOffset(backend, t));
  const e = inst.exports;
  const buf = () => inst.memory.buffer;
  const acc = () => new Float64Array(buf(), accP, C);
  acc().fill(0);
  e.sums(accP, xP, rows, C / 4);
  const m64 = Float64Array.from(acc(), (s) => s / rows);
  new Float32Array(buf(), meanP, C).set(m64);
  acc().fill(0);
  e.sqdev(accP, xP, meanP, rows, C / 4);
  const v64 = Float64Array.from(acc(), (s) => s / rows);
  new Float32Array(buf(), varP, C).set(v64);
  const g = new Float32Array(buf(), heapOffset(backend, gamma), C);
  const bt = new Float32Array(buf(), heapOffset(backend, beta), C);
  const a = new Float32Array(buf(), aP, C);
  const b = new Float32Array(buf(), bP, C);
  for (let c = 0; c < C; c++) {
    const scale = g[c] / Math.sqrt(v64[c] + eps);
    a[c] = scale;
    b[c] = bt[c] - m64[c] * scale;
  }
  e.affine(yP, xP, aP, bP, rows, C / 4);
  tmp.free();
  stats.forward++;
  return [y, mean, variance];
}

/** Σdy and Σdy·(x − mean) per channel, float64, cached by dy's data (one pass for all three gradients). */
const dotsCache = new WeakMap<object, { x: object; sumDy: Float64Array; sumDyXc: Float64Array }>();
function channelDots(backend: HeapBackend, dy: Info, x: Info, mean: Info) {
  const hit = dotsCache.get(dy.dataId);
  if (hit && hit.x === x.dataId) return hit;
  const C = channelsOf(x);
  const inst = instanceOf(backend);
  const tmp = temps(backend, [2 * C, 2 * C]);
  const [aP, bP] = tmp.infos.map((t) => heapOffset(backend, t));
  new Float64Array(inst.memory.buffer, aP, C).fill(0);
  new Float64Array(inst.memory.buffer, bP, C).fill(0);
  inst.exports.dots(aP, bP, heapOffset(backend, dy), heapOffset(backend, x), heapOffset(backend, mean), rowsOf(x), C / 4);
  const entry = { x: x.dataId, sumDy: new Float64Array(inst.memory.buffer, aP, C).slice(), sumDyXc: new Float64Array(inst.memory.buffer, bP, C).slice() };
  tmp.free();
  dotsCache.set(dy.dataId, entry);
  return entry;
}

/**
 * Backward: inputs dy, x, gamma, mean, variance, dmean, dvariance; attrs epsilon and `output`
 * ('x', 'gamma' or 'beta': the engine asks for each input's gradient separately).
 */
function backward({ inputs, backend, attrs }: { inputs: Record<string, Info>; backend: HeapBackend; attrs: Record<string, unknown> }): Info {
  const { dy, x, gamma, mean, variance, dmean, dvariance } = inputs;
  const eps = attrs.epsilon as number;
  const output = attrs.output as 'x' | 'gamma' | 'beta';
  const C = channelsOf(x);
  const rows = rowsOf(x);
  const { sumDy, sumDyXc } = channelDots(backend, dy, x, mean);
  const inst = instanceOf(backend);
  const read = (t: Info) => new Float32Array(inst.memory.buffer, heapOffset(backend, t), C).slice();
  const v = read(variance);
  const invStd = Float64Array.from(v, (vv) => 1 / Math.sqrt(vv + eps));
  stats.backward++;
  if (output !== 'x') {
    const out = backend.makeOutput([C], 'float32');
    const o = new Float32Array(inst.memory.buffer, heapOffset(backend, out), C);
    for (let c = 0; c < C; c++) o[c] = output === 'beta' ? sumDy[c] : invStd[c] * sumDyXc[c];
    return out;
  }
  const [g, m, dm, dv] = [gamma, mean, dmean, dvariance].map(read);
  const dx = backend.makeOutput(x.shape, 'float32');
  const tmp = temps(backend, [C, C, C]);
  const [aP, bP, cP] = tmp.infos.map((t) => heapOffset(backend, t));
  const a = new Float32Array(inst.memory.buffer, aP, C);
  const b = new Float32Array(inst.memory.buffer, bP, C);
  const c3 = new Float32Array(inst.memory.buffer, cP, C);
  for (let c = 0; c < C; c++) {
    const gs = g[c] * invStd[c];
    const k2 = (2 * dv[c]) / rows - (gs * invStd[c] * invStd[c] * sumDyXc[c]) / rows;
    a[c] = gs;
    b[c] = k2;
    c3[c] = (dm[c] - gs * sumDy[c]) / rows - k2 * m[c];
  }
  inst.exports.affine2(heapOffset(backend, dx), heapOffset(backend, dy), heapOffset(backend, x), aP, bP, cP, rows, C / 4);
  tmp.free();
  return dx;
}

let registered = false;
/** Registers both kernels and the forward's gradient on wasm, once. */
export function registerBatchNormTrainKernels(): void {
  if (registered) return;
  registered = true;
  tf.registerKernel({ kernelName: BN_TRAIN, backendName: 'wasm', kernelFunc: forward as unknown as tf.KernelFunc });
  tf.registerKernel({ kernelName: BN_GRAD, backendName: 'wasm', kernelFunc: backward as unknown as tf.KernelFunc });
  tf.registerGradient({
    kernelName: BN_TRAIN,
    inputsToSave: ['x', 'gamma'],
    outputsToSave: [false, true, true],
    gradFunc: (dys, saved, attrs) => {
      const [dy, dmean, dvariance] = dys as tf.Tensor[];
      const [x, gamma, mean, variance] = saved;
      const run = (output: string) => tf.engine().runKernel(BN_GRAD, { dy, x, gamma, mean, variance, dmean, dvariance }, { epsilon: (attrs as { epsilon: number }).epsilon, output }) as tf.Tensor;
      return { x: () => run('x'), gamma: () => run('gamma'), beta: () => run('beta') };
    },
  });
}

/** Whether the kernels can take this input here: WASM_KERNELS=sparsoup, wasm, float32, channels last, a multiple of 4, module compiled. */
export function batchNormTrainApplies(x: tf.Tensor, axis: number): boolean {
  if (!enabled || wasmKernels() !== 'sparsoup' || tf.getBackend() !== 'wasm' || x.dtype !== 'float32' || x.rank < 2) return false;
  if (axis !== -1 && axis !== x.rank - 1) return false;
  const C = x.shape[x.rank - 1];
  if (C === 0 || C % 4 !== 0 || x.size === 0) return false;
  const backend = tf.backend() as unknown as HeapBackend;
  return heapInstance<BatchNormExports>(backend, KEY, batchNormModule) !== null;
}

/** y, batch mean and batch variance of x over all axes but the last, differentiable in x, gamma, beta. */
export function batchNormTrain(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: number): [tf.Tensor, tf.Tensor1D, tf.Tensor1D] {
  registerBatchNormTrainKernels();
  return tf.engine().runKernel(BN_TRAIN, { x, gamma, beta }, { epsilon }) as unknown as [tf.Tensor, tf.Tensor1D, tf.Tensor1D];
}

// ---- the layer ----

interface BatchNormInternals {
  axis: number;
  momentum: number;
  epsilon: number;
  center: boolean;
  scale: boolean;
  gamma: tf.LayerVariable | null;
  beta: tf.LayerVariable | null;
  movingMean: tf.LayerVariable;
  movingVariance: tf.LayerVariable;
}

type LayerClass = new (args: object) => tf.layers.Layer;
const TfjsBatchNormalization = Object.getPrototypeOf(tf.layers.batchNormalization({})).constructor as LayerClass;

/**
 * tfjs-layers' BatchNormalization whose training-mode call runs on the kernels above where they
 * apply; inference, config, weights and serialisation are the original's.
 */
export class FastBatchNormalization extends TfjsBatchNormalization {
  static className = 'BatchNormalization';

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: { training?: boolean }): tf.Tensor | tf.Tensor[] {
    const self = this as unknown as BatchNormInternals;
    const input = Array.isArray(inputs) ? inputs[0] : inputs;
    const training = kwargs?.training ?? false;
    if (!training || (Array.isArray(inputs) && inputs.length !== 1) || !self.center || !self.scale || !self.gamma || !self.beta || !batchNormTrainApplies(input, self.axis)) {
      return super.call(inputs, kwargs);
    }
    const { gamma, beta } = self;
    return tf.tidy(() => {
      const [y, mean, variance] = batchNormTrain(input, gamma.read(), beta.read(), self.epsilon);
      // The moving averages exactly as tfjs-layers updates them.
      const update = (variable: tf.LayerVariable, value: tf.Tensor) =>
        tf.tidy(() => {
          const orig = variable.read();
          variable.write(tf.sub(orig, tf.mul(tf.sub(orig, value), 1 - self.momentum)));
        });
      update(self.movingMean, mean);
      update(self.movingVariance, variance);
      return y;
    });
  }
}
tf.serialization.registerClass(FastBatchNormalization as unknown as tf.serialization.SerializableConstructor<tf.serialization.Serializable>);

/** A BatchNormalization layer (the templates' constructor). */
export function batchNormalization(args: Record<string, unknown>): tf.layers.Layer {
  return new FastBatchNormalization(args);
}
