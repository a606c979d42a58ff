import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobsService } from '../src/jobs/jobs.service.js';
import { WorkerRegistryService } from '../src/jobs/worker-registry.service.js';
import { startTestApp, type TestApp } from './support/app.js';

/**
 * The job-hold sweep (JobsService): a job held by a process that is not alive goes back to the
 * queue; a job held by a live process (fresh heartbeat) is left alone. Real pg-boss jobs on the
 * service's database, taken (`active`) on a queue of the test's own so no handler races the test.
 */
describe('jobs held by processes', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(() => t?.close());

  const QUEUE = 'test-held';
  const takeJob = async () => {
    const boss = await t.app.get(JobsService).start();
    if (!(await boss.getQueue(QUEUE))) await boss.createQueue(QUEUE, { name: QUEUE, retryLimit: 2, retryDelay: 1, expireInSeconds: 6 * 3600 });
    const id = (await boss.send(QUEUE, {}))!;
    const [job] = await boss.fetch(QUEUE);
    expect(job.id).toBe(id);
    return id;
  };
  const state = async (id: string) => (await (await t.app.get(JobsService).start()).getJobById(QUEUE, id))?.state;
  const hold = (jobId: string, workerId: string) => t.dataSource.query(`INSERT INTO job_hold (job_id, queue, worker_id, started_at) VALUES ($1, $2, $3, now())`, [jobId, QUEUE, workerId]);
  const worker = (id: string, heartbeatAgoSeconds: number) =>
    t.dataSource.query(`INSERT INTO worker_process (id, hostname, pid, threads, started_at, heartbeat_at) VALUES ($1, 'elsewhere', 1, 1, now(), now() - ($2 || ' seconds')::interval)`, [id, String(heartbeatAgoSeconds)]);

  it('hands back the job of a dead process within one sweep, whatever its expiry', async () => {
    const dead = randomUUID();
    await worker(dead, 3600);
    const job = await takeJob();
    await hold(job, dead);
    expect(await state(job)).toBe('active');
    await t.app.get(JobsService).sweep();
    expect(await state(job)).toBe('retry');
    expect(await t.dataSource.query('SELECT * FROM job_hold WHERE job_id = $1', [job])).toEqual([]);
  });

  it.skipIf(!process.env.DATABASE_URL)('leaves the job of a live process alone (Postgres: several processes share one database)', async () => {
    const live = randomUUID();
    await worker(live, 1);
    const job = await takeJob();
    await hold(job, live);
    await t.app.get(JobsService).sweep();
    expect(await state(job)).toBe('active');
    expect(await t.app.get(WorkerRegistryService).isDead(live)).toBe(false);
    // Its heartbeat stops: past DEAD_AFTER_MS it is dead, and the next sweep hands the job back.
    await t.dataSource.query(`UPDATE worker_process SET heartbeat_at = now() - interval '1 minute' WHERE id = $1`, [live]);
    expect(await t.app.get(WorkerRegistryService).isDead(live)).toBe(true);
    await t.app.get(JobsService).sweep();
    expect(await state(job)).toBe('retry');
  });

  it('a hold of this process is never swept', async () => {
    const job = await takeJob();
    await hold(job, t.app.get(WorkerRegistryService).id);
    await t.app.get(JobsService).sweep();
    expect(await state(job)).toBe('active');
    await t.dataSource.query('DELETE FROM job_hold WHERE job_id = $1', [job]);
  });
});
