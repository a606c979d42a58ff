import * as tf from '@tensorflow/tfjs';
import fc from 'fast-check';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from './backend.js';
import { batchNormTrain, batchNormTrainInternals, FastBatchNormalization } from './batch-norm-train.js';
import { setWasmKernels } from './kernel-set.js';
import { buildTemplate } from './templates.js';
import { syntheticDataset } from './testing.js';
import { trainModel } from './train.js';

/** tfjs-layers' training-mode chain: moments over every axis but the last, then batchNorm. */
function chain(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number): [tf.Tensor, tf.Tensor, tf.Tensor] {
  const axes = Array.from({ length: x.rank - 1 }, (_, i) => i);
  const { mean, variance } = tf.moments(x, axes);
  return [tf.batchNorm(x, mean, variance, beta, gamma, eps), mean, variance];
}

function expectClose(got: tf.Tensor, want: tf.Tensor, rel: number) {
  const g = got.dataSync();
  const w = want.dataSync();
  expect(got.shape).toEqual(want.shape);
  let peak = 0;
  for (const v of w) peak = Math.max(peak, Math.abs(v));
  for (let i = 0; i < w.length; i++) expect(Math.abs(g[i] - w[i])).toBeLessThanOrEqual(rel * (peak + 1e-6));
}

describe('batch norm in training mode on the wasm kernels (batch-norm-train.ts)', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });
  afterEach(() => batchNormTrainInternals.setEnabled(true));

  it('property: y, the batch statistics and the gradients of x, γ, β (through y, the mean and the variance) match tfjs within float32 rounding', () => {
    let seed = 1;
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 6 }), fc.constantFrom(4, 8, 12, 32), fc.double({ min: -3, max: 3, noNaN: true }), (n, side, c, offset) => {
        tf.tidy(() => {
          const shape = [n, side, side, c];
          const x = tf.randomNormal(shape, offset, 1.5, 'float32', seed++);
          const gamma = tf.randomNormal([c], 1, 0.3, 'float32', seed++);
          const beta = tf.randomNormal([c], 0, 0.3, 'float32', seed++);
          const wy = tf.randomNormal(shape, 0, 1, 'float32', seed++);
          const wm = tf.randomNormal([c], 0, 1, 'float32', seed++);
          const wv = tf.randomNormal([c], 0, 1, 'float32', seed++);
          const run = (f: typeof chain) => {
            const loss = (a: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => {
              const [y, m, v] = f(a, g, b, 1e-3);
              return tf.sum(tf.mul(y, wy)).add(tf.sum(tf.mul(m, wm))).add(tf.sum(tf.mul(v, wv)));
            };
            return [...f(x, gamma, beta, 1e-3), ...tf.grads(loss)([x, gamma, beta])];
          };
          batchNormTrainInternals.resetStats();
          const ours = run(batchNormTrain);
          expect(batchNormTrainInternals.stats).toEqual({ forward: 2, backward: 3 });
          const theirs = run(chain);
          const names = ['y', 'mean', 'variance', 'dx', 'dγ', 'dβ'];
          // A rows-term float32 sum (tfjs's side) is accurate to about rows·2⁻²⁴ relative.
          const rel = Math.max(2e-5, n * side * side * 2 ** -22);
          ours.forEach((t, i) => {
            expect(names[i]).toBeTruthy();
            expectClose(t, theirs[i], rel);
          });
        });
      }),
      { numRuns: 40, seed: 7 },
    );
  });

  it('a BatchNormalization layer serialises as tfjs-layers\' own, loads back into the fast class, and infers the same', async () => {
    const model = buildTemplate('cnn-bn', { inputShape: [8, 8, 1], classes: 3, seed: 2 });
    const json = model.toJSON(null, false) as unknown as { config: { layers: { class_name: string }[] } };
    expect(json.config.layers.filter((l) => l.class_name === 'BatchNormalization')).toHaveLength(2);
    const again = await tf.models.modelFromJSON(json as unknown as tf.io.ModelJSON);
    again.setWeights(model.getWeights());
    expect(again.layers.filter((l) => l instanceof FastBatchNormalization)).toHaveLength(2);
    const x = tf.randomNormal([4, 8, 8, 1], 0, 1, 'float32', 3);
    expectClose(again.predict(x) as tf.Tensor, model.predict(x) as tf.Tensor, 1e-6);
    tf.dispose([x]);
    model.dispose();
    again.dispose();
  });

  it('training cnn-bn: the same loss curve, weights and moving statistics as tfjs\'s chain, to float32 rounding, and no tensor left behind', async () => {
    const ds = syntheticDataset({ n: 256, side: 8, classes: 4, seed: 9 });
    const config = { seed: 3, epochs: 1, batchSize: 32, optimizer: 'sgd' as const, momentum: 0.9, nesterov: false, learningRate: 0.05, schedule: 'constant' as const, warmupFraction: 0, weightDecay: 1e-4 };
    const train = async (fast: boolean) => {
      batchNormTrainInternals.setEnabled(fast);
      batchNormTrainInternals.resetStats();
      const model = buildTemplate('cnn-bn', { inputShape: ds.inputShape, classes: ds.classes, seed: 4 });
      const before = tf.memory().numTensors;
      const r = await trainModel(model, ds, config);
      expect(tf.memory().numTensors).toBe(before);
      const weights = model.weights.map((w) => ({ name: w.originalName, v: w.read().dataSync().slice() }));
      const calls = { ...batchNormTrainInternals.stats };
      model.dispose();
      return { r, weights, calls };
    };
    const fast = await train(true);
    const slow = await train(false);
    expect(fast.calls.forward).toBe(2 * fast.r.steps); // two layers, every step
    expect(fast.r.steps).toBeGreaterThanOrEqual(4);
    expect(slow.calls).toEqual({ forward: 0, backward: 0 });
    expect(fast.r.epochLosses[0]).toBeCloseTo(slow.r.epochLosses[0], 4);
    for (let i = 0; i < fast.weights.length; i++) {
      const a = fast.weights[i].v;
      const b = slow.weights[i].v;
      let peak = 0;
      let worst = 0;
      for (let j = 0; j < b.length; j++) {
        peak = Math.max(peak, Math.abs(b[j]));
        worst = Math.max(worst, Math.abs(a[j] - b[j]));
      }
      // A few SGD steps amplify float32 differences a little; far below any training effect.
      expect(worst, fast.weights[i].name).toBeLessThan(1e-3 * peak + 1e-6);
    }
  });

  it('falls back to tfjs\'s chain where the kernels do not apply: channels not a multiple of 4, inference, WASM_KERNELS=tfjs', () => {
    const layer = new FastBatchNormalization({});
    const x3 = tf.randomNormal([2, 3, 3, 3], 0, 1, 'float32', 5);
    batchNormTrainInternals.resetStats();
    const y = layer.apply(x3, { training: true }) as tf.Tensor;
    expect(batchNormTrainInternals.stats.forward).toBe(0);
    const [want] = chain(x3, tf.ones([3]), tf.zeros([3]), 1e-3);
    expectClose(y, want, 1e-5);
    const x4 = tf.randomNormal([2, 3, 3, 4], 0, 1, 'float32', 6);
    const layer4 = new FastBatchNormalization({});
    layer4.apply(x4, { training: false });
    expect(batchNormTrainInternals.stats.forward).toBe(0);
    layer4.apply(x4, { training: true });
    expect(batchNormTrainInternals.stats.forward).toBe(1);
    setWasmKernels('tfjs');
    try {
      tf.tidy(() => layer4.apply(x4, { training: true }) as tf.Tensor);
      expect(batchNormTrainInternals.stats.forward).toBe(1);
    } finally {
      setWasmKernels('sparsoup');
    }
    tf.dispose([x3, x4, y, want]);
  });
});
