import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunCandidateEntity, RunEntity, RunPhaseEntity } from '../src/runs/run.entity.js';
import { mapRun } from '../src/runs/runs.dto.js';
import { startTestApp, type TestApp } from './support/app.js';
import { uploadMnistSlice } from './support/datasets.js';
import { waitForRun, waitForRunEvent } from './support/runs.js';

const TRAIN = { epochs: 0.5, batchSize: 32, learningRate: 0.05, schedule: 'constant' };

describe('IMP and SMS runs', () => {
  let t: TestApp;
  let data: string;
  let dense: string;
  const ids: Record<string, string> = {};

  beforeAll(async () => {
    t = await startTestApp({ WORKERS: '2' });
    data = (await uploadMnistSlice(t)).id;
    const template = (await request(t.http).post('/models/templates').send({ architecture: 'lenet-300-100', datasetId: data, seed: 1 }).expect(201)).body;
    const run = await waitForRun(t, (await request(t.http).post('/runs').send({ kind: 'train', modelId: template.id, datasetId: data, training: { ...TRAIN, epochs: 2 } }).expect(202)).body.id);
    dense = run.candidates[0].resultModelId;
  });
  afterAll(() => t?.close());

  it('runs SMS phase by phase: prune to s_k, retrain m candidates under one mask, merge, hand the soup on', async () => {
    const created = await request(t.http).post('/runs').send({ kind: 'sms', modelId: dense, datasetId: data, goalSparsity: 0.9, phases: 2, m: 2, training: TRAIN, soup: { method: 'uniform' } }).expect(202);
    expect(created.body.phases.map((p: { sparsity: number }) => p.sparsity)).toEqual([1 - 0.1 ** 0.5, 1 - 0.1 ** 1].map((x) => expect.closeTo(x, 12)));
    const run = await waitForRun(t, created.body.id, 240_000);
    expect(run.status).toBe('succeeded');
    ids.sms = run.id;
    // GET /runs/{id} reads run, candidates and phases in one statement: the same answer as TypeORM's entities give.
    const entities = [await t.dataSource.getRepository(RunEntity).findOneByOrFail({ id: run.id }), await t.dataSource.getRepository(RunCandidateEntity).findBy({ runId: run.id }), await t.dataSource.getRepository(RunPhaseEntity).findBy({ runId: run.id })] as const;
    expect(run).toEqual(JSON.parse(JSON.stringify(mapRun(...entities))));
    const [p1, p2] = run.phases;
    expect(p1.inputModelId).toBe(dense);
    expect(p2.inputModelId).toBe(p1.resultModelId);
    for (const p of run.phases) {
      expect(p.status).toBe('succeeded');
      expect(p.candidateIds).toHaveLength(2);
      expect(p.soupId).toBeTruthy();
      const mask = (await request(t.http).get(`/masks/${p.maskId}`).expect(200)).body;
      const result = (await request(t.http).get(`/models/${p.resultModelId}`).expect(200)).body;
      expect(result.impliedMaskHash).toBe(mask.hash);
      expect(result.prunableSparsity).toBeCloseTo(Math.round(p.sparsity * mask.prunableCount) / mask.prunableCount, 12);
      expect(p.metrics).toMatchObject({ testAccuracy: expect.any(Number), ece: expect.any(Number), candidates: { meanTestAccuracy: expect.any(Number), bestTestAccuracy: expect.any(Number) } });
      expect((p.metrics.distances as unknown[]).length).toBe(1);
    }
    // Stacking: zeros of phase 1's result stay zero in phase 2's mask.
    const diff = (await request(t.http).get(`/masks/${p1.maskId}/diff/${p2.maskId}`).expect(200)).body;
    expect(diff.tensors.every((x: { keptOnlyInB: number }) => x.keptOnlyInB === 0)).toBe(true);
  }, 300_000);

  it("a greedy SMS phase ranks its candidates by the val accuracy their retraining measured: the singles are not scored again", async () => {
    const created = await request(t.http).post('/runs').send({ kind: 'sms', modelId: dense, datasetId: data, goalSparsity: 0.5, phases: 1, m: 3, training: TRAIN, soup: { method: 'greedy' } }).expect(202);
    const run = await waitForRun(t, created.body.id, 240_000);
    expect(run.status).toBe('succeeded');
    const [phase] = run.phases;
    const vals = phase.candidateIds.map((id: string) => run.candidates.find((c: { id: string }) => c.id === id).valAccuracy);
    expect(vals.every((v: unknown) => typeof v === 'number')).toBe(true);
    const soup = (await request(t.http).get(`/soups/${phase.soupId}`).expect(200)).body;
    expect(soup.status).toBe('succeeded');
    expect(soup.params.knownScores).toEqual(vals);
    // Every step's single score is its candidate's own (lenet has no batch norm: the very score greedy would measure).
    const models = phase.candidateIds.map((id: string) => run.candidates.find((c: { id: string }) => c.id === id).resultModelId);
    expect(soup.steps).toHaveLength(3);
    for (const step of soup.steps) expect(step.score).toBe(vals[models.indexOf(step.modelId)]);
    // Ranked best first by those scores (ties keep candidate order).
    const order = [0, 1, 2].sort((a, b) => vals[b] - vals[a] || a - b);
    expect(soup.steps.map((s: { modelId: string }) => models.indexOf(s.modelId))).toEqual(order);
  }, 300_000);

  it('runs IMP with one candidate per phase, the candidate being the phase result', async () => {
    const run = await waitForRun(t, (await request(t.http).post('/runs').send({ kind: 'imp', modelId: dense, datasetId: data, goalSparsity: 0.9, phases: 2, training: TRAIN, epochsMultiplier: 2 }).expect(202)).body.id, 240_000);
    expect(run.status).toBe('succeeded');
    ids.imp = run.id;
    expect(run.candidates.every((c: { config: { epochs: number } }) => c.config.epochs === 1)).toBe(true);
    for (const p of run.phases) {
      expect(p.candidateIds).toHaveLength(1);
      expect(p.soupId).toBeNull();
      expect(p.resultModelId).toBe(run.candidates.find((c: { id: string }) => c.id === p.candidateIds[0]).resultModelId);
    }
  }, 300_000);

  it('reports each phase, plots accuracy against sparsity, and compares runs', async () => {
    const report = (await request(t.http).get(`/runs/${ids.sms}/report`).expect(200)).body;
    expect(report.label).toBe('SMS m=2 (uniform)');
    expect(report.phases).toHaveLength(2);
    for (const p of report.phases) {
      expect(p.candidates).toHaveLength(2);
      const tests = p.candidates.map((c: { testAccuracy: number }) => c.testAccuracy);
      expect(p.candidateMean.testAccuracy).toBeCloseTo((tests[0] + tests[1]) / 2, 12);
      expect(p.candidateBest.testAccuracy).toBe(Math.max(...tests));
      expect(p.result.testAccuracy).toBeGreaterThan(0.5);
      expect(p.result.ece).toBeGreaterThanOrEqual(0);
      expect(p.result.meanCorruptionAccuracy).toBeLessThan(p.result.testAccuracy);
      expect(p.soup.method).toBe('uniform');
      expect(p.meanL2Distance).toBeGreaterThan(0);
    }
    const svg = await request(t.http).get(`/runs/${ids.sms}/report.svg?baselineIds=${ids.imp}`).buffer(true).parse((r, cb) => {
      let x = '';
      r.on('data', (c: Buffer) => (x += c));
      r.on('end', () => cb(null, x));
    }).expect(200);
    expect(svg.headers['content-type']).toMatch(/image\/svg\+xml/);
    expect(svg.body).toMatch(/^<svg/);
    expect((svg.body as string).match(/<polyline/g)).toHaveLength(2);
    expect(svg.body).toContain('SMS m=2 (uniform)');
    expect(svg.body).toContain('IMP');
    const cmp = (await request(t.http).get(`/runs/compare?ids=${ids.sms},${ids.imp}`).expect(200)).body;
    expect(cmp.runs.map((r: { label: string }) => r.label)).toEqual(['SMS m=2 (uniform)', 'IMP 2×']);
    expect(cmp.rows).toHaveLength(2);
    expect(cmp.rows[1].sparsity).toBeCloseTo(0.9, 12);
    await request(t.http).get('/runs/compare?ids=nope').expect(400);
  });

  it('cancels mid-phase, leaving finished phases and their models in place', async () => {
    // 20 epochs of the slice: long enough (about a second a candidate) that the cancel lands while
    // phase 2 trains; at 0.5 epochs the FMA kernels finish a candidate in tens of ms, before it.
    const created = (await request(t.http).post('/runs').send({ kind: 'sms', modelId: dense, datasetId: data, goalSparsity: 0.8, phases: 2, m: 2, training: { ...TRAIN, epochs: 20 } }).expect(202)).body;
    // Phase 2's candidates have started training (phase 1 is then finished).
    await waitForRunEvent(t, created.id, (e) => e.type === 'candidate-started' && e.data.phase === 2);
    await request(t.http).post(`/runs/${created.id}/cancel`).expect(200);
    const finished = await waitForRunEvent(t, created.id, (e) => e.type === 'run-finished', 30_000);
    expect(finished.data.status).toBe('cancelled');
    const run = (await request(t.http).get(`/runs/${created.id}`).expect(200)).body;
    expect(run.candidates.some((c: { status: string }) => c.status === 'running' || c.status === 'queued')).toBe(false);
    expect(run.status).toBe('cancelled');
    expect(run.phases.map((p: { status: string }) => p.status)).toEqual(['succeeded', 'cancelled']);
    await request(t.http).get(`/models/${run.phases[0].resultModelId}`).expect(200);
    expect(run.candidates.filter((c: { phase: number }) => c.phase === 2).every((c: { status: string }) => ['cancelled', 'succeeded'].includes(c.status))).toBe(true);
  }, 120_000);

  it('starts from a template trained densely first when asked to pretrain', async () => {
    const run = await waitForRun(t, (await request(t.http).post('/runs').send({ kind: 'sms', datasetId: data, pretrain: { architecture: 'lenet-300-100', seed: 3, training: { ...TRAIN, epochs: 1 } }, goalSparsity: 0.5, phases: 1, m: 2, training: TRAIN }).expect(202)).body.id, 240_000);
    expect(run.status).toBe('succeeded');
    const pretrain = run.candidates.find((c: { phase: number }) => c.phase === 0);
    expect(pretrain.config.epochs).toBe(1);
    const dense = (await request(t.http).get(`/models/${pretrain.resultModelId}`).expect(200)).body;
    expect(dense).toMatchObject({ parentIds: [run.modelId], origin: { kind: 'train' } });
    expect(run.phases[0].inputModelId).toBe(dense.id);
    expect((await request(t.http).get(`/models/${run.modelId}`)).body.origin).toMatchObject({ kind: 'template', architecture: 'lenet-300-100', seed: 3 });
    const before = (await request(t.http).get('/models')).body.total;
    // Refused after the template was made (the mask does not exist): the template goes too.
    await request(t.http).post('/runs').send({ kind: 'sms', datasetId: data, pretrain: { architecture: 'lenet-300-100' }, maskId: '00000000-0000-4000-8000-000000000000', goalSparsity: 0.5, phases: 1, m: 2 }).expect(404);
    expect((await request(t.http).get('/models')).body.total).toBe(before);
  }, 300_000);

  it('refuses phased runs that cannot work', async () => {
    await request(t.http).post('/runs').send({ kind: 'sms', modelId: dense, datasetId: data, phases: 2, m: 2 }).expect(400);
    await request(t.http).post('/runs').send({ kind: 'sms', modelId: dense, datasetId: data, goalSparsity: 1, phases: 2, m: 2 }).expect(400);
    await request(t.http).post('/runs').send({ kind: 'imp', modelId: dense, datasetId: data, goalSparsity: 0.5, phases: 2, m: 3 }).expect(400);
  });
});
