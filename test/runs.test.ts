import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSafetensorsHeader } from '../src/core/checkpoint/safetensors.js';
import { RunCandidateEntity, RunEntity, RunPhaseEntity } from '../src/runs/run.entity.js';
import { mapRun } from '../src/runs/runs.dto.js';
import { startTestApp, type TestApp } from './support/app.js';
import { binaryParser, safetensorsBytes } from './support/checkpoints.js';
import { artifactFiles } from './support/files.js';
import { waitForRun, waitForRunEvent } from './support/runs.js';

const PROBLEM = /application\/problem\+json/;
const FAST = { epochs: 0.03, batchSize: 64, learningRate: 0.05, schedule: 'constant', momentum: 0.9 };

describe('training and retraining runs', () => {
  let t: TestApp;
  let template: { id: string };
  let trained: { id: string; parentIds: string[] };

  beforeAll(async () => {
    t = await startTestApp({ WORKERS: '2', WEBHOOK_SECRET: 'test-secret' });
    template = (await request(t.http).post('/models/templates').send({ architecture: 'lenet-300-100', datasetId: 'mnist', seed: 1 }).expect(201)).body;
  });
  afterAll(() => t?.close());

  it('trains a template densely: 202, progress, a result model whose parent is the template', async () => {
    const res = await request(t.http).post('/runs').send({ kind: 'train', modelId: template.id, datasetId: 'mnist', training: { ...FAST, epochs: 0.1, seed: 3 } }).expect(202);
    expect(res.body).toMatchObject({ kind: 'train', status: 'queued', modelId: template.id, candidates: [{ index: 0, status: 'queued', attempts: 0 }] });
    const run = await waitForRun(t, res.body.id);
    expect(run.status).toBe('succeeded');
    expect(run.backend).toBeTruthy();
    const c = run.candidates[0];
    expect(c).toMatchObject({ status: 'succeeded', attempts: 1 });
    expect(c.valAccuracy).toBeGreaterThan(0.7);
    expect(c.testAccuracy).toBeGreaterThan(0.7);
    expect(c.progress.step).toBe(c.progress.steps);
    // Progress is coalesced (PROGRESS_WRITE_SECONDS), but the last event is the final step, and it
    // lands before the candidate's success.
    const events: { id: string; type: string; data: { step?: number; steps?: number } }[] = await t.dataSource.query('SELECT id, type, data FROM run_event WHERE run_id = $1 ORDER BY id', [run.id]);
    const progress = events.filter((e) => e.type === 'progress');
    expect(progress.length).toBeGreaterThanOrEqual(1);
    expect(progress.at(-1)!.data.step).toBe(progress.at(-1)!.data.steps);
    expect(progress.at(-1)!.data.steps).toBe(c.progress.steps);
    expect(Number(progress.at(-1)!.id)).toBeLessThan(Number(events.find((e) => e.type === 'candidate-succeeded')!.id));
    // GET /runs/{id} reads the run in one statement: it answers what TypeORM's entities say.
    const [entity, candidates, phases] = [await t.dataSource.getRepository(RunEntity).findOneByOrFail({ id: run.id }), await t.dataSource.getRepository(RunCandidateEntity).findBy({ runId: run.id }), await t.dataSource.getRepository(RunPhaseEntity).findBy({ runId: run.id })];
    expect(run).toEqual(JSON.parse(JSON.stringify(mapRun(entity, candidates, phases))));
    trained = (await request(t.http).get(`/models/${c.resultModelId}`).expect(200)).body;
    expect(trained.parentIds).toEqual([template.id]);
    expect((trained as unknown as { origin: { kind: string; runId: string } }).origin).toMatchObject({ kind: 'train', runId: run.id });
  });

  it('queues a signed webhook delivery when a run with a callbackUrl finishes', async () => {
    const { createServer } = await import('node:http');
    const received: { headers: Record<string, unknown>; body: string }[] = [];
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        received.push({ headers: req.headers, body });
        res.end('ok');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      const res = await request(t.http).post('/runs').send({ kind: 'train', modelId: template.id, datasetId: 'mnist', training: { ...FAST, epochs: 0.01 }, callbackUrl: `http://127.0.0.1:${port}/hook` }).expect(202);
      const run = await waitForRun(t, res.body.id);
      for (let i = 0; i < 100 && !received.length; i++) await new Promise((r) => setTimeout(r, 100));
      expect(received).toHaveLength(1);
      const event = JSON.parse(received[0].body);
      expect(event).toMatchObject({ type: 'run.finished', id: run.id, status: 'succeeded' });
      expect(String(received[0].headers['x-sparsoup-signature'])).toMatch(/^sha256=[0-9a-f]{64}$/);
    } finally {
      server.close();
    }
  });

  it('retrains m candidates under the mask: every candidate\'s zero pattern equals the mask, seeds differ', async () => {
    const pruned = (await request(t.http).post(`/models/${trained.id}/prune`).send({ method: 'magnitude-global', sparsity: 0.8 }).expect(201)).body;
    const res = await request(t.http).post('/runs').send({ kind: 'retrain', modelId: pruned.model.id, maskId: pruned.mask.id, datasetId: 'mnist', training: FAST, m: 3, vary: 'seed' }).expect(202);
    expect(res.body.candidates.map((c: { config: { seed: number } }) => c.config.seed)).toEqual([0, 1, 2]);
    const run = await waitForRun(t, res.body.id);
    expect(run.status).toBe('succeeded');
    const results = await Promise.all(run.candidates.map(async (c: { resultModelId: string }) => (await request(t.http).get(`/models/${c.resultModelId}`).expect(200)).body));
    for (const m of results) {
      expect(m.impliedMaskHash).toBe(pruned.mask.hash);
      expect(m.maskId).toBe(pruned.mask.id);
      expect(m.parentIds).toEqual([pruned.model.id]);
    }
    expect(new Set(results.map((m) => m.sha256)).size).toBe(3);
  });

  it('ALLR retrain: the pre-flight check measures d once, the run keeps it with what the check found, and the candidate trains', async () => {
    const pruned = (await request(t.http).post(`/models/${trained.id}/prune`).send({ method: 'magnitude-global', sparsity: 0.5 }).expect(201)).body;
    const res = await request(t.http).post('/runs').send({ kind: 'retrain', modelId: pruned.model.id, maskId: pruned.mask.id, datasetId: 'mnist', training: { ...FAST, schedule: 'allr' }, m: 1 }).expect(202);
    // d = ‖θ − θ_pruned‖ / ‖θ‖ over the kernels, θ the dense parent, from the two models' bytes.
    const kernels = async (id: string) => {
      const bytes = (await request(t.http).get(`/models/${id}/safetensors`).buffer(true).parse(binaryParser).expect(200)).body as Buffer;
      const header = parseSafetensorsHeader(bytes);
      return new Map(header.entries.filter((e) => e.name.endsWith('/kernel')).map((e) => [e.name, new Float32Array(new Uint8Array(bytes.subarray(e.byteOffset, e.byteOffset + e.byteLength)).buffer)]));
    };
    const [dense, sparse] = await Promise.all([kernels(trained.id), kernels(pruned.model.id)]);
    let diff = 0;
    let norm = 0;
    for (const [name, a] of dense) {
      const b = sparse.get(name)!;
      for (let i = 0; i < a.length; i++) {
        diff += (a[i] - b[i]) ** 2;
        norm += a[i] ** 2;
      }
    }
    const { plan } = res.body.request;
    expect(plan.allr.relativeDistance).toBeCloseTo(Math.sqrt(diff / norm), 6);
    expect(plan.allr.referenceModelId).toBe(trained.id);
    expect(plan.check).toEqual({ prunableWeights: 784 * 300 + 300 * 100 + 100 * 10, hasBatchNorm: false });
    const run = await waitForRun(t, res.body.id);
    expect(run.status).toBe('succeeded');
    expect(run.request.plan.allr.relativeDistance).toBe(plan.allr.relativeDistance);
  });

  it('gives identical weights for the same configuration and seed', async () => {
    const body = { kind: 'retrain', modelId: trained.id, datasetId: 'mnist', candidates: [{ ...FAST, seed: 9 }, { ...FAST, seed: 9 }] };
    const run = await waitForRun(t, (await request(t.http).post('/runs').send(body).expect(202)).body.id);
    const [a, b] = await Promise.all(run.candidates.map(async (c: { resultModelId: string }) => (await request(t.http).get(`/models/${c.resultModelId}`)).body.sha256));
    expect(a).toBe(b);
  });

  it('streams the run\'s events as server-sent events, ending with run-finished', async () => {
    const runs = (await request(t.http).get('/runs?kind=train&status=succeeded').expect(200)).body;
    expect(runs.total).toBeGreaterThanOrEqual(1);
    const res = await request(t.http).get(`/runs/${runs.items[0].id}/events`).buffer(true).parse((r, cb) => {
      let text = '';
      r.on('data', (c: Buffer) => {
        text += c.toString();
      });
      r.on('end', () => cb(null, text));
    });
    expect(res.headers['content-type']).toMatch(/text\/event-stream/);
    const types = [...(res.body as string).matchAll(/^event: (.+)$/gm)].map((m) => m[1]);
    expect(types[0]).toBe('run-created');
    expect(types).toContain('candidate-started');
    expect(types).toContain('progress');
    expect(types).toContain('candidate-succeeded');
    expect(types[types.length - 1]).toBe('run-finished');
  });

  it('cancels a run: it is cancelled at once, its running candidates stop, and run-finished ends it', async () => {
    const res = await request(t.http).post('/runs').send({ kind: 'retrain', modelId: trained.id, datasetId: 'mnist', training: { ...FAST, epochs: 3 }, m: 4 }).expect(202);
    await waitForRunEvent(t, res.body.id, (e) => e.type === 'progress');
    const cancelled = (await request(t.http).post(`/runs/${res.body.id}/cancel`).expect(200)).body;
    expect(cancelled.status).toBe('cancelled');
    // A cancel reaches this process's training at once (another process's within a 5 s poll); the end is announced once nothing runs.
    const finished = await waitForRunEvent(t, res.body.id, (e) => e.type === 'run-finished', 30_000);
    expect(finished.data.status).toBe('cancelled');
    const run = (await request(t.http).get(`/runs/${res.body.id}`).expect(200)).body;
    expect(run.candidates.every((c: { status: string }) => c.status === 'cancelled')).toBe(true);
    await request(t.http).post(`/runs/${res.body.id}/cancel`).expect(409);
  });

  it('answers requests that need a worker thread while training fills every worker', async () => {
    // Long enough that no candidate ends during the test: it is cancelled at the end.
    const res = await request(t.http).post('/runs').send({ kind: 'retrain', modelId: trained.id, datasetId: 'mnist', training: { ...FAST, epochs: 100 }, m: 4 }).expect(202);
    const running = async () => ((await request(t.http).get(`/runs/${res.body.id}`).expect(200)).body.candidates as { index: number; status: string }[]).filter((c) => c.status === 'running').map((c) => c.index);
    for (let i = 0; i < 600 && (await running()).length < 2; i++) await new Promise((r) => setTimeout(r, 100));
    const training = await running();
    expect(training).toHaveLength(2); // both WORKERS threads train
    // A template, a new run's pre-flight check and a prune each need a thread: the request thread answers them.
    const template2 = (await request(t.http).post('/models/templates').send({ architecture: 'lenet-300-100', datasetId: 'mnist', seed: 2 }).expect(201)).body;
    const second = (await request(t.http).post('/runs').send({ kind: 'retrain', modelId: template2.id, datasetId: 'mnist', training: FAST, m: 1 }).expect(202)).body;
    await request(t.http).post(`/models/${template2.id}/prune`).send({ method: 'magnitude-global', sparsity: 0.5 }).expect(201);
    // …without waiting for a candidate to finish: the two that held the threads are still training.
    expect(await running()).toEqual(training);
    await request(t.http).post(`/runs/${second.id}/cancel`).expect(200);
    await request(t.http).post(`/runs/${res.body.id}/cancel`).expect(200);
    await waitForRunEvent(t, res.body.id, (e) => e.type === 'run-finished', 30_000);
  });

  describe('configurations that cannot work are refused at POST: a 4xx problem and no run', () => {
    async function expectRefused(body: object, status: number, detail: RegExp) {
      const before = (await request(t.http).get('/runs')).body.total;
      const files = artifactFiles(t.config.dataDir);
      const res = await request(t.http).post('/runs').send(body);
      expect(res.status).toBe(status);
      expect(res.headers['content-type']).toMatch(PROBLEM);
      expect(res.body.detail).toMatch(detail);
      expect((await request(t.http).get('/runs')).body.total).toBe(before);
      expect(artifactFiles(t.config.dataDir)).toEqual(files);
    }
    it('a learning rate that is not a number', () => expectRefused({ kind: 'train', modelId: template.id, datasetId: 'mnist', training: { learningRate: 'NaN' } }, 400, /learningRate/));
    it('a batch size of 0', () => expectRefused({ kind: 'train', modelId: template.id, datasetId: 'mnist', training: { batchSize: 0 } }, 400, /batchSize/));
    it('varying weight decay without values', () => expectRefused({ kind: 'retrain', modelId: template.id, datasetId: 'mnist', m: 2, vary: 'weightDecay' }, 400, /values/));
    it('values that do not match m', () => expectRefused({ kind: 'retrain', modelId: template.id, datasetId: 'mnist', m: 2, vary: 'learningRate', values: [0.1] }, 400, /m is 2/));
    it('allr on a model with no parent', () => expectRefused({ kind: 'retrain', modelId: template.id, datasetId: 'mnist', m: 1, training: { schedule: 'allr' } }, 400, /parent/));
    it('a model that cannot be trained (no architecture)', async () => {
      const st = await request(t.http).post('/models?name=st').set('content-type', 'application/octet-stream').send(await safetensorsBytes([{ name: 'w', shape: [2, 2], data: new Float32Array(4) }])).expect(201);
      await expectRefused({ kind: 'train', modelId: st.body.id, datasetId: 'mnist' }, 422, /layers model/);
    });
    it('a mask that does not fit the model', async () => {
      const cnn = (await request(t.http).post('/models/templates').send({ architecture: 'cnn-bn', datasetId: 'mnist' }).expect(201)).body;
      const { mask } = (await request(t.http).post(`/models/${cnn.id}/prune`).send({ method: 'random', sparsity: 0.5 }).expect(201)).body;
      await expectRefused({ kind: 'retrain', modelId: template.id, maskId: mask.id, datasetId: 'mnist', m: 1 }, 422, /mask/);
    });
    it('a dataset the model does not take', async () => {
      const fashion = (await request(t.http).post('/models/templates').send({ architecture: 'lenet-300-100', datasetId: 'fashion-mnist' }).expect(201)).body;
      const npz = (await request(t.http).post('/datasets?name=tiny').set('content-type', 'application/octet-stream').send(readFileSync(join('test', 'fixtures', 'data', 'uint8-images.npz'))).expect(201)).body;
      await expectRefused({ kind: 'train', modelId: fashion.id, datasetId: npz.id }, 422, /shape/);
      await expectRefused({ kind: 'train', modelId: fashion.id, datasetId: 'nope' }, 404, /dataset/);
    });
    it('an unknown kind', () => expectRefused({ kind: 'distill', modelId: template.id, datasetId: 'mnist' }, 400, /kind/));
  });
});
