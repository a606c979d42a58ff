import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { CoreInputError } from '../errors.js';
import { initBackend } from './backend.js';
import { loadModel, namedWeights, saveModel } from './model-io.js';
import { buildTemplate } from './templates.js';

const MNIST = { inputShape: [28, 28, 1] as [number, number, number], classes: 10 };

function weightValues(model: tf.LayersModel): Map<string, Float32Array> {
  return new Map(model.weights.map((w) => [w.originalName, w.read().dataSync() as Float32Array]));
}

describe('templates', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  it('lenet-300-100 has the stable names and sizes of a 784-300-100-10 MLP', () => {
    const m = buildTemplate('lenet-300-100', { ...MNIST, seed: 1 });
    expect(m.weights.map((w) => [w.originalName, w.shape])).toEqual([
      ['fc1/kernel', [784, 300]],
      ['fc1/bias', [300]],
      ['fc2/kernel', [300, 100]],
      ['fc2/bias', [100]],
      ['fc3/kernel', [100, 10]],
      ['fc3/bias', [10]],
    ]);
    expect(m.countParams()).toBe(266_610);
    m.dispose();
  });

  it('cnn-bn and resnet-small have named conv, BN and dense weights, and output logits per class', () => {
    const cnn = buildTemplate('cnn-bn', { ...MNIST, seed: 1 });
    expect(cnn.weights.map((w) => w.originalName)).toEqual([
      'conv1/kernel',
      'bn1/gamma',
      'bn1/beta',
      'conv2/kernel',
      'bn2/gamma',
      'bn2/beta',
      'fc1/kernel',
      'fc1/bias',
      'fc2/kernel',
      'fc2/bias',
      // tfjs lists non-trainable weights after the trainable ones.
      'bn1/moving_mean',
      'bn1/moving_variance',
      'bn2/moving_mean',
      'bn2/moving_variance',
    ]);
    const res = buildTemplate('resnet-small', { inputShape: [16, 16, 3], classes: 7, seed: 1 });
    const names = res.weights.map((w) => w.originalName);
    expect(names).toContain('block2_proj/kernel');
    expect(names).toContain('block3_bn2/moving_variance');
    expect(res.trainableWeights.at(-1)?.originalName).toBe('fc/bias');
    expect(new Set(names).size).toBe(names.length);
    const out = tf.tidy(() => (res.predict(tf.zeros([2, 16, 16, 3])) as tf.Tensor).shape);
    expect(out).toEqual([2, 7]);
    cnn.dispose();
    res.dispose();
  });

  it('keeps the initial weights seeded runs were trained from (values pinned before the PRNGs moved to core/random.ts)', () => {
    const m = buildTemplate('lenet-300-100', { ...MNIST, seed: 1 });
    const firsts = m.getWeights().map((w) => Array.from((w.dataSync() as Float32Array).slice(0, 3)));
    expect(firsts).toEqual([
      [-0.05643557757139206, -0.023084834218025208, 0.001995223108679056],
      [0, 0, 0],
      [-0.08622674643993378, 0.13149943947792053, 0.06976955384016037],
      [0, 0, 0],
      [0.07088407129049301, -0.1996529996395111, -0.17292532324790955],
      [0, 0, 0],
    ]);
    m.dispose();
  });

  it('the same seed gives identical weights, another seed different ones, even in one process', () => {
    for (const arch of ['lenet-300-100', 'cnn-bn', 'resnet-small']) {
      const shape = { inputShape: [8, 8, 1] as [number, number, number], classes: 4 };
      const a = buildTemplate(arch, { ...shape, seed: 7 });
      const b = buildTemplate(arch, { ...shape, seed: 7 });
      const c = buildTemplate(arch, { ...shape, seed: 8 });
      const [va, vb, vc] = [a, b, c].map(weightValues);
      expect([...vb.keys()]).toEqual([...va.keys()]);
      for (const [name, v] of va) expect(vb.get(name)).toEqual(v);
      expect(vc.get(arch === 'lenet-300-100' ? 'fc1/kernel' : arch === 'cnn-bn' ? 'conv1/kernel' : 'stem_conv/kernel')).not.toEqual(
        va.get(arch === 'lenet-300-100' ? 'fc1/kernel' : arch === 'cnn-bn' ? 'conv1/kernel' : 'stem_conv/kernel'),
      );
      for (const m of [a, b, c]) m.dispose();
    }
  });

  it('rejects an unknown architecture with a client error', () => {
    expect(() => buildTemplate('vgg', { ...MNIST, seed: 1 })).toThrow(CoreInputError);
  });
});

describe('model I/O', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  it('round-trips names, values and predictions through model.json + weight bytes', async () => {
    const model = buildTemplate('cnn-bn', { inputShape: [8, 8, 1], classes: 4, seed: 3 });
    // Non-default BN statistics, so the round trip must carry them.
    namedWeights(model).get('bn1/moving_mean')!.write(tf.fill([32], 0.25));
    const saved = await saveModel(model);
    expect(saved.modelJson.weightsManifest[0].paths).toEqual(['model.weights.bin']);
    expect(saved.modelJson.weightsManifest[0].weights.map((w) => w.name)).toEqual(model.weights.map((w) => w.originalName));
    expect(saved.weightData.byteLength).toBe(model.weights.reduce((s, w) => s + 4 * w.shape.reduce((a: number, b) => a * (b ?? 1), 1), 0));

    const bytes = new TextEncoder().encode(JSON.stringify(saved.modelJson));
    const loaded = await loadModel(bytes, new Uint8Array(saved.weightData));
    const before = weightValues(model);
    const after = weightValues(loaded);
    expect([...after.keys()]).toEqual([...before.keys()]);
    for (const [name, v] of before) expect(after.get(name)).toEqual(v);
    const x = tf.randomUniform([3, 8, 8, 1], 0, 1, 'float32', 1);
    const [p1, p2] = [model, loaded].map((m) => tf.tidy(() => (m.predict(x) as tf.Tensor).dataSync()));
    expect(p2).toEqual(p1);
    tf.dispose([x]);
    model.dispose();
    loaded.dispose();
  });

  it('rejects weight bytes that do not match the manifest, and non-layers JSON', async () => {
    const model = buildTemplate('lenet-300-100', { inputShape: [4, 4, 1], classes: 3, seed: 1 });
    const saved = await saveModel(model);
    await expect(loadModel(saved.modelJson, saved.weightData.slice(4))).rejects.toMatchObject({ code: 'bad-weights' });
    await expect(loadModel('{"format":"graph-model"}', new ArrayBuffer(0))).rejects.toMatchObject({ code: 'bad-model-json' });
    await expect(loadModel('not json', new ArrayBuffer(0))).rejects.toBeInstanceOf(CoreInputError);
    model.dispose();
  });
});
