import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../core/tf/backend.js';
import { buildTemplate } from '../core/tf/templates.js';
import { syntheticDataset } from '../core/tf/testing.js';
import { type GradientHelper, type TrainingConfig, trainModel } from '../core/tf/train.js';
import { startGradientHelper } from './gradient-helper.js';

const config: TrainingConfig = {
  seed: 3,
  epochs: 2,
  batchSize: 32,
  optimizer: 'sgd',
  momentum: 0.9,
  nesterov: false,
  learningRate: 0.05,
  schedule: 'constant',
  weightDecay: 1e-4,
};

describe('data-parallel training with a gradient helper thread', () => {
  const ds = syntheticDataset({ n: 256, side: 8, seed: 5 });
  const helpers: GradientHelper[] = [];
  beforeAll(async () => {
    await initBackend('wasm');
  });
  afterAll(async () => {
    for (const h of helpers) await h.close();
  });

  it('without batch norm, gives the single-thread result (the averaged gradient is the full-batch gradient)', async () => {
    const build = () => buildTemplate('lenet-300-100', { inputShape: [8, 8, 1], classes: 4, seed: 7 });
    const alone = build();
    const paired = build();
    const helper = await startGradientHelper(paired, { backend: 'wasm', inputShape: [8, 8, 1], classes: 4 });
    helpers.push(helper);
    const a = await trainModel(alone, ds, config);
    const b = await trainModel(paired, ds, config, { helper });
    expect(b.steps).toBe(a.steps);
    for (let e = 0; e < a.epochLosses.length; e++) expect(b.epochLosses[e]).toBeCloseTo(a.epochLosses[e], 5);
    for (let i = 0; i < alone.weights.length; i++) {
      const x = alone.weights[i].read().dataSync();
      const y = paired.weights[i].read().dataSync();
      let worst = 0;
      for (let k = 0; k < x.length; k++) worst = Math.max(worst, Math.abs(x[k] - y[k]));
      expect(worst, alone.weights[i].originalName).toBeLessThan(1e-5);
    }
    // The weights moved (the comparison is not between two untouched models).
    expect(a.epochLosses[1]).toBeLessThan(a.epochLosses[0]);
    alone.dispose();
    paired.dispose();
  });

  it('trains a batch-norm model (each part normalised with its own statistics) and learns', async () => {
    const model = buildTemplate('cnn-bn', { inputShape: [8, 8, 1], classes: 4, seed: 8 });
    const helper = await startGradientHelper(model, { backend: 'wasm', inputShape: [8, 8, 1], classes: 4 });
    helpers.push(helper);
    const r = await trainModel(model, ds, { ...config, epochs: 3 }, { helper });
    expect(r.epochLosses[2]).toBeLessThan(r.epochLosses[0]);
    model.dispose();
  });

  it('refuses a helper that holds another model', async () => {
    const model = buildTemplate('lenet-300-100', { inputShape: [8, 8, 1], classes: 4, seed: 1 });
    const other = buildTemplate('cnn-bn', { inputShape: [8, 8, 1], classes: 4, seed: 1 });
    const helper = await startGradientHelper(other, { backend: 'wasm', inputShape: [8, 8, 1], classes: 4 });
    helpers.push(helper);
    await expect(trainModel(model, ds, config, { helper })).rejects.toThrow(/another model/);
    model.dispose();
    other.dispose();
  });
});
