import * as tf from '@tensorflow/tfjs';
import { fillBatch, type ImageDataset, sampleSize } from '../data/dataset.js';
import { CoreInputError } from '../errors.js';
import { isPrunable } from '../pruning/prunable.js';
import { shuffleInto, streamSeed } from '../random.js';
import { augmentBatch, augmentSeed } from './augment.js';
import { leanVariableGrads } from './lean-grads.js';
import { optimizerStep } from './optimizer-step.js';
import { type AllrInputs, learningRateAt, stepsFor, type TrainingConfig, validateTrainingConfig } from './training-config.js';

/** At most this many steps' losses wait on the device before one read-back. */
export const LOSS_READBACK_EVERY = 16;

export type { TrainingConfig } from './training-config.js';
// The schedule and the checks are tf-free (the main process uses them without loading TensorFlow.js).
export { type AllrInputs, allrInitialRate, learningRateAt, stepsFor, validateTrainingConfig } from './training-config.js';

/**
 * A mask: weight name (`fc1/kernel`) → one value per element, non-zero = kept, 0 = pruned, in the
 * weight's row-major order (Uint8Array or Float32Array of 0/1). Weights not named are unmasked.
 * Packed bit masks are unpacked by the caller.
 */
export type WeightMask = Map<string, Uint8Array | Float32Array>;

export interface TrainProgress {
  /** 1-based epoch the last step belonged to. */
  epoch: number;
  /** Optimizer steps done so far, of `steps`. */
  step: number;
  steps: number;
  /** Mean training loss over the steps since the previous report. */
  loss: number;
  learningRate: number;
  /** Throughput since the previous report. */
  samplesPerSecond: number;
}

export interface TrainOptions {
  mask?: WeightMask;
  onProgress?: (p: TrainProgress) => void;
  /** Report every this many steps (and after the last). Default 50. */
  progressEvery?: number;
  /** Checked between steps; the loop yields to the event loop each step so an abort can land. */
  signal?: AbortSignal;
  /** Required for schedule "allr". */
  allr?: AllrInputs;
  /**
   * Which trainable weights weight decay applies to. Default "all" (kernels, biases, BN γ/β), as the
   * SMS code does with SGD's weight_decay; "kernels" exempts biases and batch-norm parameters.
   */
  weightDecayOn?: 'all' | 'kernels';
  /** Train on these sample indices instead of `dataset.splits.train`. */
  indices?: Uint32Array;
  /** Called after each complete epoch (1-based), between steps: the model holds that epoch's weights. */
  onEpochEnd?: (epoch: number) => void | Promise<void>;
}

export interface TrainResult {
  steps: number;
  epochs: number;
  samples: number;
  durationMs: number;
  samplesPerSecond: number;
  /** Mean training loss of each (possibly partial) epoch. */
  epochLosses: number[];
  finalLearningRate: number;
}

interface Slot {
  name: string;
  variable: tf.Variable;
  decay: boolean;
  /** float 0/1, multiplies the gradient. */
  maskFloat?: tf.Tensor;
  /** bool, selects kept weights; pruned ones become +0 (never −0). */
  maskBool?: tf.Tensor;
  zeros?: tf.Tensor;
  state: tf.Variable[];
}

function abortError(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('training was aborted', 'AbortError');
}

function buildSlots(model: tf.LayersModel, mask: WeightMask | undefined, decayOn: 'all' | 'kernels', optimizer: 'sgd' | 'adam'): Slot[] {
  const trainable = new Map(model.trainableWeights.map((w) => [w.originalName, w]));
  if (mask) {
    const all = new Map(model.weights.map((w) => [w.originalName, w]));
    const mismatches: { tensor: string; kind: string }[] = [];
    for (const [name, bits] of mask) {
      const w = all.get(name);
      if (!w) mismatches.push({ tensor: name, kind: 'missing' });
      else if (!trainable.has(name)) mismatches.push({ tensor: name, kind: 'not-trainable' });
      else if (bits.length !== w.shape.reduce((a: number, b) => a * (b ?? 1), 1)) mismatches.push({ tensor: name, kind: 'shape' });
    }
    if (mismatches.length) throw new CoreInputError('mask-mismatch', 'the mask does not fit the model', { mismatches }, 422);
  }
  return model.trainableWeights.map((w) => {
    const variable = w.read() as tf.Variable;
    const slot: Slot = {
      name: w.originalName,
      variable,
      // 'kernels': the prunable weights under the one shared rule (no biases, no normalisation).
      decay: decayOn === 'all' || isPrunable({ name: w.originalName, dtype: 'F32', shape: w.shape as number[] }),
      state: [],
    };
    const bits = mask?.get(w.originalName);
    if (bits) {
      slot.maskFloat = tf.tensor(Float32Array.from(bits, (b) => (b ? 1 : 0)), variable.shape);
      slot.maskBool = tf.tidy(() => tf.notEqual(slot.maskFloat!, 0));
      slot.zeros = tf.zerosLike(variable);
    }
    const nState = optimizer === 'adam' ? 2 : 1;
    // In a tidy: the variable keeps its own reference to the zeros, the temporary is freed.
    for (let i = 0; i < nState; i++) slot.state.push(tf.tidy(() => tf.variable(tf.zerosLike(variable), false)));
    return slot;
  });
}

function enforceMask(slots: Slot[]): void {
  tf.tidy(() => {
    for (const s of slots) if (s.maskBool) s.variable.assign(tf.where(s.maskBool, s.variable, s.zeros!));
  });
}

/**
 * Trains `model` in place with a hand-written optimizer step, so that:
 * - the seed alone fixes the batch order (seeded shuffle of the train split each epoch);
 * - the mask is enforced before the first step and after every step (pruned weights are exactly
 *   +0, their gradients and optimizer state are masked too), so the trained model's zero pattern
 *   equals the mask;
 * - weight decay is coupled L2 on the chosen weights (see `weightDecayOn`);
 * - batches are filled into reused typed arrays (never sliced out of a big tensor).
 * BN moving statistics update as the layers do in training mode (momentum 0.9 in the templates).
 */
export async function trainModel(model: tf.LayersModel, dataset: ImageDataset, config: TrainingConfig, options: TrainOptions = {}): Promise<TrainResult> {
  validateTrainingConfig(config, options.allr);
  const { signal, onProgress } = options;
  const progressEvery = Math.max(1, options.progressEvery ?? 50);
  const source = options.indices ?? dataset.splits.train;
  if (source.length === 0) throw new CoreInputError('empty-split', 'the training split is empty', {}, 422);
  const { stepsPerEpoch, totalSteps } = stepsFor(source.length, config);
  const [h, w, c] = dataset.inputShape;
  const size = sampleSize(dataset);
  const xBuf = new Float32Array(config.batchSize * size);
  const yBuf = new Int32Array(config.batchSize);
  const order = new Uint32Array(source.length);
  const augment = config.augment === 'crop-flip';
  const scratch = augment ? new Float32Array(size) : undefined;
  const slots = buildSlots(model, options.mask, options.weightDecayOn ?? 'all', config.optimizer);
  const varList = slots.map((s) => s.variable);

  const epochLosses: number[] = [];
  // Loss scalars of the steps not read back yet; each belongs to the current epoch and window.
  const pendingLosses: tf.Tensor[] = [];
  const flushLosses = () => {
    if (pendingLosses.length === 0) return;
    const values = pendingLosses.length === 1 ? pendingLosses[0].dataSync() : tf.tidy(() => tf.stack(pendingLosses).dataSync());
    for (const v of values) {
      epochLossSum += v;
      epochSteps++;
      windowLoss += v;
      windowSteps++;
    }
    tf.dispose(pendingLosses);
    pendingLosses.length = 0;
  };
  let epochLossSum = 0;
  let epochSteps = 0;
  let windowLoss = 0;
  let windowSteps = 0;
  let windowSamples = 0;
  let windowStart = performance.now();
  const start = windowStart;
  let samples = 0;
  let lr = 0;
  let step = 0;
  try {
    enforceMask(slots);
    for (; step < totalSteps; step++) {
      if (signal) {
        // Let pending events (a cancel message to this worker) run, then check.
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (signal.aborted) throw abortError(signal);
      }
      const epoch = Math.floor(step / stepsPerEpoch);
      const pos = step % stepsPerEpoch;
      if (pos === 0) {
        if (epoch > 0) {
          epochLosses.push(epochLossSum / epochSteps);
          epochLossSum = 0;
          epochSteps = 0;
        }
        shuffleInto(source, streamSeed(config.seed, epoch), order);
      }
      const count = Math.min(config.batchSize, source.length - pos * config.batchSize);
      fillBatch(dataset, order, pos * config.batchSize, count, xBuf, yBuf);
      if (augment) augmentBatch(xBuf, count, [h, w, c], augmentSeed(config.seed, step), undefined, scratch);
      lr = learningRateAt(step, totalSteps, config, options.allr);
      const stepAttrs = { optimizer: config.optimizer, learningRate: lr, momentum: config.momentum, nesterov: config.nesterov, t: step + 1 };
      const { grads, loss } = tf.tidy(() => {
        const xs = tf.tensor4d(xBuf.subarray(0, count * size), [count, h, w, c]);
        const ys = tf.oneHot(tf.tensor1d(yBuf.subarray(0, count), 'int32'), dataset.classes);
        const { value, grads } = leanVariableGrads(() => {
          const logits = model.apply(xs, { training: true }) as tf.Tensor;
          return tf.losses.softmaxCrossEntropy(ys, logits) as tf.Scalar;
        }, varList);
        return { loss: value, grads: slots.map((s) => grads[s.variable.name]) };
      });
      tf.tidy(() => {
        slots.forEach((s, i) => {
          const attrs = { ...stepAttrs, weightDecay: config.weightDecay > 0 && s.decay ? config.weightDecay : 0 };
          optimizerStep(s, grads[i], attrs);
        });
      });
      tf.dispose(grads);
      pendingLosses.push(loss);
      const windowEnds = (step + 1) % progressEvery === 0 || step + 1 === totalSteps;
      const epochEnds = (step + 1) % stepsPerEpoch === 0;
      // The loss is read back only where it is reported (a progress window, an epoch's end, every
      // LOSS_READBACK_EVERY steps at most), not with a synchronising dataSync every step.
      if (windowEnds || epochEnds || pendingLosses.length >= LOSS_READBACK_EVERY) flushLosses();
      samples += count;
      windowSamples += count;
      if (onProgress && windowEnds) {
        const now = performance.now();
        onProgress({
          epoch: epoch + 1,
          step: step + 1,
          steps: totalSteps,
          loss: windowLoss / windowSteps,
          learningRate: lr,
          samplesPerSecond: (windowSamples * 1000) / Math.max(now - windowStart, 1e-6),
        });
        windowLoss = 0;
        windowSteps = 0;
        windowSamples = 0;
        windowStart = now;
      }
      if (options.onEpochEnd && epochEnds) await options.onEpochEnd((step + 1) / stepsPerEpoch);
    }
    if (epochSteps > 0) epochLosses.push(epochLossSum / epochSteps);
  } finally {
    tf.dispose(pendingLosses);
    for (const s of slots) tf.dispose([s.maskFloat, s.maskBool, s.zeros, ...s.state].filter((x): x is tf.Tensor => x != null));
  }
  const durationMs = performance.now() - start;
  return {
    steps: step,
    epochs: step / stepsPerEpoch,
    samples,
    durationMs,
    samplesPerSecond: (samples * 1000) / durationMs,
    epochLosses,
    finalLearningRate: lr,
  };
}
