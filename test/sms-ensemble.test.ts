import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from './support/app.js';
import { uploadMnistSlice } from './support/datasets.js';
import { waitForRun } from './support/runs.js';

const TRAIN = { epochs: 0.5, batchSize: 32, learningRate: 0.05, schedule: 'constant' };

describe('phase ensembles, per-epoch curves and augmentation through the API', () => {
  let t: TestApp;
  let data: string;
  let dense: string;

  beforeAll(async () => {
    t = await startTestApp({ WORKERS: '2' });
    data = (await uploadMnistSlice(t)).id;
  });
  afterAll(() => t?.close());

  it('evaluateEachEpoch records the accuracy curve; crop-flip augmentation trains', async () => {
    const template = (await request(t.http).post('/models/templates').send({ architecture: 'lenet-300-100', datasetId: data, seed: 1 }).expect(201)).body;
    const run = await waitForRun(t, (await request(t.http).post('/runs').send({ kind: 'train', modelId: template.id, datasetId: data, training: { ...TRAIN, epochs: 2, evaluateEachEpoch: true, augment: 'crop-flip' } }).expect(202)).body.id);
    expect(run.status).toBe('succeeded');
    const c = run.candidates[0];
    expect(c.config).toMatchObject({ augment: 'crop-flip', evaluateEachEpoch: true });
    const curve = c.metrics.train.epochCurve as { epoch: number; valAccuracy: number; testAccuracy: number }[];
    expect(curve.map((p) => p.epoch)).toEqual([1, 2]);
    // LeNet has no batch norm, so recalibration changes nothing: the last point is the final model.
    expect(curve[1].testAccuracy).toBe(c.testAccuracy);
    expect(curve[1].valAccuracy).toBe(c.valAccuracy);
    dense = c.resultModelId;
  }, 240_000);

  it('the ensemble of identical candidates has their accuracy (and so does their soup)', async () => {
    const created = await request(t.http)
      .post('/runs')
      .send({ kind: 'sms', modelId: dense, datasetId: data, goalSparsity: 0.5, phases: 1, training: TRAIN, m: 2, vary: 'learningRate', values: [0.05, 0.05], soup: { method: 'uniform' } })
      .expect(202);
    const run = await waitForRun(t, created.body.id, 240_000);
    expect(run.status).toBe('succeeded');
    const [p] = (await request(t.http).get(`/runs/${run.id}/report`).expect(200)).body.phases;
    const [a, b] = p.candidates.map((x: { testAccuracy: number }) => x.testAccuracy);
    expect(b).toBe(a);
    expect(p.ensembleTestAccuracy).toBe(a);
    expect(p.result.testAccuracy).toBe(a);
    expect(p.meanL2Distance).toBe(0);
  }, 300_000);

  it('reports an ensemble for SMS phases with distinct candidates, none for IMP', async () => {
    const sms = await waitForRun(t, (await request(t.http).post('/runs').send({ kind: 'sms', modelId: dense, datasetId: data, goalSparsity: 0.5, phases: 1, m: 2, training: TRAIN }).expect(202)).body.id, 240_000);
    const imp = await waitForRun(t, (await request(t.http).post('/runs').send({ kind: 'imp', modelId: dense, datasetId: data, goalSparsity: 0.5, phases: 1, training: TRAIN }).expect(202)).body.id, 240_000);
    const [ps] = (await request(t.http).get(`/runs/${sms.id}/report`).expect(200)).body.phases;
    expect(ps.ensembleTestAccuracy).toBeGreaterThan(0.5);
    expect(ps.ensembleTestAccuracy).toBeLessThanOrEqual(1);
    expect(ps.meanL2Distance).toBeGreaterThan(0);
    expect(sms.phases[0].metrics.ensembleTestAccuracy).toBe(ps.ensembleTestAccuracy);
    const [pi] = (await request(t.http).get(`/runs/${imp.id}/report`).expect(200)).body.phases;
    expect(pi.ensembleTestAccuracy).toBeNull();
  }, 300_000);

  it('refuses an unknown augmentation with a problem naming the field, and creates no run', async () => {
    const before = (await request(t.http).get('/runs').expect(200)).body.total;
    const res = await request(t.http).post('/runs').send({ kind: 'train', modelId: dense, datasetId: data, training: { augment: 'mixup' } }).expect(400);
    expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
    expect(JSON.stringify(res.body)).toMatch(/augment/);
    await request(t.http).post('/runs').send({ kind: 'train', modelId: dense, datasetId: data, training: { evaluateEachEpoch: 'yes' } }).expect(400);
    expect((await request(t.http).get('/runs').expect(200)).body.total).toBe(before);
  });
});
