import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadBuiltin } from '../src/core/data/builtin.js';
import { encodeIdx } from '../src/core/data/idx.js';
import { classificationMetrics } from '../src/core/metrics/classification.js';
import { initBackend } from '../src/core/tf/backend.js';
import { evaluateModel } from '../src/core/tf/evaluate.js';
import { loadModel, saveModel } from '../src/core/tf/model-io.js';
import { buildTemplate } from '../src/core/tf/templates.js';
import { trainModel } from '../src/core/tf/train.js';
import { startTestApp, type TestApp } from './support/app.js';
import { binaryParser, safetensorsBytes } from './support/checkpoints.js';
import { artifactFiles } from './support/files.js';

const PROBLEM = /application\/problem\+json/;

describe('datasets, templates and evaluations over HTTP', () => {
  let t: TestApp;
  beforeAll(async () => {
    await initBackend();
    t = await startTestApp({ WORKERS: '2' });
  });
  afterAll(() => t?.close());

  it('lists the built-in datasets with their splits', async () => {
    const res = await request(t.http).get('/datasets').expect(200);
    const byId = Object.fromEntries(res.body.items.map((d: { id: string }) => [d.id, d]));
    expect(byId.mnist).toMatchObject({ source: 'builtin', inputShape: [28, 28, 1], classes: 10, splits: { train: 54000, val: 6000, test: 10000 } });
    expect(byId['fashion-mnist']).toMatchObject({ source: 'builtin', classes: 10 });
    await request(t.http).get('/datasets/mnist').expect(200);
    const missing = await request(t.http).get('/datasets/nope').expect(404);
    expect(missing.headers['content-type']).toMatch(PROBLEM);
  });

  it('takes an .npz upload and reports its shape and splits', async () => {
    const bytes = readFileSync(join('test', 'fixtures', 'data', 'uint8-images.npz'));
    const res = await request(t.http).post('/datasets?name=tiny').set('content-type', 'application/octet-stream').send(bytes).expect(201);
    expect(res.body).toMatchObject({ source: 'upload', format: 'npz', inputShape: [4, 4, 1], classes: 3, pixels: 'uint8' });
    expect(res.body.splits.train + res.body.splits.val + res.body.splits.test).toBe(21);
  });

  it('takes an IDX pair as multipart', async () => {
    const n = 30;
    const images = encodeIdx('uint8', [n, 6, 6], Array.from({ length: n * 36 }, (_, i) => i % 256));
    const labels = encodeIdx('uint8', [n], Array.from({ length: n }, (_, i) => i % 5));
    const res = await request(t.http).post('/datasets?name=idx').attach('images', Buffer.from(images), 'images.idx').attach('labels', Buffer.from(labels), 'labels.idx').expect(201);
    expect(res.body).toMatchObject({ format: 'idx', inputShape: [6, 6, 1], classes: 5 });
  });

  describe('bad datasets: a 4xx problem, no row, no file', () => {
    async function expectRefused(req: () => request.Test, status: number, detail: RegExp) {
      const before = (await request(t.http).get('/datasets')).body.total;
      const files = artifactFiles(t.config.dataDir);
      const res = await req();
      expect(res.status).toBe(status);
      expect(res.headers['content-type']).toMatch(PROBLEM);
      expect(res.body.detail).toMatch(detail);
      expect((await request(t.http).get('/datasets')).body.total).toBe(before);
      expect(artifactFiles(t.config.dataDir)).toEqual(files);
    }
    it('images and labels that disagree in count', () =>
      expectRefused(
        () => request(t.http).post('/datasets?name=bad').attach('images', Buffer.from(encodeIdx('uint8', [10, 4, 4], new Array(160).fill(1))), 'i').attach('labels', Buffer.from(encodeIdx('uint8', [9], new Array(9).fill(1))), 'l'),
        422,
        /10|9/,
      ));
    it('labels out of range', () =>
      expectRefused(
        () => request(t.http).post('/datasets?name=bad&classes=3').attach('images', Buffer.from(encodeIdx('uint8', [10, 4, 4], new Array(160).fill(1))), 'i').attach('labels', Buffer.from(encodeIdx('uint8', [10], [0, 1, 2, 3, 0, 1, 2, 0, 1, 2])), 'l'),
        422,
        /label/i,
      ));
    it('garbage bytes', () => expectRefused(() => request(t.http).post('/datasets?name=bad').set('content-type', 'application/octet-stream').send(Buffer.from('not a dataset at all')), 400, /header/));
  });

  it('builds seeded templates: the same seed gives the same weights', async () => {
    const a = await request(t.http).post('/models/templates').send({ architecture: 'lenet-300-100', datasetId: 'mnist', seed: 7 }).expect(201);
    const b = await request(t.http).post('/models/templates').send({ architecture: 'lenet-300-100', datasetId: 'mnist', seed: 7 }).expect(201);
    const c = await request(t.http).post('/models/templates').send({ architecture: 'lenet-300-100', datasetId: 'mnist', seed: 8 }).expect(201);
    expect(a.body).toMatchObject({ format: 'tfjs-layers', paramCount: 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10, origin: { kind: 'template', architecture: 'lenet-300-100', seed: 7 } });
    expect(a.body.sha256).toBe(b.body.sha256);
    expect(c.body.sha256).not.toBe(a.body.sha256);
    const cnn = await request(t.http).post('/models/templates').send({ architecture: 'cnn-bn', datasetId: 'fashion-mnist' }).expect(201);
    expect(cnn.body.tensors.some((x: { name: string }) => x.name.includes('moving_mean'))).toBe(true);
    await request(t.http).post('/models/templates').send({ architecture: 'vgg', datasetId: 'mnist' }).expect(400);
    await request(t.http).post('/models/templates').send({ architecture: 'cnn-bn', datasetId: 'nope' }).expect(404);
  });

  it('evaluates a model trained for a few steps, matching a direct computation, with deterministic corruptions', async () => {
    const mnist = await loadBuiltin('mnist', { cacheDir: join(t.config.dataDir, 'cache') });
    const model = buildTemplate('lenet-300-100', { inputShape: [28, 28, 1], classes: 10, seed: 3 });
    const slice = mnist.splits.train.subarray(0, 2048);
    await trainModel(model, mnist, { seed: 1, epochs: 1, batchSize: 64, optimizer: 'sgd', momentum: 0.9, nesterov: false, learningRate: 0.05, schedule: 'constant', warmupFraction: 0, weightDecay: 0 }, { indices: slice });
    const saved = await saveModel(model);
    const up = await request(t.http)
      .post('/models?name=trained')
      .attach('model.json', Buffer.from(JSON.stringify(saved.modelJson)), 'model.json')
      .attach('model.weights.bin', Buffer.from(saved.weightData), 'model.weights.bin')
      .expect(201);

    const evalReq = { datasetId: 'mnist', split: 'test', corruptions: [{ name: 'gaussian-noise', severity: 5 }, { name: 'rotation', severity: 5 }], seed: 4 };
    const ev = (await request(t.http).post(`/models/${up.body.id}/evaluations`).send(evalReq).expect(201)).body;
    // Direct computation on the same weights as the service stored them.
    const json = (await request(t.http).get(`/models/${up.body.id}/model.json`).expect(200)).body;
    const weights = (await request(t.http).get(`/models/${up.body.id}/model.weights.bin`).buffer(true).parse(binaryParser).expect(200)).body;
    const again = await loadModel(json, new Uint8Array(weights));
    const out = evaluateModel(again, mnist, 'test');
    const direct = classificationMetrics(out.logits, out.labels, 10, 'logits');
    expect(ev.count).toBe(10000);
    expect(ev.accuracy).toBeCloseTo(direct.accuracy, 4);
    expect(ev.loss).toBeCloseTo(direct.loss, 3);
    expect(ev.ece).toBeCloseTo(direct.ece, 3);
    expect(ev.accuracy).toBeGreaterThan(0.6);
    expect(ev.perClassAccuracy).toHaveLength(10);
    expect(ev.worstClassAccuracy).toBe(Math.min(...ev.perClassAccuracy));
    expect(ev.corruptions.map((c: { name: string }) => c.name)).toEqual(['gaussian-noise', 'rotation']);
    for (const c of ev.corruptions) expect(c.accuracy).toBeLessThan(ev.accuracy - 0.02);
    const ev2 = (await request(t.http).post(`/models/${up.body.id}/evaluations`).send(evalReq).expect(201)).body;
    expect(ev2.corruptions).toEqual(ev.corruptions);
    const list = (await request(t.http).get(`/models/${up.body.id}/evaluations`).expect(200)).body;
    expect(list.total).toBe(2);
  });

  it('refuses evaluations that cannot run, with a problem naming why', async () => {
    const st = await request(t.http).post('/models?name=st').set('content-type', 'application/octet-stream')
      .send(await safetensorsBytes([{ name: 'w', shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) }])).expect(201);
    const r = await request(t.http).post(`/models/${st.body.id}/evaluations`).send({ datasetId: 'mnist', split: 'test' }).expect(422);
    expect(r.body.detail).toMatch(/layers model/);
    const small = await request(t.http).post('/models/templates').send({ architecture: 'lenet-300-100', datasetId: 'mnist' }).expect(201);
    const tiny = (await request(t.http).get('/datasets')).body.items.find((d: { name: string }) => d.name === 'tiny');
    const mismatch = await request(t.http).post(`/models/${small.body.id}/evaluations`).send({ datasetId: tiny.id, split: 'test' }).expect(422);
    expect(mismatch.body.detail).toMatch(/shape/);
    await request(t.http).post(`/models/${small.body.id}/evaluations`).send({ datasetId: 'mnist', split: 'holdout' }).expect(400);
    await request(t.http).post(`/models/${small.body.id}/evaluations`).send({ datasetId: 'mnist', split: 'test', corruptions: [{ name: 'fog', severity: 9 }] }).expect(400);
  });
});
