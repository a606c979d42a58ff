import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createScratchDatabase } from '../src/database/scratch.js';
import pg from 'pg';
import { freePort, json, nextRunEvent, type ServiceProcess, startService, startWorkerProcess, uploadMnistSliceHttp } from './support/process.js';
import { startTcpProxy, type TcpProxy } from './support/tcp-proxy.js';

/**
 * The database goes away and comes back: the API and a `npm run worker` process reach Postgres
 * through a TCP proxy that the test cuts (connections closed, port refused) and restores. The
 * machine's Postgres server is never touched. Postgres only: the embedded database is inside the
 * process and cannot be cut from outside.
 */
const OUTAGE_SECONDS = Number(process.env.DB_OUTAGE_SECONDS ?? 60);
const base = process.env.DATABASE_URL;
if (!base) console.log('db-outage: skipped, it needs a Postgres server (TEST_DATABASE_URL with npm run test:pg); the embedded PGlite lives inside the process');

describe.skipIf(!base)('a database outage', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'sparsoup-outage-'));
  let service: ServiceProcess | null = null;
  let worker: Awaited<ReturnType<typeof startWorkerProcess>> | null = null;
  let proxy: TcpProxy | null = null;
  let drop: (() => Promise<void>) | null = null;
  afterAll(async () => {
    if (process.env.DB_OUTAGE_LOG) writeFileSync(process.env.DB_OUTAGE_LOG, `${service?.output()}\n----- worker\n${worker?.output()}`);
    await service?.kill('SIGKILL');
    await worker?.kill('SIGKILL');
    await proxy?.close();
    await drop?.();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it(`is survived by the API and a worker: 503 while it lasts (${OUTAGE_SECONDS} s), then the queued run finishes by itself`, async () => {
    const scratch = await createScratchDatabase(base!, 'sparsoup_outage');
    drop = scratch.drop;
    const target = new URL(scratch.url);
    proxy = await startTcpProxy(target.hostname, Number(target.port || 5432));
    const viaProxy = new URL(scratch.url);
    viaProxy.hostname = '127.0.0.1';
    viaProxy.port = String(proxy.port);
    const env = { DATA_DIR: dataDir, WORKERS: '1', DATABASE_URL: viaProxy.toString() };
    const port = await freePort();
    service = await startService(env, port);
    worker = await startWorkerProcess(env);

    const dataset = await uploadMnistSliceHttp(service.url, 600);
    const template = await json<{ id: string }>(`${service.url}/models/templates`, { method: 'POST', body: JSON.stringify({ architecture: 'lenet-300-100', datasetId: dataset, seed: 3 }) });
    const run = await json<{ id: string }>(`${service.url}/runs`, {
      method: 'POST',
      body: JSON.stringify({ kind: 'retrain', modelId: template.id, datasetId: dataset, m: 2, training: { epochs: 1, batchSize: 32, learningRate: 0.05, schedule: 'constant' } }),
    });

    // Cut while a candidate trains. As when the server stops, the sessions are first terminated
    // (FATAL 57P01 on every open connection), then the port refuses.
    await nextRunEvent(service.url, run.id, (e) => e.type === 'progress');
    await proxy.cut(async () => {
      const admin = new pg.Client({ connectionString: scratch.url });
      await admin.connect();
      await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()');
      await admin.end();
    });
    const cutAt = Date.now();
    // While it is down: /health names the database, requests that need it are 503 problems, quickly.
    const health = await fetch(`${service.url}/health`);
    expect(health.status).toBe(503);
    const report = (await health.json()) as { status: string; database: { ok: boolean; detail?: string } };
    expect(report.status).toBe('unavailable');
    expect(report.database.ok).toBe(false);
    expect(report.database.detail).toBeTruthy();
    for (const [method, path, body] of [
      ['GET', '/models', undefined],
      ['GET', `/runs/${run.id}`, undefined],
      ['POST', '/models/templates', JSON.stringify({ architecture: 'lenet-300-100', datasetId: 'mnist', seed: 1 })],
    ] as const) {
      const started = Date.now();
      const res = await fetch(`${service.url}${path}`, { method, body, headers: { 'content-type': 'application/json' } });
      const problem = (await res.json()) as { status: number; detail: string; type: string };
      expect([method, path, res.status]).toEqual([method, path, 503]);
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      expect(problem.type).toMatch(/database-unavailable$/);
      expect(problem.detail).toMatch(/database/);
      expect(Date.now() - started).toBeLessThan(15_000);
    }
    // The outage lasts its full length; both processes must still be there at its end.
    await new Promise((r) => setTimeout(r, Math.max(0, OUTAGE_SECONDS * 1000 - (Date.now() - cutAt))));
    expect(service.child.exitCode, service.output()).toBeNull();
    expect(worker.child.exitCode, worker.output()).toBeNull();

    await proxy.restore();
    for (let i = 0; ; i++) {
      if ((await fetch(`${service.url}/health`)).status === 200) break;
      if (i > 120) throw new Error(`the service did not recover its database:\n${service.output().slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    let finished: { status: string; candidates: { status: string; resultModelId: string | null }[] };
    for (let i = 0; ; i++) {
      finished = await json(`${service.url}/runs/${run.id}`);
      if (['succeeded', 'failed', 'cancelled'].includes(finished.status)) break;
      if (i > 480) throw new Error(`the run did not finish after the outage: ${JSON.stringify(finished)}\n${service.output().slice(-3000)}\n${worker.output().slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(finished.status).toBe('succeeded');
    expect(finished.candidates.every((c) => c.status === 'succeeded' && c.resultModelId)).toBe(true);
    expect(service.child.exitCode).toBeNull();
    expect(worker.child.exitCode).toBeNull();
    expect(`${service.output()}\n${worker.output()}`).not.toMatch(/unhandled ?rejection|uncaught/i);
  }, 240_000);
});
