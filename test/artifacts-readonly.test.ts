import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createScratchDatabase } from '../src/database/scratch.js';
import { freePort, json, nextRunEvent, prepareDataDir, type ServiceProcess, startService, uploadMnistSliceHttp } from './support/process.js';
import { prepareReadOnlySwitch, type ReadOnlySwitch } from './support/read-only.js';

/**
 * The artifact folder turns read-only while an SMS run trains (as a full or remounted disk does):
 * the run must end `failed` with an error that says so — nothing of it left running — while the
 * service goes on answering; no row may name an object that is not there. Made writable again,
 * garbage collection finds nothing orphaned.
 */
describe('a read-only artifact folder mid-run', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'sparsoup-readonly-'));
  const artifacts = join(dataDir, 'artifacts');
  mkdirSync(artifacts);
  let sw: ReadOnlySwitch | { reason: string } = { reason: 'not prepared' };
  let service: ServiceProcess | null = null;
  let drop: (() => Promise<void>) | null = null;
  beforeAll(async () => {
    sw = await prepareReadOnlySwitch(artifacts);
    if ('reason' in sw) console.log(`artifacts-readonly: skipped, ${sw.reason}`);
  });
  afterAll(async () => {
    await service?.kill('SIGKILL');
    if (!('reason' in sw)) await sw.release();
    await drop?.();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('fails the run cleanly, keeps serving, and leaves no row without its file nor anything for gc', async (ctx) => {
    if ('reason' in sw) return ctx.skip();
    const ro = sw;
    const env: Record<string, string> = { DATA_DIR: dataDir, WORKERS: '1' };
    if (process.env.DATABASE_URL) {
      const scratch = await createScratchDatabase(process.env.DATABASE_URL, 'sparsoup_readonly');
      env.DATABASE_URL = scratch.url;
      drop = scratch.drop;
    }
    prepareDataDir(dataDir);
    service = await startService(env, await freePort());
    const url = service.url;
    const dataset = await uploadMnistSliceHttp(url, 600);
    const template = await json<{ id: string }>(`${url}/models/templates`, { method: 'POST', body: JSON.stringify({ architecture: 'lenet-300-100', datasetId: dataset, seed: 13 }) });
    const created = await json<{ id: string }>(`${url}/runs`, {
      method: 'POST',
      body: JSON.stringify({ kind: 'sms', modelId: template.id, datasetId: dataset, goalSparsity: 0.75, phases: 2, m: 2, training: { epochs: 4, batchSize: 32, learningRate: 0.05, schedule: 'constant' } }),
    });
    await nextRunEvent(url, created.id, (e) => e.type === 'progress' && e.data.phase === 1, 0, 240_000);
    await ro.set(true);

    // While it is read-only: /health answers, naming the store; reads are served.
    const health = await fetch(`${url}/health`);
    const report = (await health.json()) as { status: string; artifacts: { ok: boolean; writable: boolean; detail?: string } };
    expect([health.status, report.artifacts.ok, report.artifacts.writable]).toEqual([503, false, false]);
    expect(report.artifacts.detail).toMatch(/EROFS|EACCES|read-only|permission/i);
    expect((await fetch(`${url}/models/${template.id}`)).status).toBe(200);
    // A request that must store something is a 503 problem that says why, not a 500.
    const refused = await fetch(`${url}/models/templates`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ architecture: 'lenet-300-100', datasetId: dataset, seed: 15 }) });
    const problem = (await refused.json()) as { type: string; detail: string };
    expect([refused.status, refused.headers.get('content-type')]).toEqual([503, expect.stringMatching(/^application\/problem\+json/)]);
    expect(problem.type).toMatch(/artifact-store-unwritable$/);
    expect(problem.detail).toMatch(/artifact store cannot be written/);

    const finished = await nextRunEvent(url, created.id, (e) => e.type === 'run-finished', 0, 240_000).catch((err) => {
      throw new Error(`${(err as Error).message}\n${service?.output().slice(-4000)}`);
    });
    expect(finished.data.status).toBe('failed');
    interface Run {
      status: string;
      error: string | null;
      candidates: { status: string; error: string | null }[];
      phases: { index: number; status: string; soupId: string | null }[];
    }
    const run = await json<Run>(`${url}/runs/${created.id}`);
    expect(run.status).toBe('failed');
    console.log(`artifacts-readonly: the run failed with: ${run.error}; candidates ${JSON.stringify(run.candidates.map((c) => c.status))}`);
    // The error says what happened: the artifact store refused the write.
    expect(run.error).toMatch(/artifact store/i);
    expect(run.error).toMatch(/EROFS|EACCES|read-only|permission/i);
    // Nothing of the run is left running or queued.
    expect(run.candidates.filter((c) => !['succeeded', 'failed', 'cancelled'].includes(c.status))).toEqual([]);
    expect(run.phases[0].status).toBe('failed');
    expect(run.phases.filter((p) => ['queued', 'pruned', 'training', 'merging'].includes(p.status))).toEqual([]);
    expect(run.phases.slice(1).map((p) => p.status)).toEqual(['cancelled']); // phase 2 never started
    const soups = await json<{ items: { status: string }[] }>(`${url}/soups?limit=100`);
    expect(soups.items.filter((s) => s.status === 'running' || s.status === 'queued')).toEqual([]);
    // Every row's object is there.
    const listed = await json<{ total: number; items: { sha256: string }[] }>(`${url}/artifacts?limit=500`);
    const missing = listed.items.filter((a) => !existsSync(join(artifacts, 'sha256', a.sha256.slice(0, 2), a.sha256)));
    expect(missing).toEqual([]);
    // The service still serves.
    expect((await fetch(`${url}/health`)).status).toBe(503);
    expect(service.child.exitCode).toBeNull();

    // Writable again: healthy, and after a collection with no grace nothing is left unreferenced.
    await ro.set(false);
    expect((await fetch(`${url}/health`)).status).toBe(200);
    const gc = await json<{ rowsDeleted: number; filesDeleted: number }>(`${url}/artifacts/gc`, { method: 'POST', body: JSON.stringify({ graceSeconds: 0 }) });
    expect(gc.rowsDeleted).toBe(0);
    const rows = await json<{ total: number }>(`${url}/artifacts?limit=1`);
    const objects = readdirSync(join(artifacts, 'sha256'), { recursive: true }).filter((f) => /[0-9a-f]{64}$/.test(String(f)));
    expect(objects.length).toBe(rows.total);
    expect(readdirSync(join(artifacts, 'tmp'))).toEqual([]);
    // And it works again: a new model is stored.
    expect((await fetch(`${url}/models/templates`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ architecture: 'lenet-300-100', datasetId: dataset, seed: 14 }) })).status).toBe(201);
  }, 420_000);
});
