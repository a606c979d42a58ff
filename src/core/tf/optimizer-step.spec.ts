import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { Mulberry32 } from '../random.js';
import { initBackend } from './backend.js';
import {
  fusedOptimizerAvailable,
  fusedOptimizerStep,
  type OptimizerSlotTensors,
  type OptimizerStepAttrs,
  unfusedOptimizerStep,
} from './optimizer-step.js';
import { buildTemplate } from './templates.js';
import { syntheticDataset } from './testing.js';
import { type TrainingConfig, trainModel, type WeightMask } from './train.js';

function slot(values: Float32Array, shape: number[], mask: Uint8Array | null, nState: number): OptimizerSlotTensors {
  const variable = tf.variable(tf.tensor(values, shape), true);
  const s: OptimizerSlotTensors = {
    variable,
    state: Array.from({ length: nState }, () => tf.tidy(() => tf.variable(tf.zerosLike(variable), false))),
  };
  if (mask) {
    s.maskFloat = tf.tensor(Float32Array.from(mask), shape);
    s.maskBool = tf.tidy(() => tf.notEqual(s.maskFloat!, 0));
    s.zeros = tf.zerosLike(variable);
  }
  return s;
}

function disposeSlot(s: OptimizerSlotTensors): void {
  tf.dispose([s.variable, ...s.state, s.maskFloat, s.maskBool, s.zeros].filter((x): x is tf.Tensor => x != null));
}

function maxRelDiff(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(1e-3, Math.abs(a[i]), Math.abs(b[i])));
  return worst;
}

describe('fused optimizer step (wasm)', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  it('is registered on wasm', () => {
    expect(tf.getBackend()).toBe('wasm');
    expect(fusedOptimizerAvailable()).toBe(true);
  });

  const cases: [string, Omit<OptimizerStepAttrs, 't' | 'learningRate'>][] = [
    ['sgd, momentum, weight decay', { optimizer: 'sgd', momentum: 0.9, nesterov: false, weightDecay: 5e-4 }],
    ['sgd, nesterov', { optimizer: 'sgd', momentum: 0.9, nesterov: true, weightDecay: 1e-4 }],
    ['sgd, no momentum, no decay', { optimizer: 'sgd', momentum: 0, nesterov: false, weightDecay: 0 }],
    ['adam, weight decay', { optimizer: 'adam', momentum: 0, nesterov: false, weightDecay: 1e-4 }],
  ];
  for (const [name, attrs] of cases) {
    for (const masked of [false, true]) {
      it(`matches the chain of ops to 1e-6 over 5 steps: ${name}${masked ? ', masked' : ''}`, () => {
        const rng = new Mulberry32(7);
  const rand = () => rng.uniform();
        const shape = [3, 5, 7];
        const n = 105;
        const w0 = Float32Array.from({ length: n }, () => rand() * 2 - 1);
        const mask = masked ? Uint8Array.from({ length: n }, () => (rand() < 0.6 ? 1 : 0)) : null;
        if (mask) for (let i = 0; i < n; i++) if (!mask[i]) w0[i] = 0;
        const nState = attrs.optimizer === 'adam' ? 2 : 1;
        const a = slot(w0, shape, mask, nState);
        const b = slot(w0, shape, mask, nState);
        for (let t = 1; t <= 5; t++) {
          const g = tf.tensor(Float32Array.from({ length: n }, () => rand() * 2 - 1), shape);
          const step = { ...attrs, learningRate: 0.05 * t, t };
          tf.tidy(() => fusedOptimizerStep(a, g, step));
          tf.tidy(() => unfusedOptimizerStep(b, g, step));
          g.dispose();
        }
        const wa = a.variable.dataSync() as Float32Array;
        const wb = b.variable.dataSync() as Float32Array;
        expect(maxRelDiff(wa, wb)).toBeLessThanOrEqual(1e-6);
        for (let k = 0; k < nState; k++) expect(maxRelDiff(a.state[k].dataSync() as Float32Array, b.state[k].dataSync() as Float32Array)).toBeLessThanOrEqual(1e-6);
        // The weights moved, and pruned ones are exactly +0 (not −0), their state too.
        expect(maxRelDiff(wa, w0)).toBeGreaterThan(1e-3);
        if (mask) {
          for (let i = 0; i < n; i++) {
            if (!mask[i]) {
              expect(Object.is(wa[i], 0)).toBe(true);
              expect(a.state[0].dataSync()[i]).toBe(0);
            } else expect(wa[i]).not.toBe(0);
          }
        }
        disposeSlot(a);
        disposeSlot(b);
      });
    }
  }

  it('writes a fresh weight tensor and leaves no tensor behind', () => {
    const s = slot(new Float32Array([1, 2, 3, 4]), [4], new Uint8Array([1, 0, 1, 1]), 1);
    const before = tf.memory().numTensors;
    const oldData = s.variable.dataId;
    const g = tf.tensor([0.5, 0.5, 0.5, 0.5]);
    tf.tidy(() => fusedOptimizerStep(s, g, { optimizer: 'sgd', learningRate: 0.1, momentum: 0.9, nesterov: false, weightDecay: 0, t: 1 }));
    g.dispose();
    expect(s.variable.dataId).not.toBe(oldData);
    expect(tf.memory().numTensors).toBe(before);
    expect(Array.from(s.variable.dataSync())).toEqual([Math.fround(1 - Math.fround(0.5 * Math.fround(0.1))), 0, Math.fround(3 - 0.05), Math.fround(4 - 0.05)].map(Math.fround));
    disposeSlot(s);
  });

  it('a masked training run gives the same weights fused and unfused (1e-5), pruned weights +0', async () => {
    const ds = syntheticDataset({ n: 256, side: 8, seed: 3 });
    const config: TrainingConfig = {
      seed: 2,
      epochs: 1,
      batchSize: 32,
      optimizer: 'sgd',
      momentum: 0.9,
      nesterov: false,
      learningRate: 0.05,
      schedule: 'linear',
      weightDecay: 1e-4,
    };
    const build = () => buildTemplate('cnn-bn', { inputShape: [8, 8, 1], classes: 4, seed: 4 });
    const a = build();
    const b = build();
    const rng = new Mulberry32(9);
  const rand = () => rng.uniform();
    const mask: WeightMask = new Map();
    for (const w of a.trainableWeights) {
      if (w.originalName.endsWith('/kernel')) mask.set(w.originalName, Uint8Array.from({ length: w.shape.reduce((x: number, y) => x * (y ?? 1), 1) }, () => (rand() < 0.5 ? 1 : 0)));
    }
    const ra = await trainModel(a, ds, config, { mask, fusedOptimizer: true });
    const rb = await trainModel(b, ds, config, { mask, fusedOptimizer: false });
    expect(ra.epochLosses[0]).toBeCloseTo(rb.epochLosses[0], 5);
    for (let i = 0; i < a.weights.length; i++) {
      const wa = a.weights[i].read().dataSync() as Float32Array;
      const wb = b.weights[i].read().dataSync() as Float32Array;
      expect(maxRelDiff(wa, wb), a.weights[i].originalName).toBeLessThanOrEqual(1e-5);
      const bits = mask.get(a.weights[i].originalName);
      if (bits) for (let k = 0; k < bits.length; k++) if (!bits[k]) expect(Object.is(wa[k], 0)).toBe(true);
    }
    a.dispose();
    b.dispose();
  });
});
