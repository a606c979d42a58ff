import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createScratchDatabase } from '../src/database/scratch.js';
import { freePort, json, nextRunEvent, prepareDataDir, type RunEvent, type ServiceProcess, startService, uploadMnistSliceHttp } from './support/process.js';

interface Run {
  id: string;
  status: string;
  candidates: { id: string; status: string; attempts: number; progress: unknown; resultModelId: string | null }[];
}

describe('a service killed with SIGKILL while a run trains', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'sparsoup-crash-'));

  let service: ServiceProcess | null = null;
  let drop: (() => Promise<void>) | null = null;
  const extraDirs: string[] = [];
  afterAll(async () => {
    await service?.kill('SIGKILL');
    await drop?.();
    for (const d of [dataDir, ...extraDirs]) rmSync(d, { recursive: true, force: true });
  });

  it('finishes the run after a restart: every candidate once, no orphaned artifacts', async () => {
    const env: Record<string, string> = { DATA_DIR: dataDir, WORKERS: '1' };
    if (process.env.DATABASE_URL) {
      const scratch = await createScratchDatabase(process.env.DATABASE_URL, 'sparsoup_crash');
      env.DATABASE_URL = scratch.url;
      drop = scratch.drop;
    }
    prepareDataDir(dataDir);
    const port = await freePort();
    service = await startService(env, port);
    const template = await json<{ id: string }>(`${service.url}/models/templates`, { method: 'POST', body: JSON.stringify({ architecture: 'lenet-300-100', datasetId: 'mnist', seed: 2 }) });
    const created = await json<Run>(`${service.url}/runs`, {
      method: 'POST',
      body: JSON.stringify({ kind: 'retrain', modelId: template.id, datasetId: 'mnist', m: 3, training: { epochs: 0.25, batchSize: 64, learningRate: 0.05, schedule: 'constant' } }),
    });
    // Kill it while the first candidate trains.
    for (let i = 0; ; i++) {
      const run = await json<Run>(`${service.url}/runs/${created.id}`);
      if (run.candidates.some((c) => c.status === 'running' && c.progress)) break;
      if (i > 600) throw new Error(`no candidate started training: ${JSON.stringify(run)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await service.kill('SIGKILL');

    service = await startService(env, await freePort());
    let run: Run;
    for (let i = 0; ; i++) {
      run = await json<Run>(`${service.url}/runs/${created.id}`);
      if (['succeeded', 'failed', 'cancelled'].includes(run.status)) break;
      if (i > 1200) throw new Error(`the run did not finish after the restart: ${JSON.stringify(run)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(run.status).toBe('succeeded');
    expect(run.candidates.every((c) => c.status === 'succeeded' && c.resultModelId)).toBe(true);
    expect(run.candidates.some((c) => c.attempts === 2)).toBe(true);

    // Exactly one result model per candidate.
    const children = await json<{ items: { origin: { candidateId?: string } }[] }>(`${service.url}/models?parentId=${template.id}&limit=100`);
    const perCandidate = children.items.map((m) => m.origin.candidateId).filter(Boolean).sort();
    expect(perCandidate).toEqual(run.candidates.map((c) => c.id).sort());

    // No orphans: every stored object has a row, and nothing unreferenced is left to collect.
    const rows = await json<{ total: number }>(`${service.url}/artifacts?limit=1`);
    const objects = readdirSync(join(dataDir, 'artifacts', 'sha256'), { recursive: true }).filter((f) => /[0-9a-f]{64}$/.test(String(f)));
    expect(objects.length).toBe(rows.total);
    const gc = await json<{ rowsDeleted: number }>(`${service.url}/artifacts/gc`, { method: 'POST', body: JSON.stringify({ graceSeconds: 0 }) });
    expect(gc.rowsDeleted).toBe(0);
  }, 240_000);

  it('finishes an SMS run killed in the middle of phase 2 with the same phases and each candidate once', async () => {
    // A fresh service of its own: another data folder and database.
    await service?.kill('SIGKILL');
    const dir = mkdtempSync(join(tmpdir(), 'sparsoup-crash-sms-'));
    extraDirs.push(dir);
    const env: Record<string, string> = { DATA_DIR: dir, WORKERS: '1' };
    if (process.env.DATABASE_URL) {
      const scratch = await createScratchDatabase(process.env.DATABASE_URL, 'sparsoup_crash_sms');
      env.DATABASE_URL = scratch.url;
      const first = drop;
      drop = async () => {
        await first?.();
        await scratch.drop();
      };
    }
    prepareDataDir(dir);
    const smsPort = await freePort();
    service = await startService(env, smsPort);
    const dataset = await uploadMnistSliceHttp(service.url);
    const template = await json<{ id: string }>(`${service.url}/models/templates`, { method: 'POST', body: JSON.stringify({ architecture: 'lenet-300-100', datasetId: dataset, seed: 5 }) });
    const created = await json<Run>(`${service.url}/runs`, {
      method: 'POST',
      body: JSON.stringify({ kind: 'sms', modelId: template.id, datasetId: dataset, goalSparsity: 0.8, phases: 2, m: 2, training: { epochs: 2, batchSize: 16, learningRate: 0.05, schedule: 'constant' } }),
    });
    for (let i = 0; ; i++) {
      const run = await json<Run & { phases: { index: number; status: string }[] }>(`${service.url}/runs/${created.id}`);
      if (run.phases[1]?.status === 'training' && run.candidates.some((c) => c.status === 'running' && c.progress && (c as unknown as { phase: number }).phase === 2)) break;
      if (run.status !== 'queued' && run.status !== 'running') throw new Error(`the run ended before phase 2 trained: ${JSON.stringify(run)}`);
      if (i > 1200) throw new Error(`phase 2 never started training: ${JSON.stringify(run.phases)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await service.kill('SIGKILL');
    service = await startService(env, await freePort());
    let run: Run & { phases: { index: number; status: string; candidateIds: string[]; resultModelId: string }[] };
    for (let i = 0; ; i++) {
      run = await json(`${service.url}/runs/${created.id}`);
      if (['succeeded', 'failed', 'cancelled'].includes(run.status)) break;
      if (i > 1200) throw new Error(`the run did not finish after the restart: ${JSON.stringify(run)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(run.status).toBe('succeeded');
    expect(run.phases.map((p) => [p.index, p.status, p.candidateIds.length])).toEqual([[1, 'succeeded', 2], [2, 'succeeded', 2]]);
    expect(run.candidates).toHaveLength(4);
    const models = await json<{ items: { origin: { candidateId?: string } }[] }>(`${service.url}/models?limit=500`);
    const results = models.items.map((m) => m.origin.candidateId).filter((c): c is string => !!c && run.candidates.some((x) => x.id === c));
    expect(results.sort()).toEqual(run.candidates.map((c) => c.id).sort());
    const rows = await json<{ total: number }>(`${service.url}/artifacts?limit=1`);
    const objects = readdirSync(join(dir, 'artifacts', 'sha256'), { recursive: true }).filter((f) => /[0-9a-f]{64}$/.test(String(f)));
    expect(objects.length).toBe(rows.total);
    expect((await json<{ rowsDeleted: number }>(`${service.url}/artifacts/gc`, { method: 'POST', body: JSON.stringify({ graceSeconds: 0 }) })).rowsDeleted).toBe(0);
  }, 300_000);
});

/**
 * kill -9 at every step of an SMS run, one after the other in the same run: during phase 1's prune,
 * a candidate's training, the soup, the evaluation, and between phases (phase 2's prune). Each kill
 * follows the step's event on the run's event stream (the step is in flight or has just ended when
 * the signal lands). After each restart the dead process's work must be taken up within a minute,
 * whatever its job's expiry, and the run must end with exactly the structure of an unbroken run.
 */
describe('an SMS run killed with SIGKILL at each step', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sparsoup-crash-steps-'));
  let service: ServiceProcess | null = null;
  let drop: (() => Promise<void>) | null = null;
  afterAll(async () => {
    await service?.kill('SIGKILL');
    await drop?.();
    rmSync(dir, { recursive: true, force: true });
  });

  it('finishes with two phases, four candidates, two soups, two evaluations: each once, no orphans', async () => {
    const env: Record<string, string> = { DATA_DIR: dir, WORKERS: '1' };
    if (process.env.DATABASE_URL) {
      const scratch = await createScratchDatabase(process.env.DATABASE_URL, 'sparsoup_crash_steps');
      env.DATABASE_URL = scratch.url;
      drop = scratch.drop;
    }
    prepareDataDir(dir);
    const port = await freePort();
    service = await startService(env, port);
    const dataset = await uploadMnistSliceHttp(service.url, 600);
    const template = await json<{ id: string }>(`${service.url}/models/templates`, { method: 'POST', body: JSON.stringify({ architecture: 'lenet-300-100', datasetId: dataset, seed: 7 }) });
    const created = await json<{ id: string }>(`${service.url}/runs`, {
      method: 'POST',
      body: JSON.stringify({ kind: 'sms', modelId: template.id, datasetId: dataset, goalSparsity: 0.75, phases: 2, m: 2, training: { epochs: 1, batchSize: 32, learningRate: 0.05, schedule: 'constant' } }),
    });
    const phaseIs = (type: string, phase: number) => (e: RunEvent) => e.type === type && e.data.phase === phase;
    const steps: [string, (e: RunEvent) => boolean][] = [
      ['phase 1 prune', phaseIs('phase-pruning', 1)],
      ['phase 1 training', phaseIs('progress', 1)],
      ['phase 1 soup', phaseIs('phase-merging', 1)],
      ['phase 1 evaluation', phaseIs('phase-evaluating', 1)],
      ['between phases (phase 2 prune)', phaseIs('phase-pruning', 2)],
    ];
    // What the run and, on Postgres, the job queue look like: for the message of a step that stalled.
    const diagnosis = async () => {
      const run = await json<{ status: string; phases: { index: number; status: string }[]; candidates: { phase: number; index: number; status: string; attempts: number; error: string | null }[] }>(`${service?.url}/runs/${created.id}`).catch(() => null);
      const lines = [`run ${run?.status}; phases ${JSON.stringify(run?.phases.map((p) => [p.index, p.status]))}`, ...(run?.candidates ?? []).map((c) => `candidate ${c.phase}.${c.index}: ${c.status}, attempts ${c.attempts}${c.error ? `, error ${c.error}` : ''}`)];
      if (env.DATABASE_URL) {
        const { default: pg } = await import('pg');
        const db = new pg.Client({ connectionString: env.DATABASE_URL });
        await db.connect();
        try {
          const jobs = await db.query(`SELECT j.id, j.name, j.state, j.retry_count, j.start_after, j.started_on, h.worker_id FROM pgboss.job j LEFT JOIN job_hold h ON h.job_id = j.id WHERE j.name IN ('train-candidate', 'advance-run', 'build-soup') ORDER BY j.created_on`);
          lines.push(...jobs.rows.map((j) => `job ${j.name} ${j.id}: ${j.state}, retries ${j.retry_count}, start after ${j.start_after?.toISOString()}, started ${j.started_on?.toISOString() ?? '-'}, held by ${j.worker_id ?? 'nobody'}`));
          const candidates = await db.query('SELECT phase, index, status, job_id, worker_id FROM run_candidate WHERE run_id = $1 ORDER BY phase, index', [created.id]);
          lines.push(...candidates.rows.map((c) => `candidate ${c.phase}.${c.index} row: ${c.status}, job ${c.job_id}, worker ${c.worker_id ?? '-'}`));
          const workers = await db.query(`SELECT id, pid, now() - heartbeat_at AS silent FROM worker_process`);
          lines.push(...workers.rows.map((w) => `worker ${w.id} (pid ${w.pid}) silent ${JSON.stringify(w.silent)}`));
          const lease = await db.query('SELECT advance_lease_holder, advance_lease_until FROM run WHERE id = $1', [created.id]);
          lines.push(`lease ${JSON.stringify(lease.rows[0])}`);
        } finally {
          await db.end();
        }
      }
      return lines.join('\n');
    };
    let last = 0;
    for (const [step, match] of steps) {
      const hit = await nextRunEvent(service.url, created.id, match, last, 240_000).catch(async (err) => {
        throw new Error(`waiting for ${step}: ${(err as Error).message}\n${await diagnosis().catch((e) => `(no diagnosis: ${e})`)}\n${service?.output().slice(-4000)}`);
      });
      await service.kill('SIGKILL');
      service = await startService(env, await freePort());
      // The dead process's job (active in pg-boss for hours) is taken up again within a minute.
      const resumed = await nextRunEvent(service.url, created.id, () => true, hit.id, 60_000).catch(async (err) => {
        throw new Error(`after the kill during ${step}, nothing moved within a minute: ${(err as Error).message}\n${await diagnosis().catch((e) => `(no diagnosis: ${e})`)}\n${service?.output().slice(-3000)}`);
      });
      expect(resumed.id).toBeGreaterThan(hit.id);
      last = hit.id;
    }
    const finished = await nextRunEvent(service.url, created.id, (e) => e.type === 'run-finished', last, 180_000).catch(async (err) => {
      throw new Error(`waiting for the end of the run: ${(err as Error).message}\n${await diagnosis().catch((e) => `(no diagnosis: ${e})`)}\n${service?.output().slice(-4000)}`);
    });
    expect(finished.data.status).toBe('succeeded');

    interface Run {
      status: string;
      candidates: { id: string; status: string; phase: number; resultModelId: string | null }[];
      phases: { index: number; status: string; candidateIds: string[]; soupId: string | null; resultModelId: string | null; prunedModelId: string | null; maskId: string | null }[];
    }
    const run = await json<Run>(`${service.url}/runs/${created.id}`);
    expect(run.status).toBe('succeeded');
    expect(run.phases.map((p) => [p.index, p.status, p.candidateIds.length])).toEqual([[1, 'succeeded', 2], [2, 'succeeded', 2]]);
    expect(run.candidates.map((c) => [c.phase, c.status])).toEqual([[1, 'succeeded'], [1, 'succeeded'], [2, 'succeeded'], [2, 'succeeded']]);
    // Every model there is, each made once: the template, 2 pruned, 4 retrained, 2 soups.
    const models = await json<{ total: number; items: { id: string; origin: { kind: string; candidateId?: string; soupId?: string } }[] }>(`${service.url}/models?limit=100`);
    expect(models.total).toBe(9);
    expect(models.items.map((m) => m.origin.candidateId).filter(Boolean).sort()).toEqual(run.candidates.map((c) => c.id).sort());
    const soups = await json<{ total: number; items: { id: string; status: string; resultModelId: string }[] }>(`${service.url}/soups?limit=100`);
    expect(soups.total).toBe(2);
    expect(soups.items.map((s) => s.id).sort()).toEqual(run.phases.map((p) => p.soupId).sort());
    expect(soups.items.every((s) => s.status === 'succeeded')).toBe(true);
    expect(models.items.filter((m) => m.origin.kind === 'soup').map((m) => m.origin.soupId).sort()).toEqual(soups.items.map((s) => s.id).sort());
    const masks = await json<{ total: number }>(`${service.url}/masks?limit=1`);
    expect(masks.total).toBe(2);
    for (const p of run.phases) {
      const evaluations = await json<{ total: number }>(`${service.url}/models/${p.resultModelId}/evaluations`);
      expect([p.index, evaluations.total]).toEqual([p.index, 1]);
    }
    // No orphans: every stored object has a row, and nothing unreferenced is left to collect.
    const rows = await json<{ total: number }>(`${service.url}/artifacts?limit=1`);
    const objects = readdirSync(join(dir, 'artifacts', 'sha256'), { recursive: true }).filter((f) => /[0-9a-f]{64}$/.test(String(f)));
    expect(objects.length).toBe(rows.total);
    expect((await json<{ rowsDeleted: number }>(`${service.url}/artifacts/gc`, { method: 'POST', body: JSON.stringify({ graceSeconds: 0 }) })).rowsDeleted).toBe(0);
  }, 600_000);
});
