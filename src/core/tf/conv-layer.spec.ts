import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from './backend.js';
import { FastConv2D } from './conv-layer.js';
import { buildTemplate } from './templates.js';

describe('FastConv2D (conv-layer.ts)', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  it("gives tfjs-layers' Conv2D output bit for bit, serialises as Conv2D and loads back into the fast class", async () => {
    const model = buildTemplate('cnn-bn', { inputShape: [8, 8, 1], classes: 3, seed: 5 });
    const json = model.toJSON(null, false) as unknown as { config: { layers: { class_name: string }[] } };
    expect(json.config.layers.filter((l) => l.class_name === 'Conv2D')).toHaveLength(2);
    const again = await tf.models.modelFromJSON(json as unknown as tf.io.ModelJSON);
    again.setWeights(model.getWeights());
    expect(again.layers.filter((l) => l instanceof FastConv2D)).toHaveLength(2);
    // The original class with the same config and weights, through tf.fused.conv2d.
    const fast = model.getLayer('conv2');
    const original = tf.layers.conv2d({ ...(fast.getConfig() as object), name: 'original' } as Parameters<typeof tf.layers.conv2d>[0]);
    const x = tf.randomNormal([4, 4, 4, 32], 0, 1, 'float32', 6);
    const want = original.apply(x) as tf.Tensor;
    original.setWeights(fast.getWeights());
    const a = (fast.apply(x) as tf.Tensor).dataSync();
    const b = (original.apply(x) as tf.Tensor).dataSync();
    expect(Array.from(a)).toEqual(Array.from(b));
    tf.dispose([x, want]);
    model.dispose();
    again.dispose();
  });

  it("a model's first convolution computes no input gradient in training (the fused op's gradient would)", async () => {
    const model = buildTemplate('cnn-bn', { inputShape: [8, 8, 1], classes: 3, seed: 5 });
    const x = tf.randomNormal([4, 8, 8, 1], 0, 1, 'float32', 7);
    const vars = model.trainableWeights.map((w) => (w as unknown as { val: tf.Variable }).val);
    const profile = await tf.profile(() => {
      const { grads, value } = tf.variableGrads(() => (model.apply(x, { training: true }) as tf.Tensor).square().sum() as tf.Scalar, vars);
      tf.dispose([value, ...Object.values(grads)]);
    });
    const inputGrads = profile.kernels.filter((k) => k.name === 'Conv2DBackpropInput');
    // conv2's input gradient only: [4, 4, 4, 32] (conv1's would be [4, 8, 8, 1]).
    expect(inputGrads.map((k) => k.outputShapes[0])).toEqual([[4, 4, 4, 32]]);
    expect(profile.kernels.filter((k) => k.name === 'Conv2DBackpropFilter')).toHaveLength(2);
    tf.dispose(x);
    model.dispose();
  });
});
