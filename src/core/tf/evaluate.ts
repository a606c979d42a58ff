import * as tf from '@tensorflow/tfjs';
import { fillBatch, type ImageDataset, type SplitName, sampleSize } from '../data/dataset.js';
import { defaultSparseMatMul, type SparseMatMulMode, withSparseMatMul } from './sparse-matmul.js';

export interface EvaluationOutput {
  /** N × K logits, row-major, in the order of the evaluated indices. */
  logits: Float32Array;
  /** N labels. */
  labels: Int32Array;
  classes: number;
  count: number;
  /** Top-1 accuracy (first maximum wins a tie). */
  accuracy: number;
  /** Mean softmax cross-entropy (natural log). */
  loss: number;
}

/** Row-wise softmax of N × K logits (for ECE and friends), computed in float64, stored float32. */
export function softmaxRows(logits: Float32Array, classes: number): Float32Array {
  const out = new Float32Array(logits.length);
  for (let r = 0; r < logits.length; r += classes) {
    let max = Number.NEGATIVE_INFINITY;
    for (let k = 0; k < classes; k++) max = Math.max(max, logits[r + k]);
    let sum = 0;
    for (let k = 0; k < classes; k++) sum += Math.exp(logits[r + k] - max);
    for (let k = 0; k < classes; k++) out[r + k] = Math.exp(logits[r + k] - max) / sum;
  }
  return out;
}

export interface EvaluateOptions {
  batchSize?: number;
  /**
   * Dense layers whose kernel is pruned (at least the crossover's zeros, sparse-matmul.ts) run as a sparse ×
   * dense product on the wasm backend ('auto'); 'dense' keeps every layer dense, 'sparse' takes the
   * sparse path for every eligible layer. Default: the thread's setting (EVAL_SPARSE, 'auto').
   * Other backends ignore it. See src/core/tf/sparse-matmul.ts.
   */
  sparse?: SparseMatMulMode;
}

/**
 * Forward pass (inference mode: BN uses its moving statistics) over a split or explicit indices,
 * batch by batch from reused buffers. Returns logits and labels for the shared metrics, plus
 * accuracy and mean loss.
 */
export function evaluateModel(
  model: tf.LayersModel,
  dataset: ImageDataset,
  split: SplitName | Uint32Array,
  options: EvaluateOptions = {},
): EvaluationOutput {
  return withSparseMatMul(options.sparse ?? defaultSparseMatMul(), () => evaluateBatches(model, dataset, split, options.batchSize ?? 512));
}

function evaluateBatches(model: tf.LayersModel, dataset: ImageDataset, split: SplitName | Uint32Array, batchSize: number): EvaluationOutput {
  const indices = typeof split === 'string' ? dataset.splits[split] : split;
  const [h, w, c] = dataset.inputShape;
  const size = sampleSize(dataset);
  const K = dataset.classes;
  const n = indices.length;
  const logits = new Float32Array(n * K);
  const labels = new Int32Array(n);
  const xBuf = new Float32Array(Math.min(batchSize, Math.max(n, 1)) * size);
  const yBuf = new Int32Array(Math.min(batchSize, Math.max(n, 1)));
  for (let start = 0; start < n; start += batchSize) {
    const count = Math.min(batchSize, n - start);
    fillBatch(dataset, indices, start, count, xBuf, yBuf);
    labels.set(yBuf.subarray(0, count), start);
    // The tensor leaves the tidy, its values are read outside it: a typed array returned from tf.tidy
    // is walked element by element in search of tensors (~0.5 µs per value: 60 ms per pass of the
    // MNIST test set at 10 classes, more than lenet-300-100's forward pass itself).
    const outT = tf.tidy(() => model.apply(tf.tensor4d(xBuf.subarray(0, count * size), [count, h, w, c]), { training: false }) as tf.Tensor);
    const out = outT.dataSync() as Float32Array;
    outT.dispose();
    if (out.length !== count * K) throw new Error(`the model outputs ${out.length / count} values per sample; the dataset has ${K} classes`);
    logits.set(out, start * K);
  }
  let correct = 0;
  let lossSum = 0;
  for (let i = 0; i < n; i++) {
    const r = i * K;
    let best = 0;
    let max = Number.NEGATIVE_INFINITY;
    for (let k = 0; k < K; k++) {
      if (logits[r + k] > max) {
        max = logits[r + k];
        best = k;
      }
    }
    if (best === labels[i]) correct++;
    let sum = 0;
    for (let k = 0; k < K; k++) sum += Math.exp(logits[r + k] - max);
    lossSum += Math.log(sum) + max - logits[r + labels[i]];
  }
  return { logits, labels, classes: K, count: n, accuracy: n ? correct / n : Number.NaN, loss: n ? lossSum / n : Number.NaN };
}
