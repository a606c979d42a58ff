import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { augmentBatch, augmentSeed } from './augment.js';
import { initBackend } from './backend.js';
import { setWasmKernels } from './kernel-set.js';
import { buildTemplate } from './templates.js';
import { syntheticDataset } from './testing.js';
import { type TrainingConfig, trainModel, validateTrainingConfig } from './train.js';

/** count samples of h × w × c with distinct, non-zero values (so every moved pixel is traceable). */
function batch(count: number, h: number, w: number, c: number): Float32Array {
  return Float32Array.from({ length: count * h * w * c }, (_, i) => i + 1);
}

describe('augmentBatch', () => {
  it('the same seed gives the same augmented batch; different seeds differ', () => {
    const a = batch(16, 8, 8, 1);
    const b = batch(16, 8, 8, 1);
    const c = batch(16, 8, 8, 1);
    augmentBatch(a, 16, [8, 8, 1], 7);
    augmentBatch(b, 16, [8, 8, 1], 7);
    augmentBatch(c, 16, [8, 8, 1], 8);
    expect(b).toEqual(a);
    expect(c).not.toEqual(a);
    expect(a).not.toEqual(batch(16, 8, 8, 1));
  });

  it('each sample is a flipped or unflipped crop of the zero-padded original (checked pixel by pixel)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 31 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 3 }), fc.integer({ min: 0, max: 5 }), (seed, count, c, padding) => {
        const [h, w] = [5, 7];
        const orig = batch(count, h, w, c);
        const x = orig.slice();
        augmentBatch(x, count, [h, w, c], seed, padding);
        const size = h * w * c;
        for (let b = 0; b < count; b++) {
          // Some offset (dy, dx) in [−padding, padding]² and flip reproduce the sample exactly.
          let found = false;
          for (let dy = -padding; dy <= padding && !found; dy++)
            for (let dx = -padding; dx <= padding && !found; dx++)
              for (const flip of [false, true]) {
                let same = true;
                for (let i = 0; i < h && same; i++)
                  for (let j = 0; j < w && same; j++)
                    for (let k = 0; k < c && same; k++) {
                      const si = i + dy;
                      const sj = (flip ? w - 1 - j : j) + dx;
                      const want = si < 0 || si >= h || sj < 0 || sj >= w ? 0 : orig[b * size + (si * w + sj) * c + k];
                      same = x[b * size + (i * w + j) * c + k] === want;
                    }
                if (same) found = true;
              }
          expect(found).toBe(true);
        }
      }),
      { numRuns: 60 },
    );
  });

  it('padding 0 only flips: every sample is the original or its mirror image, and both occur', () => {
    const orig = batch(64, 3, 4, 1);
    const x = orig.slice();
    augmentBatch(x, 64, [3, 4, 1], 123, 0);
    let flipped = 0;
    for (let b = 0; b < 64; b++) {
      const s = x.subarray(b * 12, (b + 1) * 12);
      const o = orig.subarray(b * 12, (b + 1) * 12);
      const mirror = Float32Array.from({ length: 12 }, (_, p) => o[Math.floor(p / 4) * 4 + (3 - (p % 4))]);
      if (s.every((v, p) => v === mirror[p])) flipped++;
      else expect(s).toEqual(o);
    }
    expect(flipped).toBeGreaterThan(10);
    expect(flipped).toBeLessThan(54);
  });

  it('per-step seeds are distinct and depend on the training seed', () => {
    const seeds = new Set(Array.from({ length: 1000 }, (_, s) => augmentSeed(5, s)));
    expect(seeds.size).toBe(1000);
    expect(augmentSeed(6, 0)).not.toBe(augmentSeed(5, 0));
  });
});

describe('trainModel with augment', () => {
  const ds = syntheticDataset({ n: 512, side: 8, classes: 4 });
  const base: TrainingConfig = { seed: 11, epochs: 0.5, batchSize: 32, optimizer: 'sgd', momentum: 0.9, nesterov: false, learningRate: 0.1, schedule: 'linear', warmupFraction: 0.1, weightDecay: 1e-4 };

  beforeAll(async () => {
    await initBackend('wasm');
  });

  const fingerprint = async (config: TrainingConfig) => {
    const model = buildTemplate('cnn-bn', { inputShape: ds.inputShape, classes: ds.classes, seed: 4 });
    await trainModel(model, ds, config);
    const h = createHash('sha256');
    for (const w of model.getWeights()) h.update(Buffer.from((w.dataSync() as Float32Array).buffer));
    model.dispose();
    return h.digest('hex');
  };

  it('off ("none" or absent) is bit-identical to training before augmentation existed', async () => {
    // Recorded with the training loop as it was before `augment` was added (same model, data, config,
    // wasm), when tfjs's kernels ran everything (WASM_KERNELS=tfjs): sparsoup's FMA products and
    // batch-norm kernels round differently.
    const before = '252cb07b8bb7532de059c0d1f49cb2f7e862da4c88d5eaefe116b6c4197fdfc9';
    setWasmKernels('tfjs');
    try {
      expect(await fingerprint(base)).toBe(before);
      expect(await fingerprint({ ...base, augment: 'none' })).toBe(before);
    } finally {
      setWasmKernels('sparsoup');
    }
  });

  it('crop-flip is reproducible by seed and changes the trained weights', async () => {
    const a = await fingerprint({ ...base, augment: 'crop-flip' });
    expect(await fingerprint({ ...base, augment: 'crop-flip' })).toBe(a);
    expect(await fingerprint({ ...base, augment: 'crop-flip', seed: 12 })).not.toBe(a);
    expect(a).not.toBe(await fingerprint(base));
  });

  it('rejects an unknown augmentation', () => {
    expect(() => validateTrainingConfig({ ...base, augment: 'mixup' as never })).toThrow(/training.augment/);
  });

  it('onEpochEnd runs after each complete epoch, with that epoch number', async () => {
    const model = buildTemplate('lenet-300-100', { inputShape: ds.inputShape, classes: ds.classes, seed: 1 });
    const seen: number[] = [];
    await trainModel(model, ds, { ...base, epochs: 2.5 }, { onEpochEnd: (e) => void seen.push(e) });
    expect(seen).toEqual([1, 2]);
    model.dispose();
  });
});
