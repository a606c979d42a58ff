import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from './backend.js';
import { BN_TRAIN_KERNEL, installFusedBatchNorm, setFusedBatchNorm } from './batch-norm-kernel.js';
import { mulberry32 } from './random.js';

function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(1e-2, Math.abs(a[i]), Math.abs(b[i])));
  return worst;
}

describe('fused training-mode batch norm (wasm)', () => {
  beforeAll(async () => {
    await initBackend('wasm');
    installFusedBatchNorm(); // opt-in (see the module's note)
  });

  it('is registered on wasm', () => {
    expect(tf.getKernel(BN_TRAIN_KERNEL, 'wasm')).toBeTruthy();
  });

  for (const shape of [
    [4, 5, 5, 3],
    [16, 7],
  ]) {
    it(`gives tfjs-layers' output, gradients (x, γ, β) and moving statistics: input ${JSON.stringify(shape)}`, () => {
      const rand = mulberry32(11);
      const n = shape.reduce((a, b) => a * b, 1);
      const c = shape.at(-1)!;
      const x = tf.tensor(Float32Array.from({ length: n }, () => rand() * 4 + 1), shape);
      const weight = tf.tensor(Float32Array.from({ length: n }, () => rand() - 0.5), shape); // loss = Σ w·y
      const gamma = Float32Array.from({ length: c }, () => rand() + 0.5);
      const beta = Float32Array.from({ length: c }, () => rand() - 0.5);
      const run = (on: boolean) => {
        setFusedBatchNorm(on);
        const layer = tf.layers.batchNormalization({ momentum: 0.9, epsilon: 1e-5 });
        layer.build(shape);
        tf.tidy(() => layer.setWeights([tf.tensor(gamma), tf.tensor(beta), tf.zeros([c]), tf.ones([c])]));
        const vars = layer.trainableWeights.map((w) => w.read() as tf.Variable);
        const out = tf.tidy(() => {
          const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(layer.apply(x, { training: true }) as tf.Tensor, weight)) as tf.Scalar, vars);
          const dx = tf.grad((xx: tf.Tensor) => tf.sum(tf.mul(layer.apply(xx, { training: true }) as tf.Tensor, weight)))(x);
          const y = layer.apply(x, { training: true }) as tf.Tensor;
          return { loss: value.dataSync()[0], y: y.dataSync(), dx: dx.dataSync(), grads: vars.map((v) => grads[v.name].dataSync()) };
        });
        const moving = layer.getWeights().slice(2).map((t) => t.dataSync());
        for (const w of layer.weights) w.dispose();
        return { ...out, moving };
      };
      const before = tf.memory().numTensors;
      const fused = run(true);
      const stock = run(false);
      setFusedBatchNorm(true);
      // The kernel sums in float64, tfjs-layers in float32: agreement to float32 noise, not bits.
      expect(relDiff(fused.y, stock.y)).toBeLessThan(1e-4);
      expect(relDiff(fused.dx, stock.dx)).toBeLessThan(1e-4);
      for (let i = 0; i < 2; i++) expect(relDiff(fused.grads[i], stock.grads[i])).toBeLessThan(1e-4);
      for (let i = 0; i < 2; i++) expect(relDiff(fused.moving[i], stock.moving[i])).toBeLessThan(1e-5);
      // The gradients are not trivially zero (Σ w·y with random w).
      expect(Math.max(...Array.from(fused.dx, Math.abs))).toBeGreaterThan(1e-3);
      expect(tf.memory().numTensors).toBeLessThanOrEqual(before + 2); // x and weight, nothing leaked
      tf.dispose([x, weight]);
    });
  }
});
