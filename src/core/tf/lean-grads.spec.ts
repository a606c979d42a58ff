import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { Mulberry32 } from '../random.js';
import { initBackend } from './backend.js';
import { leanVariableGrads } from './lean-grads.js';
import { buildTemplate } from './templates.js';

beforeAll(async () => {
  await initBackend('wasm');
});

/** One training-mode loss of `arch` on a seeded batch, its gradients by both routes, and their peaks. */
async function both(arch: string, batch: number, side: number) {
  const model = buildTemplate(arch, { inputShape: [side, side, 1], classes: 10, seed: 3 });
  const rng = new Mulberry32(9);
  const xs = tf.tensor4d(Float32Array.from({ length: batch * side * side }, () => rng.uniform()), [batch, side, side, 1]);
  const ys = tf.oneHot(tf.tensor1d(Int32Array.from({ length: batch }, (_, i) => i % 10), 'int32'), 10);
  const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
  const loss = () => tf.losses.softmaxCrossEntropy(ys, model.apply(xs, { training: true }) as tf.Tensor) as tf.Scalar;
  // BN's moving statistics move with every training-mode pass: reset them before each route.
  const initial = model.getWeights().map((w) => w.clone());
  const run = async (route: 'tfjs' | 'lean') => {
    model.setWeights(initial);
    const before = tf.memory().numTensors;
    let out: { value: tf.Scalar; grads: Record<string, tf.Tensor | null> } | null = null;
    const profile = await tf.profile(() => {
      out = route === 'tfjs' ? tf.variableGrads(loss, vars) : leanVariableGrads(loss, vars);
    });
    const { value, grads } = out!;
    const result = {
      value: value.dataSync().slice(),
      grads: Object.fromEntries(vars.map((v) => [v.name, grads[v.name]!.dataSync().slice()])),
      stats: model.getWeights().map((w) => w.dataSync().slice()),
      peakBytes: profile.peakBytes,
    };
    tf.dispose([value, ...Object.values(grads).filter((g): g is tf.Tensor => g != null)]);
    return { ...result, leaked: tf.memory().numTensors - before };
  };
  const a = await run('tfjs');
  const b = await run('lean');
  tf.dispose([xs, ys, ...initial]);
  model.dispose();
  return { a, b };
}

describe('leanVariableGrads', () => {
  for (const [arch, batch, side] of [
    ['cnn-bn', 32, 28],
    ['resnet-small', 8, 16], // shortcuts: one tensor feeds two nodes, so gradients accumulate
    ['lenet-300-100', 32, 28],
  ] as const) {
    it(`${arch}: the loss, every gradient and the BN statistics are tf.variableGrads's bit for bit, with a lower peak and no leak`, async () => {
      const { a, b } = await both(arch, batch, side);
      expect(Buffer.from(b.value.buffer)).toEqual(Buffer.from(a.value.buffer));
      expect(Object.keys(b.grads)).toEqual(Object.keys(a.grads));
      for (const name of Object.keys(a.grads)) expect(Buffer.from(b.grads[name].buffer), name).toEqual(Buffer.from(a.grads[name].buffer));
      for (const [i, s] of b.stats.entries()) expect(Buffer.from(s.buffer)).toEqual(Buffer.from(a.stats[i].buffer));
      expect(b.leaked).toBe(0);
      expect(a.leaked).toBe(0);
      expect(b.peakBytes).toBeLessThan(a.peakBytes);
      console.log(`${arch} batch ${batch}: peak ${(a.peakBytes / 2 ** 20).toFixed(1)} MiB (tf.variableGrads) → ${(b.peakBytes / 2 ** 20).toFixed(1)} MiB`);
    });
  }

  it('refuses non-trainable variables and a non-scalar f', () => {
    const v = tf.variable(tf.ones([2]), false);
    expect(() => leanVariableGrads(() => tf.sum(v), [v])).toThrow(/trainable/);
    const w = tf.variable(tf.ones([2]), true);
    expect(() => leanVariableGrads(() => tf.mul(w, 2) as unknown as tf.Scalar, [w])).toThrow(/scalar/);
    tf.dispose([v, w]);
  });
});
