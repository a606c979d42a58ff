/**
 * Service-depth tests: the services against a real database (PGlite, or Postgres under
 * `npm run test:pg`) and the real worker threads, with a probe around the worker pool that records
 * each task and can fail or hold one. They check what HTTP tests cannot reach: how many tasks a
 * request costs, what two attempts at once leave behind, what a retried step leaves behind.
 */
import request from 'supertest';
import { In } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ArtifactEntity } from '../src/artifacts/artifact.entity.js';
import { ArtifactsService } from '../src/artifacts/artifacts.service.js';
import { MaskEntity } from '../src/masks/mask.entity.js';
import { ModelEntity } from '../src/models/model.entity.js';
import { ModelsService } from '../src/models/models.service.js';
import { RunCandidateEntity } from '../src/runs/run.entity.js';
import { RunsService } from '../src/runs/runs.service.js';
import { SoupEntity, SoupIngredientEntity } from '../src/soups/soup.entity.js';
import { SoupsService } from '../src/soups/soups.service.js';
import { startTestApp, type TestApp } from './support/app.js';
import { safetensorsBytes, seededWeights } from './support/checkpoints.js';
import { uploadMnistSlice } from './support/datasets.js';
import { PoolProbe } from './support/pool-probe.js';
import { waitForRun } from './support/runs.js';

const TRAIN = { epochs: 0.25, batchSize: 32, learningRate: 0.05, schedule: 'constant' as const };

describe('services against a real database, with a probe around the worker pool', () => {
  let t: TestApp;
  let probe: PoolProbe;
  let soups: SoupsService;
  let models: ModelsService;
  let runs: RunsService;

  beforeAll(async () => {
    t = await startTestApp({ WORKERS: '2' });
    probe = new PoolProbe(t);
    soups = t.app.get(SoupsService);
    models = t.app.get(ModelsService);
    runs = t.app.get(RunsService);
  });
  afterAll(() => t?.close());

  const upload = async (name: string, seed: number, shape: number[] = [6, 8]) =>
    (await request(t.http).post(`/models?name=${name}`).set('content-type', 'application/octet-stream').send(await safetensorsBytes([
      { name: 'fc.weight', shape, data: seededWeights(shape[0] * shape[1], seed) },
      { name: 'fc.bias', shape: [shape[0]], data: seededWeights(shape[0], seed + 1) },
    ])).expect(201)).body as { id: string; sha256: string };
  const count = async (entity: typeof SoupEntity | typeof ModelEntity | typeof MaskEntity | typeof SoupIngredientEntity) => t.dataSource.getRepository(entity).count();

  describe('models', () => {
    it('two models with the same weights share one artifact; deleting one keeps it for the other, and gc keeps it too', async () => {
      const a = await upload('same-a', 5);
      const b = await upload('same-b', 5);
      expect(b.sha256).toBe(a.sha256);
      expect(await t.dataSource.getRepository(ArtifactEntity).countBy({ sha256: a.sha256 })).toBe(1);
      await models.delete(a.id);
      await t.app.get(ArtifactsService).collectGarbage(0);
      expect(await t.app.get(ArtifactsService).store.has(a.sha256)).toBe(true);
      const reader = await models.openModel(await models.entity(b.id));
      try {
        expect(reader.tensors.map((e) => e.name).sort()).toEqual(['fc.bias', 'fc.weight']);
        expect(Array.from(await reader.readFloat32('fc.bias'))).toEqual(Array.from(seededWeights(6, 6)));
      } finally {
        await reader.close();
      }
    });
  });

  describe('soups', () => {
    it('a uniform soup costs one worker task: its build validates the candidates', async () => {
      const ids = [(await upload('u1', 11)).id, (await upload('u2', 12)).id];
      const before = probe.count('soup');
      const { soup } = await soups.create({ modelIds: ids, method: 'uniform' });
      expect(soup.status).toBe('succeeded');
      expect(probe.count('soup') - before).toBe(1);
      expect(probe.tasks.at(-1)).toMatchObject({ type: 'soup', method: 'uniform' });
      expect((probe.tasks.at(-1) as { validateOnly?: boolean }).validateOnly).toBeUndefined();
    });

    it('candidates that do not fit: one task, a 422 listing the mismatch, and no soup or ingredient row', async () => {
      const ids = [(await upload('m1', 21)).id, (await upload('m2', 22, [6, 9])).id];
      const rows = { soups: await count(SoupEntity), ingredients: await count(SoupIngredientEntity), models: await count(ModelEntity) };
      const before = probe.count('soup');
      const err = await soups.create({ modelIds: ids, method: 'uniform' }).then(() => null, (e: unknown) => e as { status?: number; code?: string; details?: { mismatches?: unknown[] } });
      expect(err).toMatchObject({ status: 422 });
      expect(JSON.stringify(err)).toMatch(/shape/);
      expect(probe.count('soup') - before).toBe(1);
      expect({ soups: await count(SoupEntity), ingredients: await count(SoupIngredientEntity), models: await count(ModelEntity) }).toEqual(rows);
    });

    it('two builds of one soup at once land one result model, whose weights stay stored', async () => {
      const ids = [(await upload('r1', 31)).id, (await upload('r2', 32)).id];
      const soup = await t.dataSource.transaction(async (tx) => {
        const s = await tx.save(tx.create(SoupEntity, { status: 'queued', method: 'uniform', params: { weights: null, comparison: null, bnRecalibration: true, name: 'race' }, datasetId: null, steps: [], callbackUrl: null }));
        await tx.insert(SoupIngredientEntity, ids.map((modelId, position) => ({ soupId: s.id, modelId, position })));
        return s;
      });
      const before = probe.count('soup');
      await Promise.all([soups.build(soup.id, { rethrow: true }), soups.build(soup.id, { rethrow: true })]);
      // Both may have run the merge (the loser finds the soup taken when it lands); one lands.
      expect(probe.count('soup') - before).toBeGreaterThanOrEqual(1);
      const landed = await t.dataSource.getRepository(ModelEntity).find();
      const results = landed.filter((m) => (m.origin as { soupId?: string }).soupId === soup.id);
      expect(results).toHaveLength(1);
      const done = await soups.get(soup.id);
      expect(done).toMatchObject({ status: 'succeeded', resultModelId: results[0].id });
      expect(await t.app.get(ArtifactsService).store.has(results[0].weightsSha256)).toBe(true);
    });
  });

  describe('runs', () => {
    let dataset: string;
    let template: string;
    beforeAll(async () => {
      dataset = (await uploadMnistSlice(t, 600, 'depth-slice')).id;
      template = (await request(t.http).post('/models/templates').send({ architecture: 'lenet-300-100', datasetId: dataset, seed: 4 }).expect(201)).body.id;
    });

    it('a phase whose prune fails once is retried by its job: the run ends with one mask and one pruned model per phase', async () => {
      const masksBefore = await count(MaskEntity);
      // Phase 1's training held at the pool (its prune is done by then), so the injected failure
      // meets phase 2's prune however fast phase 1 trains.
      const held = probe.holdNext('train');
      const created = await runs.create({ kind: 'imp', modelId: template, datasetId: dataset, goalSparsity: 0.75, phases: 2, training: TRAIN } as never);
      await held.reached;
      const prunesBefore = probe.count('prune');
      probe.failNext('prune', new Error('the worker thread stopped (injected by the test)'));
      held.release();
      const run = await waitForRun(t, created.id, 180_000);
      expect(run.status).toBe('succeeded');
      // Phase 2 asked the pool twice: the injected failure, then the retry that pruned.
      expect(probe.count('prune') - prunesBefore).toBe(2);
      expect(await count(MaskEntity) - masksBefore).toBe(2);
      const pruned = run.phases.map((p: { prunedModelId: string }) => p.prunedModelId);
      expect(new Set(pruned).size).toBe(2);
      const namedForRun = await t.dataSource.getRepository(ModelEntity).createQueryBuilder('m').where('m.name LIKE :n', { n: `imp-${created.id.slice(0, 8)}-p%-pruned` }).getMany();
      expect(namedForRun.map((m) => m.id).sort()).toEqual([...pruned].sort());
    }, 240_000);

    it('a cancel while a candidate waits at the pool: the run ends cancelled and no result of it lands', async () => {
      const held = probe.holdNext('train');
      const created = await runs.create({ kind: 'retrain', modelId: template, datasetId: dataset, m: 1, training: { ...TRAIN, epochs: 0.1 } } as never);
      await held.reached;
      await runs.cancel(created.id);
      held.release();
      const run = await waitForRun(t, created.id, 60_000);
      expect(run.status).toBe('cancelled');
      const candidates = await t.dataSource.getRepository(RunCandidateEntity).findBy({ runId: created.id });
      expect(candidates.map((c) => [c.status, c.resultModelId])).toEqual([['cancelled', null]]);
      const landed = await t.dataSource.getRepository(ModelEntity).findBy({ id: In(candidates.map((c) => c.resultModelId).filter((x): x is string => !!x)) });
      expect(landed).toEqual([]);
    }, 120_000);
  });
});
