import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { toProblem } from '../src/common/problem.filter.js';
import { ModelsService } from '../src/models/models.service.js';
import { WorkerPoolService } from '../src/workers/worker-pool.service.js';
import { startTestApp, type TestApp } from './support/app.js';
import { safetensorsBytes, seededWeights } from './support/checkpoints.js';
import { uploadMnistSlice } from './support/datasets.js';
import { artifactFiles } from './support/files.js';

/**
 * Requests that race a delete: the row a request started from is deleted before it writes what
 * refers to it. The database's foreign key refuses the write; the client gets a 409 problem that
 * names the resource, and nothing of the refused request stays.
 */
describe('writes that race a delete', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(() => t?.close());

  const upload = async (name: string, seed: number) =>
    (
      await request(t.http)
        .post(`/models?name=${name}`)
        .set('content-type', 'application/octet-stream')
        .send(await safetensorsBytes([{ name: 'fc.weight', shape: [8, 16], data: seededWeights(128, seed) }, { name: 'fc.bias', shape: [8], data: seededWeights(8, seed + 1) }]))
        .expect(201)
    ).body as { id: string };
  const count = async (table: string) => Number((await t.dataSource.query(`SELECT count(*)::int AS n FROM ${table}`))[0].n);

  /** Deletes `victim` over HTTP right after the request under test has read it (once). */
  const deleteAfterRead = (victim: string) => {
    const models = t.app.get(ModelsService);
    const original = models.entity.bind(models);
    let done = false;
    return vi.spyOn(models, 'entity').mockImplementation(async (id: string) => {
      const row = await original(id);
      if (id === victim && !done) {
        done = true;
        await request(t.http).delete(`/models/${victim}`).expect(204);
      }
      return row;
    });
  };

  it('a soup whose model is deleted while it is created is a 409 that names the model, and no soup row stays', async () => {
    const a = await upload('a', 1);
    const b = await upload('b', 2);
    const soupsBefore = await count('soup');
    const spy = deleteAfterRead(b.id);
    try {
      const res = await request(t.http).post('/soups').send({ modelIds: [a.id, b.id], method: 'uniform' });
      expect(res.status).toBe(409);
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(res.body).toMatchObject({ status: 409, resource: 'model' });
      expect(res.body.type).toMatch(/resource-changed$/);
      expect(res.body.detail).toContain(b.id);
    } finally {
      spy.mockRestore();
    }
    expect(await count('soup')).toBe(soupsBefore);
    expect(await count('soup_ingredient')).toBe(0);
    await request(t.http).get(`/models/${b.id}`).expect(404);
  });

  it('a prune whose model is deleted while it runs is a 409, and its mask and pruned weights are not left behind', async () => {
    const m = await upload('p', 3);
    const files = artifactFiles(t.config.dataDir);
    const masks = await count('mask');
    const pool = t.app.get(WorkerPoolService);
    const run = pool.run.bind(pool);
    const spy = vi.spyOn(pool, 'run').mockImplementation((async (task: Parameters<typeof run>[0], opts?: Parameters<typeof run>[1]) => {
      const result = await run(task, opts);
      await request(t.http).delete(`/models/${m.id}`).expect(204);
      return result;
    }) as typeof pool.run);
    try {
      const res = await request(t.http).post(`/models/${m.id}/prune`).send({ method: 'magnitude-global', sparsity: 0.5 });
      expect(res.status).toBe(409);
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(res.body.detail).toMatch(/model/);
    } finally {
      spy.mockRestore();
    }
    expect(await count('mask')).toBe(masks);
    expect(artifactFiles(t.config.dataDir)).toEqual(files);
  });

  it('an evaluation whose model is deleted while it runs is a 409 and stores no evaluation', async () => {
    const dataset = await uploadMnistSlice(t, 300);
    const template = (await request(t.http).post('/models/templates').send({ architecture: 'lenet-300-100', datasetId: dataset.id, seed: 1 }).expect(201)).body as { id: string };
    const pool = t.app.get(WorkerPoolService);
    const run = pool.run.bind(pool);
    const spy = vi.spyOn(pool, 'run').mockImplementation((async (task: Parameters<typeof run>[0], opts?: Parameters<typeof run>[1]) => {
      const result = await run(task, opts);
      if (task.type === 'evaluate') await request(t.http).delete(`/models/${template.id}`).expect(204);
      return result;
    }) as typeof pool.run);
    try {
      const res = await request(t.http).post(`/models/${template.id}/evaluations`).send({ datasetId: dataset.id, split: 'test' });
      expect(res.status).toBe(409);
      expect(res.body).toMatchObject({ status: 409, resource: 'model' });
      expect(res.body.detail).toContain(template.id);
    } finally {
      spy.mockRestore();
    }
    expect(await count('evaluation')).toBe(0);
  });

  it('a unique key taken meanwhile maps to a 409 that names the table (a real violation from the driver)', async () => {
    const id = '00000000-0000-4000-8000-000000000001';
    await t.dataSource.query(`INSERT INTO job_hold (job_id, queue, worker_id, started_at) VALUES ($1, 'x', $1, now())`, [id]);
    const err = await t.dataSource.query(`INSERT INTO job_hold (job_id, queue, worker_id, started_at) VALUES ($1, 'x', $1, now())`, [id]).catch((e: unknown) => e);
    await t.dataSource.query('DELETE FROM job_hold WHERE job_id = $1', [id]);
    const problem = toProblem(err);
    expect(problem).toMatchObject({ status: 409, resource: 'job_hold' });
    expect(problem.type).toMatch(/already-exists$/);
    expect(problem.detail).toContain(id);
  });
});
