import { join } from 'node:path';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadBuiltin } from '../src/core/data/builtin.js';
import { initBackend } from '../src/core/tf/backend.js';
import { evaluateModel } from '../src/core/tf/evaluate.js';
import { loadModel, saveModel } from '../src/core/tf/model-io.js';
import { sparseMatMulInternals } from '../src/core/tf/sparse-matmul.js';
import { buildTemplate } from '../src/core/tf/templates.js';
import { trainModel } from '../src/core/tf/train.js';
import { startTestApp, type TestApp } from './support/app.js';
import { binaryParser } from './support/checkpoints.js';

/**
 * Evaluating a pruned model through the API: the service's default (EVAL_SPARSE unset = 'auto', so
 * the pruned Dense layers run as sparse products) and a service with EVAL_SPARSE=dense give the same
 * accuracy and, to float32 rounding, the same loss and calibration on the whole MNIST test split.
 */
describe('evaluation of a pruned model over HTTP: sparse path and dense path agree', () => {
  let auto: TestApp;
  let dense: TestApp;
  beforeAll(async () => {
    await initBackend();
    auto = await startTestApp({ WORKERS: '1' });
    dense = await startTestApp({ WORKERS: '1', EVAL_SPARSE: 'dense' });
  });
  afterAll(async () => {
    await auto?.close();
    await dense?.close();
  });

  it('rejects a bad EVAL_SPARSE at start-up, naming it', async () => {
    const { loadConfig } = await import('../src/config/config.js');
    expect(() => loadConfig({ EVAL_SPARSE: 'csr' })).toThrow(/EVAL_SPARSE/);
    expect(loadConfig({}).evalSparse).toBe('auto');
  });

  it('a lenet-300-100 trained a little, pruned to 95 % by the service: the same accuracy with EVAL_SPARSE auto and dense', async () => {
    const mnist = await loadBuiltin('mnist', { cacheDir: join(auto.config.dataDir, 'cache') });
    const model = buildTemplate('lenet-300-100', { inputShape: [28, 28, 1], classes: 10, seed: 3 });
    await trainModel(
      model,
      mnist,
      { seed: 1, epochs: 1, batchSize: 64, optimizer: 'sgd', momentum: 0.9, nesterov: false, learningRate: 0.05, schedule: 'constant', warmupFraction: 0, weightDecay: 0 },
      { indices: mnist.splits.train.subarray(0, 2048) },
    );
    const saved = await saveModel(model);
    model.dispose();
    const upload = (t: TestApp, json: unknown, weights: Uint8Array | ArrayBuffer, name: string) =>
      request(t.http)
        .post(`/models?name=${name}`)
        .attach('model.json', Buffer.from(JSON.stringify(json)), 'model.json')
        .attach('model.weights.bin', Buffer.from(weights as ArrayBuffer), 'model.weights.bin')
        .expect(201);
    const up = (await upload(auto, saved.modelJson, saved.weightData, 'trained')).body;
    const pruned = (await request(auto.http).post(`/models/${up.id}/prune`).send({ method: 'magnitude-global', sparsity: 0.95 }).expect(201)).body.model;
    const json = (await request(auto.http).get(`/models/${pruned.id}/model.json`).expect(200)).body;
    const weights = (await request(auto.http).get(`/models/${pruned.id}/model.weights.bin`).buffer(true).parse(binaryParser).expect(200)).body as Buffer;
    const copy = (await upload(dense, json, new Uint8Array(weights), 'pruned-copy')).body;
    expect((await request(dense.http).get(`/models/${copy.id}`).expect(200)).body.prunableSparsity).toBeCloseTo(0.95, 3);

    const req = { datasetId: 'mnist', split: 'test' };
    const a = (await request(auto.http).post(`/models/${pruned.id}/evaluations`).send(req).expect(201)).body;
    const d = (await request(dense.http).post(`/models/${copy.id}/evaluations`).send(req).expect(201)).body;
    expect(a.count).toBe(10000);
    expect(a.accuracy).toBeGreaterThan(0.5); // a real model, not chance
    expect(a.accuracy).toBe(d.accuracy);
    expect(a.perClassAccuracy).toEqual(d.perClassAccuracy);
    expect(a.loss).toBeCloseTo(d.loss, 5);
    expect(a.ece).toBeCloseTo(d.ece, 5);

    // The same weights in this thread: 'auto' takes the sparse path for the pruned layers (so the
    // service's default evaluation above did too), and its logits match the dense ones closely.
    const again = await loadModel(json, new Uint8Array(weights));
    const sparseLayers = again.weights
      .filter((w) => w.originalName.endsWith('/kernel'))
      .filter((w) => {
        const v = w.read().dataSync();
        return v.filter((x) => x === 0).length / v.length >= sparseMatMulInternals.minSparsity;
      }).length;
    expect(sparseLayers).toBeGreaterThanOrEqual(2);
    sparseMatMulInternals.resetStats();
    const direct = evaluateModel(again, mnist, 'test', { sparse: 'auto' });
    expect(sparseMatMulInternals.stats.sparse).toBe(sparseLayers * Math.ceil(10000 / 512));
    const directDense = evaluateModel(again, mnist, 'test', { sparse: 'dense' });
    expect(direct.accuracy).toBe(a.accuracy);
    expect(directDense.accuracy).toBe(a.accuracy);
    let diff = 0;
    for (let i = 0; i < direct.logits.length; i++) diff = Math.max(diff, Math.abs(direct.logits[i] - directDense.logits[i]));
    expect(diff).toBeLessThan(1e-4);
    again.dispose();
  });
});
