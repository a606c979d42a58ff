import * as tf from '@tensorflow/tfjs';
import { fillBatch, type ImageDataset, sampleSize } from '../data/dataset.js';
import { CoreInputError } from '../errors.js';
import { shuffleInto, streamSeed } from '../random.js';

export interface RecalibrationOptions {
  /** Fraction of the train split to run through the model (SMS default 0.2). */
  fraction?: number;
  batchSize?: number;
  /** Picks which train samples are used (a seeded shuffle, then the first fraction). */
  seed?: number;
  /** Use these indices instead of a fraction of `dataset.splits.train`. */
  indices?: Uint32Array;
}

export interface RecalibrationResult {
  /** Names of the recalibrated BatchNormalization layers, in model order. */
  layers: string[];
  samples: number;
  batches: number;
}

/** Chan et al.'s pairwise update: merges a batch's (n, mean, M2) into the running totals. */
function merge(total: { n: number; mean: Float64Array; m2: Float64Array }, n: number, mean: Float32Array, variance: Float32Array): void {
  const nA = total.n;
  const nAB = nA + n;
  for (let c = 0; c < mean.length; c++) {
    const delta = mean[c] - total.mean[c];
    total.mean[c] += (delta * n) / nAB;
    total.m2[c] += variance[c] * n + (delta * delta * nA * n) / nAB;
  }
  total.n = nAB;
}

/** The moments of every BatchNormalization layer's input over one batch (one entry per layer, model order). */
export interface BatchMoments {
  /** Positions per channel the batch contributed (samples × spatial positions). */
  n: number;
  mean: Float32Array;
  variance: Float32Array;
}

/** The train samples a recalibration runs over: a seeded shuffle of the train split, then its first `fraction`. */
export function recalibrationIndices(dataset: ImageDataset, options: RecalibrationOptions = {}): Uint32Array {
  if (options.indices) return options.indices;
  const fraction = options.fraction ?? 0.2;
  if (!(fraction > 0 && fraction <= 1)) {
    throw new CoreInputError('bad-recalibration', `fraction must be in (0, 1], got ${fraction}`, { fraction });
  }
  const train = dataset.splits.train;
  const shuffled = shuffleInto(train, streamSeed(options.seed ?? 0, 0x62e), new Uint32Array(train.length));
  return shuffled.subarray(0, Math.max(1, Math.round(fraction * train.length)));
}

function batchNormLayers(model: tf.LayersModel): tf.layers.Layer[] {
  return model.layers.filter((l) => l.getClassName() === 'BatchNormalization');
}

/**
 * Forward passes in training mode over `indices` (in batches of `batchSize` from the first index),
 * returning each batch's per-channel moments of every BN layer's input. Split `indices` at a multiple
 * of `batchSize` and the parts give the same batches as the whole, so two threads can each run a part
 * and `assignBatchNormStatistics` over the concatenation is the single-thread result bit for bit.
 */
export function batchNormMoments(model: tf.LayersModel, dataset: ImageDataset, indices: Uint32Array, batchSize = 128): BatchMoments[][] {
  const bnLayers = batchNormLayers(model);
  if (bnLayers.length === 0 || indices.length === 0) return [];
  const axes: number[][] = [];
  for (const layer of bnLayers) {
    const axis = (layer.getConfig().axis as number | number[] | undefined) ?? -1;
    const rank = (layer.input as tf.SymbolicTensor).shape.length;
    const a = (Array.isArray(axis) ? axis : [axis]).map((x) => (x < 0 ? x + rank : x));
    if (a.length !== 1 || a[0] !== rank - 1) {
      throw new CoreInputError('unsupported-batch-norm', `batch norm ${layer.name} normalises axis ${axis}; only the last (channels) axis is supported`, {}, 422);
    }
    axes.push(Array.from({ length: rank - 1 }, (_, i) => i));
  }
  const probe = tf.model({ inputs: model.inputs, outputs: bnLayers.map((l) => l.input as tf.SymbolicTensor) });
  const [h, w, c] = dataset.inputShape;
  const size = sampleSize(dataset);
  const xBuf = new Float32Array(batchSize * size);
  const yBuf = new Int32Array(batchSize);
  const out: BatchMoments[][] = [];
  for (let start = 0; start < indices.length; start += batchSize) {
    const count = Math.min(batchSize, indices.length - start);
    fillBatch(dataset, indices, start, count, xBuf, yBuf);
    out.push(
      tf.tidy(() => {
        const xs = tf.tensor4d(xBuf.subarray(0, count * size), [count, h, w, c]);
        const outs = probe.apply(xs, { training: true }) as tf.Tensor | tf.Tensor[];
        const list = Array.isArray(outs) ? outs : [outs];
        return list.map((t, i) => {
          const m = tf.moments(t, axes[i]);
          return { n: t.size / (t.shape.at(-1) as number), mean: m.mean.dataSync() as Float32Array, variance: m.variance.dataSync() as Float32Array };
        });
      }),
    );
  }
  return out;
}

/**
 * Combines per-batch moments (in order, Chan's update in float64) into the population mean and
 * variance of every BN layer and writes them as its moving statistics.
 */
export function assignBatchNormStatistics(model: tf.LayersModel, batches: readonly BatchMoments[][]): string[] {
  const bnLayers = batchNormLayers(model);
  const totals = bnLayers.map((l) => {
    const channels = (l.input as tf.SymbolicTensor).shape.at(-1) as number;
    return { n: 0, mean: new Float64Array(channels), m2: new Float64Array(channels) };
  });
  for (const moments of batches) {
    moments.forEach((m, i) => {
      merge(totals[i], m.n, m.mean, m.variance);
    });
  }
  bnLayers.forEach((layer, i) => {
    const byName = new Map(layer.weights.map((v) => [v.originalName.split('/').pop(), v]));
    const mean = byName.get('moving_mean');
    const variance = byName.get('moving_variance');
    if (!mean || !variance) throw new Error(`batch norm ${layer.name} has no moving statistics`);
    const t = totals[i];
    const pop = Float32Array.from(t.m2, (m2) => m2 / t.n);
    // In a tidy: the variables keep their own references, the temporaries are freed.
    tf.tidy(() => {
      mean.write(tf.tensor(Float32Array.from(t.mean), mean.shape as number[]));
      variance.write(tf.tensor(pop, variance.shape as number[]));
    });
  });
  return bnLayers.map((l) => l.name);
}

/**
 * Batch-norm recalibration (SMS, after averaging): forward passes in training mode over a fraction
 * of the train split re-estimate every BatchNormalization layer's moving mean and variance, which
 * are then written and stay frozen (inference mode reads them).
 *
 * How: tfjs-layers does update moving statistics when a model is applied with `training: true`,
 * but only as an exponential moving average (momentum 0.9/0.99), which depends on the stale
 * values and on the momentum. Instead a sub-model that outputs each BN layer's *input* is run in
 * training mode (so every earlier BN normalises with batch statistics, as in PyTorch's train mode),
 * and the exact per-channel mean and population variance over all sampled positions are
 * accumulated in float64 (Chan's parallel update of per-batch moments) and assigned. The EMA
 * updates the layers make along the way are overwritten.
 */
export function recalibrateBatchNorm(model: tf.LayersModel, dataset: ImageDataset, options: RecalibrationOptions = {}): RecalibrationResult {
  if (batchNormLayers(model).length === 0) return { layers: [], samples: 0, batches: 0 };
  const indices = recalibrationIndices(dataset, options);
  if (indices.length === 0) throw new CoreInputError('empty-split', 'no samples to recalibrate batch norm with', {}, 422);
  const batches = batchNormMoments(model, dataset, indices, options.batchSize ?? 128);
  return { layers: assignBatchNormStatistics(model, batches), samples: indices.length, batches: batches.length };
}
