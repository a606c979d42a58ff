import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from './backend.js';
import { recalibrateBatchNorm } from './bn-recalibration.js';
import { evaluateModel, softmaxRows } from './evaluate.js';
import { namedWeights } from './model-io.js';
import { buildTemplate } from './templates.js';
import { syntheticDataset } from './testing.js';
import { type TrainingConfig, trainModel } from './train.js';

const config: TrainingConfig = {
  seed: 1,
  epochs: 2,
  batchSize: 32,
  optimizer: 'sgd',
  momentum: 0.9,
  nesterov: false,
  learningRate: 0.05,
  schedule: 'cosine',
  weightDecay: 1e-4,
};

const stat = (m: tf.LayersModel, name: string) => namedWeights(m).get(name)!.read().dataSync() as Float32Array;

describe('evaluateModel', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  it('returns N×K logits and labels in split order, with accuracy and loss that match them', () => {
    const ds = syntheticDataset({ n: 200, side: 8, classes: 4 });
    const model = buildTemplate('lenet-300-100', { inputShape: ds.inputShape, classes: 4, seed: 1 });
    const ev = evaluateModel(model, ds, 'test', { batchSize: 16 }); // 50 samples: 3 full batches + 2
    expect(ev.count).toBe(50);
    expect(ev.logits).toHaveLength(200);
    expect(Array.from(ev.labels)).toEqual(Array.from(ds.splits.test, (i) => ds.y[i]));
    const { loss, acc } = tf.tidy(() => {
      const logits = tf.tensor2d(ev.logits, [50, 4]);
      const onehot = tf.oneHot(tf.tensor1d(ev.labels, 'int32'), 4);
      return {
        loss: tf.losses.softmaxCrossEntropy(onehot, logits).dataSync()[0],
        acc: tf.mean(tf.equal(tf.argMax(logits, 1), tf.tensor1d(ev.labels, 'int32'))).dataSync()[0],
      };
    });
    expect(ev.loss).toBeCloseTo(loss, 5);
    expect(ev.accuracy).toBeCloseTo(acc, 6);
    // The logits of one sample equal a direct forward pass over it.
    const i = ds.splits.test[7];
    const direct = tf.tidy(() => (model.predict(tf.tensor4d(ds.x.slice(i * 64, (i + 1) * 64), [1, 8, 8, 1])) as tf.Tensor).dataSync());
    for (let k = 0; k < 4; k++) expect(ev.logits[7 * 4 + k]).toBeCloseTo(direct[k], 5);
    const p = softmaxRows(ev.logits, 4);
    expect(p[0] + p[1] + p[2] + p[3]).toBeCloseTo(1, 6);
    model.dispose();
  });
});

describe('recalibrateBatchNorm', () => {
  const ds = syntheticDataset({ n: 512, side: 8, classes: 4 });

  beforeAll(async () => {
    await initBackend('wasm');
  });

  it('sets each BN layer to the exact mean and variance of its training-mode inputs', async () => {
    const model = buildTemplate('cnn-bn', { inputShape: ds.inputShape, classes: 4, seed: 1 });
    const indices = ds.splits.train.subarray(0, 100);
    const r = recalibrateBatchNorm(model, ds, { indices, batchSize: 32 }); // 4 uneven batches
    expect(r).toEqual({ layers: ['bn1', 'bn2'], samples: 100, batches: 4 });
    // bn1's input is conv1's output, which no batch statistic touches: compute its moments directly.
    const conv1 = tf.model({ inputs: model.inputs, outputs: model.getLayer('conv1').output as tf.SymbolicTensor });
    const { mean, variance } = tf.tidy(() => {
      const x = tf.tensor4d(
        Float32Array.from(Array.from(indices).flatMap((i) => Array.from(ds.x.subarray(i * 64, (i + 1) * 64)))),
        [100, 8, 8, 1],
      );
      const m = tf.moments(conv1.predict(x) as tf.Tensor, [0, 1, 2]);
      return { mean: m.mean.dataSync(), variance: m.variance.dataSync() };
    });
    const gotMean = stat(model, 'bn1/moving_mean');
    const gotVar = stat(model, 'bn1/moving_variance');
    for (let c = 0; c < 32; c++) {
      expect(gotMean[c]).toBeCloseTo(mean[c], 5);
      expect(Math.abs(gotVar[c] - variance[c]) / variance[c]).toBeLessThan(1e-4);
    }
    // bn2 changed away from its initial (0, 1) too.
    expect(Array.from(stat(model, 'bn2/moving_variance')).some((v) => Math.abs(v - 1) > 1e-3)).toBe(true);
    model.dispose();
  });

  it('repairs broken statistics: accuracy collapses with wrong BN stats and comes back after recalibration', async () => {
    const model = buildTemplate('cnn-bn', { inputShape: ds.inputShape, classes: 4, seed: 3 });
    await trainModel(model, ds, config);
    const trained = evaluateModel(model, ds, 'test').accuracy;
    expect(trained).toBeGreaterThan(0.9);
    // What averaging models does to BN: statistics that no longer match the weights.
    for (const name of ['bn1', 'bn2']) {
      const w = namedWeights(model);
      const mean = w.get(`${name}/moving_mean`)!;
      const variance = w.get(`${name}/moving_variance`)!;
      tf.tidy(() => {
        mean.write(tf.add(mean.read(), tf.randomNormal(mean.shape as number[], 0, 3, 'float32', 9)));
        variance.write(tf.mul(variance.read(), 0.01));
      });
    }
    const broken = evaluateModel(model, ds, 'test').accuracy;
    expect(broken).toBeLessThan(trained - 0.3);
    const before = tf.memory().numTensors;
    recalibrateBatchNorm(model, ds, { fraction: 0.5, seed: 1 });
    expect(tf.memory().numTensors).toBe(before);
    const repaired = evaluateModel(model, ds, 'test').accuracy;
    expect(repaired).toBeGreaterThan(trained - 0.05);
    model.dispose();
  });

  it('is a no-op on a model without batch norm', () => {
    const model = buildTemplate('lenet-300-100', { inputShape: ds.inputShape, classes: 4, seed: 1 });
    expect(recalibrateBatchNorm(model, ds)).toEqual({ layers: [], samples: 0, batches: 0 });
    model.dispose();
  });
});
