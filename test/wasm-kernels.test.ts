import { join } from 'node:path';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadBuiltin } from '../src/core/data/builtin.js';
import { initBackend } from '../src/core/tf/backend.js';
import { saveModel } from '../src/core/tf/model-io.js';
import { buildTemplate } from '../src/core/tf/templates.js';
import { trainModel } from '../src/core/tf/train.js';
import { startTestApp, type TestApp } from './support/app.js';

/**
 * WASM_KERNELS through the API: the default service runs dense products on the Relaxed SIMD FMA
 * kernel and says so in /health; WASM_KERNELS=tfjs keeps XNNPACK; a trained model evaluates alike on both.
 */
describe("WASM_KERNELS: sparsoup's kernels and tfjs's over HTTP", () => {
  let fma: TestApp;
  let xnn: TestApp;
  beforeAll(async () => {
    const info = await initBackend();
    if (info.name !== 'wasm') throw new Error(`this test is about the wasm backend, got ${info.name}`);
    fma = await startTestApp({ WORKERS: '1' });
    xnn = await startTestApp({ WORKERS: '1', WASM_KERNELS: 'tfjs' });
  });
  afterAll(async () => {
    await fma?.close();
    await xnn?.close();
  });

  it('rejects a bad WASM_KERNELS at start-up, naming it; the default is sparsoup', async () => {
    const { loadConfig } = await import('../src/config/config.js');
    expect(() => loadConfig({ WASM_KERNELS: 'blas' })).toThrow(/WASM_KERNELS/);
    expect(loadConfig({}).wasmKernels).toBe('sparsoup');
  });

  it('/health names what runs the matrix products in the worker threads', async () => {
    expect((await request(fma.http).get('/health').expect(200)).body.backend).toMatchObject({ ok: true, name: 'wasm', matMul: 'fma' });
    expect((await request(xnn.http).get('/health').expect(200)).body.backend).toMatchObject({ ok: true, name: 'wasm', matMul: 'xnnpack' });
  });

  it('a lenet-300-100 trained a little evaluates to the same accuracy and, to float32 rounding, the same loss on both', async () => {
    const mnist = await loadBuiltin('mnist', { cacheDir: join(fma.config.dataDir, 'cache') });
    const model = buildTemplate('lenet-300-100', { inputShape: [28, 28, 1], classes: 10, seed: 5 });
    await trainModel(
      model,
      mnist,
      { seed: 2, epochs: 1, batchSize: 64, optimizer: 'sgd', momentum: 0.9, nesterov: false, learningRate: 0.05, schedule: 'constant', warmupFraction: 0, weightDecay: 0 },
      { indices: mnist.splits.train.subarray(0, 2048) },
    );
    const saved = await saveModel(model);
    model.dispose();
    const evaluate = async (t: TestApp) => {
      const up = (
        await request(t.http)
          .post('/models?name=trained')
          .attach('model.json', Buffer.from(JSON.stringify(saved.modelJson)), 'model.json')
          .attach('model.weights.bin', Buffer.from(saved.weightData as ArrayBuffer), 'model.weights.bin')
          .expect(201)
      ).body;
      return (await request(t.http).post(`/models/${up.id}/evaluations`).send({ datasetId: 'mnist', split: 'test' }).expect(201)).body;
    };
    const a = await evaluate(fma);
    const b = await evaluate(xnn);
    expect(a.count).toBe(10000);
    expect(a.accuracy).toBeGreaterThan(0.8); // a real model, not chance
    // A prediction flips only where two logits tie to float32 rounding: at most a handful in 10,000.
    expect(Math.abs(a.accuracy - b.accuracy)).toBeLessThanOrEqual(3e-4);
    expect(a.loss).toBeCloseTo(b.loss, 5);
  });
});
