import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { CoreInputError } from '../errors.js';
import { Mulberry32 } from '../random.js';
import { initBackend } from './backend.js';
import { evaluateModel } from './evaluate.js';
import { buildTemplate } from './templates.js';
import { syntheticDataset } from './testing.js';
import { allrInitialRate, learningRateAt, stepsFor, type TrainingConfig, trainModel, type WeightMask } from './train.js';

const base: TrainingConfig = {
  seed: 1,
  epochs: 1,
  batchSize: 32,
  optimizer: 'sgd',
  momentum: 0.9,
  nesterov: false,
  learningRate: 0.1,
  schedule: 'linear',
  warmupFraction: 0.1,
  weightDecay: 1e-4,
};

describe('learningRateAt', () => {
  const T = 100; // warm-up W = 10 steps
  const at = (step: number, c: Partial<TrainingConfig>, allr?: Parameters<typeof learningRateAt>[3]) =>
    learningRateAt(step, T, { ...base, learningRate: 0.4, ...c }, allr);

  it('constant: the peak everywhere, no warm-up', () => {
    for (const t of [0, 5, 50, 99]) expect(at(t, { schedule: 'constant' })).toBe(0.4);
  });

  it('linear: cosine warm-up to the peak, then linear to 0', () => {
    expect(at(0, {})).toBe(0);
    expect(at(5, {})).toBeCloseTo(0.2, 12); // (1 − cos(π/2))/2 = 1/2
    expect(at(10, {})).toBeCloseTo(0.4, 12);
    expect(at(55, {})).toBeCloseTo(0.2, 12); // halfway through the 90 decay steps
    expect(at(99, {})).toBeCloseTo(0.4 / 90, 12);
  });

  it('cosine: warm-up, then η₀(1 + cos(π progress))/2', () => {
    expect(at(10, { schedule: 'cosine' })).toBeCloseTo(0.4, 12);
    expect(at(40, { schedule: 'cosine' })).toBeCloseTo(0.3, 12); // progress 1/3 → 3/4 of the peak
    expect(at(55, { schedule: 'cosine' })).toBeCloseTo(0.2, 12);
    expect(at(2.5, { schedule: 'cosine' })).toBeCloseTo((0.4 * (1 - Math.cos(Math.PI / 4))) / 2, 12);
  });

  it('warmupFraction 0 starts at the peak', () => {
    expect(at(0, { warmupFraction: 0 })).toBe(0.4);
    expect(at(50, { warmupFraction: 0 })).toBeCloseTo(0.2, 12);
  });

  it('allr: η₀ = clip((d/√p)·η_max, min(E_r/E_p, 1)·η_max, η_max), then warm-up and linear decay from η₀', () => {
    const allr = { relativeDistance: 0.1, pruneRate: 0.25, retrainToPretrainRatio: 0.1 };
    expect(allrInitialRate(0.4, allr)).toBeCloseTo(0.08, 12); // d/√p = 0.2 inside [0.1, 1]
    expect(allrInitialRate(0.4, { ...allr, relativeDistance: 0.01 })).toBeCloseTo(0.04, 12); // raised to E_r/E_p
    expect(allrInitialRate(0.4, { ...allr, relativeDistance: 0.9 })).toBe(0.4); // capped at η_max
    expect(allrInitialRate(0.4, { ...allr, relativeDistance: 0.01, retrainToPretrainRatio: 3 })).toBe(0.4); // min(3, 1) = 1
    expect(at(5, { schedule: 'allr' }, allr)).toBeCloseTo(0.04, 12);
    expect(at(10, { schedule: 'allr' }, allr)).toBeCloseTo(0.08, 12);
    expect(at(55, { schedule: 'allr' }, allr)).toBeCloseTo(0.04, 12);
    expect(() => at(10, { schedule: 'allr' })).toThrow(CoreInputError);
  });

  it('fractional epochs round the step count; the last partial batch is kept', () => {
    expect(stepsFor(100, { epochs: 1, batchSize: 32 })).toEqual({ stepsPerEpoch: 4, totalSteps: 4 });
    expect(stepsFor(100, { epochs: 2.5, batchSize: 32 })).toEqual({ stepsPerEpoch: 4, totalSteps: 10 });
    expect(stepsFor(100, { epochs: 0.01, batchSize: 32 })).toEqual({ stepsPerEpoch: 4, totalSteps: 1 });
  });
});

function values(model: tf.LayersModel): Map<string, Float32Array> {
  return new Map(model.weights.map((w) => [w.originalName, w.read().dataSync() as Float32Array]));
}

function randomMask(model: tf.LayersModel, keep: number, seed: number): WeightMask {
  const rng = new Mulberry32(seed);
  const rand = () => rng.uniform();
  const mask: WeightMask = new Map();
  for (const w of model.trainableWeights) {
    if (!w.originalName.endsWith('/kernel')) continue;
    const n = w.shape.reduce((a: number, b) => a * (b ?? 1), 1);
    mask.set(w.originalName, Uint8Array.from({ length: n }, () => (rand() < keep ? 1 : 0)));
  }
  return mask;
}

describe('trainModel', () => {
  const ds = syntheticDataset({ n: 512, side: 8, classes: 4 });
  const shape = { inputShape: ds.inputShape, classes: ds.classes };

  beforeAll(async () => {
    await initBackend('wasm');
  });

  it('learns the synthetic task (SGD and Adam) and reports progress', async () => {
    for (const optimizer of ['sgd', 'adam'] as const) {
      const model = buildTemplate('lenet-300-100', { ...shape, seed: 1 });
      const before = evaluateModel(model, ds, 'test');
      const reports: number[] = [];
      const r = await trainModel(
        model,
        ds,
        { ...base, optimizer, learningRate: optimizer === 'adam' ? 1e-3 : 0.05, epochs: 3, nesterov: true },
        { progressEvery: 5, onProgress: (p) => reports.push(p.step) },
      );
      const after = evaluateModel(model, ds, 'test');
      expect(r.steps).toBe(3 * Math.ceil(ds.splits.train.length / 32));
      expect(reports.at(-1)).toBe(r.steps);
      expect(reports[0]).toBe(5);
      expect(r.epochLosses).toHaveLength(3);
      expect(r.epochLosses[2]).toBeLessThan(r.epochLosses[0]);
      expect(after.accuracy).toBeGreaterThan(0.9);
      expect(after.loss).toBeLessThan(before.loss);
      model.dispose();
    }
  });

  it('enforces the mask after every step: zero pattern equals the mask, pruned weights are +0', async () => {
    const model = buildTemplate('cnn-bn', { ...shape, seed: 2 });
    const mask = randomMask(model, 0.3, 5);
    const initial = values(model);
    const seen: boolean[] = [];
    await trainModel(model, ds, { ...base, epochs: 1, weightDecay: 5e-3, nesterov: true }, {
      mask,
      progressEvery: 1,
      // Checked at every step, not just at the end.
      onProgress: () => {
        const w = model.getWeights()[0].dataSync();
        seen.push(mask.get('conv1/kernel')!.every((m, i) => (m === 0) === (w[i] === 0)));
      },
    });
    expect(seen.every(Boolean)).toBe(true);
    const trained = values(model);
    for (const [name, bits] of mask) {
      const w = trained.get(name)!;
      for (let i = 0; i < bits.length; i++) {
        if (bits[i] === 0) expect(Object.is(w[i], 0)).toBe(true);
        else expect(w[i]).not.toBe(0);
      }
    }
    // Kept weights and the unmasked ones moved.
    expect(trained.get('fc1/kernel')).not.toEqual(initial.get('fc1/kernel'));
    expect(trained.get('bn1/gamma')).not.toEqual(initial.get('bn1/gamma'));
    model.dispose();
  });

  it('rejects a mask that does not fit the model', async () => {
    const model = buildTemplate('lenet-300-100', { ...shape, seed: 1 });
    const bad: WeightMask = new Map([['fc1/kernel', new Uint8Array(5)]]);
    await expect(trainModel(model, ds, base, { mask: bad })).rejects.toMatchObject({ code: 'mask-mismatch' });
    const unknown: WeightMask = new Map([['nope/kernel', new Uint8Array(5)]]);
    await expect(trainModel(model, ds, base, { mask: unknown })).rejects.toBeInstanceOf(CoreInputError);
    await expect(trainModel(model, ds, { ...base, batchSize: 0 })).rejects.toMatchObject({ code: 'bad-training-config' });
    model.dispose();
  });

  it('is deterministic: same seed → identical weights; another seed → different batch order and weights', async () => {
    const run = async (seed: number) => {
      const model = buildTemplate('cnn-bn', { ...shape, seed: 4 });
      await trainModel(model, ds, { ...base, seed, epochs: 0.5 });
      const v = values(model);
      model.dispose();
      return v;
    };
    const a = await run(11);
    const b = await run(11);
    const c = await run(12);
    for (const [name, v] of a) expect(b.get(name)).toEqual(v);
    expect(c.get('conv1/kernel')).not.toEqual(a.get('conv1/kernel'));
  });

  it('keeps the tensor count flat across steps and leaves nothing behind', async () => {
    const model = buildTemplate('cnn-bn', { ...shape, seed: 1 });
    const start = tf.memory().numTensors;
    const counts: number[] = [];
    await trainModel(model, ds, { ...base, optimizer: 'adam', learningRate: 1e-3, epochs: 1 }, {
      mask: randomMask(model, 0.5, 1),
      progressEvery: 1,
      onProgress: () => counts.push(tf.memory().numTensors),
    });
    expect(counts.length).toBeGreaterThan(5);
    expect(new Set(counts).size).toBe(1);
    expect(tf.memory().numTensors).toBe(start);
    model.dispose();
  });

  it('stops promptly when the signal aborts, and cleans up', async () => {
    const model = buildTemplate('lenet-300-100', { ...shape, seed: 1 });
    const start = tf.memory().numTensors;
    const controller = new AbortController();
    let last = 0;
    const done = trainModel(model, ds, { ...base, epochs: 50 }, {
      signal: controller.signal,
      progressEvery: 1,
      onProgress: (p) => {
        last = p.step;
        if (p.step === 3) setImmediate(() => controller.abort());
      },
    });
    await expect(done).rejects.toMatchObject({ name: 'AbortError' });
    expect(last).toBeLessThanOrEqual(5);
    expect(tf.memory().numTensors).toBe(start);
    model.dispose();
  });
});
