import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunLifecycle } from '../src/runs/run-lifecycle.js';
import { RunCandidateEntity, RunEntity, RunEventEntity, RunPhaseEntity } from '../src/runs/run.entity.js';
import { SoupEntity } from '../src/soups/soup.entity.js';
import { startTestApp, type TestApp } from './support/app.js';
import { safetensorsBytes, seededWeights } from './support/checkpoints.js';

/**
 * The run lifecycle at service depth, against the real database (PGlite, or Postgres when
 * DATABASE_URL is set): rows are written directly, no worker runs.
 */
describe('RunLifecycle (one owner of run status)', () => {
  let t: TestApp;
  let lifecycle: RunLifecycle;
  let modelId: string;
  beforeAll(async () => {
    t = await startTestApp();
    lifecycle = t.app.get(RunLifecycle);
    const bytes = await safetensorsBytes([{ name: 'fc.weight', shape: [4, 4], data: seededWeights(16, 1) }]);
    modelId = (await request(t.http).post('/models?name=m').set('content-type', 'application/octet-stream').send(bytes).expect(201)).body.id;
  });
  afterAll(() => t?.close());

  const newRun = async (candidates: RunCandidateEntity['status'][] = [], phases = 0) => {
    const run = await t.dataSource.getRepository(RunEntity).save({ kind: 'retrain', status: 'queued', backend: null, request: {}, modelId, datasetId: 'mnist', maskId: null, callbackUrl: null, error: null, startedAt: null, finishedAt: null });
    for (const [index, status] of candidates.entries()) await t.dataSource.getRepository(RunCandidateEntity).save({ runId: run.id, phase: 0, index, config: {}, status, attempts: 0 });
    for (let i = 1; i <= phases; i++) await t.dataSource.getRepository(RunPhaseEntity).save({ runId: run.id, index: i, sparsity: 0.5, status: i === 1 ? 'succeeded' : 'queued' });
    return run.id;
  };
  const finishedEvents = (runId: string) => t.dataSource.getRepository(RunEventEntity).findBy({ runId, type: 'run-finished' });
  const status = async (runId: string) => (await t.dataSource.getRepository(RunEntity).findOneByOrFail({ id: runId })).status;

  it('starts a queued run once, and ends it once: a second end (a result landing twice) changes nothing', async () => {
    const id = await newRun();
    await t.dataSource.transaction((tx) => lifecycle.start(tx, id));
    expect(await status(id)).toBe('running');
    expect(await t.dataSource.transaction((tx) => lifecycle.finish(tx, id, 'succeeded', null))).toBe(true);
    expect(await t.dataSource.transaction((tx) => lifecycle.finish(tx, id, 'failed', 'late'))).toBe(false);
    expect(await status(id)).toBe('succeeded');
    expect((await finishedEvents(id)).map((e) => e.data)).toEqual([{ status: 'succeeded', error: null }]);
    // Starting an ended run does not revive it.
    await t.dataSource.transaction((tx) => lifecycle.start(tx, id));
    expect(await status(id)).toBe('succeeded');
  });

  it('fails a run: phases that never started end cancelled, a phase soup left queued for a retry ends failed with its error', async () => {
    const id = await newRun(['succeeded', 'succeeded'], 2);
    await t.dataSource.transaction((tx) => lifecycle.start(tx, id));
    const soup = await t.dataSource.getRepository(SoupEntity).save({ status: 'queued', method: 'uniform', params: {}, datasetId: null, resultModelId: null, maskHash: null, sparsity: null, weights: null, steps: [], valAccuracy: null, error: 'EROFS: read-only file system', callbackUrl: null, finishedAt: null });
    await t.dataSource.getRepository(RunPhaseEntity).update({ runId: id, index: 1 }, { status: 'failed', soupId: soup.id });
    expect(await t.dataSource.transaction((tx) => lifecycle.finish(tx, id, 'failed', 'phase 1: EROFS'))).toBe(true);
    const phases = await t.dataSource.getRepository(RunPhaseEntity).find({ where: { runId: id }, order: { index: 'ASC' } });
    expect(phases.map((p) => p.status)).toEqual(['failed', 'cancelled']);
    const after = await t.dataSource.getRepository(SoupEntity).findOneByOrFail({ id: soup.id });
    expect([after.status, after.error]).toEqual(['failed', 'EROFS: read-only file system']);
    expect(after.finishedAt).not.toBeNull();
  });

  it('cancels a run with nothing running: queued candidates and unfinished phases cancelled, finished ones kept, run-finished once', async () => {
    const id = await newRun(['queued', 'succeeded'], 2);
    const queued = await t.dataSource.transaction((tx) => lifecycle.cancel(tx, id));
    expect(queued).toHaveLength(1);
    expect(await status(id)).toBe('cancelled');
    const candidates = await t.dataSource.getRepository(RunCandidateEntity).find({ where: { runId: id }, order: { index: 'ASC' } });
    expect(candidates.map((c) => c.status)).toEqual(['cancelled', 'succeeded']);
    const phases = await t.dataSource.getRepository(RunPhaseEntity).find({ where: { runId: id }, order: { index: 'ASC' } });
    expect(phases.map((p) => p.status)).toEqual(['succeeded', 'cancelled']);
    expect((await finishedEvents(id)).map((e) => e.data)).toEqual([{ status: 'cancelled', error: null }]);
    // A phase that finishes afterwards does not turn a cancelled run into a failed or succeeded one.
    expect(await t.dataSource.transaction((tx) => lifecycle.finish(tx, id, 'failed', 'phase 2: late'))).toBe(false);
    expect(await status(id)).toBe('cancelled');
  });

  it('cancels a run with a candidate still running: the end is announced when that candidate ends, as cancelled', async () => {
    const id = await newRun(['running', 'queued']);
    await t.dataSource.transaction((tx) => lifecycle.start(tx, id));
    await t.dataSource.transaction((tx) => lifecycle.cancel(tx, id));
    expect(await finishedEvents(id)).toHaveLength(0);
    const running = await t.dataSource.getRepository(RunCandidateEntity).findOneByOrFail({ runId: id, index: 0 });
    await t.dataSource.transaction((tx) => lifecycle.finishCandidate(tx, running, 'cancelled', null));
    // Ending a cancelled run with another status is refused; with `cancelled` it is announced, once.
    expect(await t.dataSource.transaction((tx) => lifecycle.finish(tx, id, 'succeeded', null))).toBe(false);
    expect(await t.dataSource.transaction((tx) => lifecycle.finish(tx, id, 'cancelled', null))).toBe(true);
    expect(await t.dataSource.transaction((tx) => lifecycle.finish(tx, id, 'cancelled', null))).toBe(false);
    expect((await finishedEvents(id)).map((e) => e.data)).toEqual([{ status: 'cancelled', error: null }]);
    const events = await t.dataSource.getRepository(RunEventEntity).find({ where: { runId: id }, order: { id: 'ASC' } });
    expect(events.map((e) => e.type)).toEqual(['run-cancelled', 'candidate-cancelled', 'run-finished']);
  });

  it('ends a run inside the calling transaction: nothing is ended when it rolls back', async () => {
    const id = await newRun();
    await expect(
      t.dataSource.transaction(async (tx) => {
        await lifecycle.finish(tx, id, 'failed', 'boom');
        throw new Error('rolled back');
      }),
    ).rejects.toThrow('rolled back');
    expect(await status(id)).toBe('queued');
    expect(await finishedEvents(id)).toHaveLength(0);
  });
});
