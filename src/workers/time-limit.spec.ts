import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ProblemException } from '../common/problem.js';
import { TaskTimeLimit } from './time-limit.js';
import { WorkerPool } from './worker-pool.js';

describe('TaskTimeLimit', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pool-'));
  const pool = new WorkerPool(1, { backend: 'auto', artifacts: { kind: 'fs', root: dir }, cacheDir: dir, allowDiagnostics: true });
  afterAll(() => pool.close());

  it('ends a task that keeps its thread busy, answers 503, and the pool goes on with a fresh thread', async () => {
    const first = await pool.run({ type: 'info' }); // a thread's start-up (backend init) is not what is timed here
    const limit = new TaskTimeLimit(1500);
    const err = await limit.run(pool, { type: 'crash', how: 'spin' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProblemException);
    expect((err as ProblemException).problem).toMatchObject({ status: 503, task: 'crash', timeoutSeconds: 1.5, type: expect.stringContaining('task-timeout') });
    const next = await pool.run({ type: 'info' });
    expect(next.threadId).not.toBe(first.threadId);
    expect(limit.stats()).toMatchObject({ timedOut: 1, overdue: 0 });
  });

  it('leaves a caller\'s own cancellation as it was (not a timeout)', async () => {
    const limit = new TaskTimeLimit(60_000);
    const controller = new AbortController();
    const p = limit.run(pool, { type: 'crash', how: 'hang' }, { signal: controller.signal });
    setTimeout(() => controller.abort(), 200);
    await expect(p).rejects.toThrow(/abort/i);
    expect(limit.stats().timedOut).toBe(0);
  });

  it('does not count the time a background task waits for its turn against its bound', async () => {
    await pool.run({ type: 'info' }); // a warm thread: start-up is not what is timed here
    const busy = pool.run({ type: 'crash', how: 'sleep', ms: 2500 }, { lane: 'background' });
    const limit = new TaskTimeLimit(1500);
    // Waits 2.5 s (longer than its bound) for the only thread, then runs in milliseconds.
    const queued = limit.run(pool, { type: 'info' }, { lane: 'background' });
    expect(await busy).toBeNull();
    expect((await queued).backend.name).toBeTruthy();
    expect(limit.stats().timedOut).toBe(0);
  });

  it('reports a task that outlives its bound and does not end as overdue (a stuck pool)', () => {
    const limit = new TaskTimeLimit(1000);
    // A pool whose thread cannot be ended: it ignores the abort.
    const stuck = { run: (_task: unknown, opts: { onStart?: () => void }) => { opts.onStart?.(); return new Promise(() => {}); } } as unknown as WorkerPool;
    void limit.run(stuck, { type: 'info' });
    expect(limit.stats().overdue).toBe(0);
    expect(limit.stats(Date.now() + 12_000)).toMatchObject({ overdue: 1, oldestTaskSeconds: 12 });
  });
});
