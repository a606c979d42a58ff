import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type PrivateCluster, privateClusterSupport, startPrivateCluster } from './support/pg-cluster.js';
import { freePort, json, nextRunEvent, type RunEvent, type ServiceProcess, startService, startWorkerProcess, uploadMnistSliceHttp } from './support/process.js';

/**
 * The server database restarts mid-run: the API and a `npm run worker` process run an SMS run on a
 * Postgres cluster of the test's own (initdb into a temporary folder, its own port), which the test
 * stops (fast: every session terminated, open transactions rolled back) and starts again twice —
 * while the candidates train, and at the soup. The run must finish by itself with
 * exactly the structure of an unbroken run: each candidate once, no orphans. Postgres suite only
 * (the embedded database restarts with its process: test/crash-recovery.test.ts).
 */
const support = privateClusterSupport();
const why = !process.env.DATABASE_URL ? 'it belongs to the Postgres suite (TEST_DATABASE_URL with npm run test:pg)' : 'reason' in support ? support.reason : null;
if (why) console.log(`pg-restart: skipped, ${why}`);
const DOWN_MS = 3_000;

describe.skipIf(!!why)('a Postgres restart mid-run', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'sparsoup-pg-restart-'));
  let cluster: PrivateCluster | null = null;
  let service: ServiceProcess | null = null;
  let worker: Awaited<ReturnType<typeof startWorkerProcess>> | null = null;
  afterAll(async () => {
    await service?.kill('SIGKILL');
    await worker?.kill('SIGKILL');
    await cluster?.destroy();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('is survived by the API and a worker: the SMS run finishes with each candidate once and no orphans', async () => {
    const { bin, asPostgres } = support as { bin: string; asPostgres: boolean };
    cluster = await startPrivateCluster(bin, asPostgres);
    const env = { DATA_DIR: dataDir, WORKERS: '1', DATABASE_URL: cluster.url };
    service = await startService(env, await freePort());
    worker = await startWorkerProcess(env);
    const logs = () => `--- service\n${service?.output().slice(-3000)}\n--- worker\n${worker?.output().slice(-3000)}\n--- postgres\n${cluster?.log().slice(-1500)}`;

    const dataset = await uploadMnistSliceHttp(service.url, 600);
    const template = await json<{ id: string }>(`${service.url}/models/templates`, { method: 'POST', body: JSON.stringify({ architecture: 'lenet-300-100', datasetId: dataset, seed: 11 }) });
    const created = await json<{ id: string }>(`${service.url}/runs`, {
      method: 'POST',
      body: JSON.stringify({ kind: 'sms', modelId: template.id, datasetId: dataset, goalSparsity: 0.5, phases: 1, m: 2, training: { epochs: 1, batchSize: 32, learningRate: 0.05, schedule: 'constant' } }),
    });

    const phaseIs = (type: string, phase: number) => (e: RunEvent) => e.type === type && e.data.phase === phase;
    let last = 0;
    for (const [step, match] of [
      ['phase 1 training', phaseIs('progress', 1)],
      ['phase 1 soup', phaseIs('phase-merging', 1)],
    ] as const) {
      const hit = await nextRunEvent(service.url, created.id, match, last, 240_000).catch((err) => {
        throw new Error(`waiting for ${step}: ${(err as Error).message}\n${logs()}`);
      });
      await cluster.restart(DOWN_MS);
      last = hit.id;
    }

    // The run ends by itself (the API answers 503 until it has its database again).
    interface Run {
      status: string;
      error: string | null;
      candidates: { id: string; phase: number; status: string; attempts: number }[];
      phases: { index: number; status: string; candidateIds: string[]; soupId: string | null; resultModelId: string | null }[];
    }
    let run: Run | null = null;
    for (let i = 0; ; i++) {
      const res = await fetch(`${service.url}/runs/${created.id}`).catch(() => null);
      if (res?.ok) {
        run = (await res.json()) as Run;
        if (['succeeded', 'failed', 'cancelled'].includes(run!.status)) break;
      }
      if (i > 960) throw new Error(`the run did not finish after the restarts: ${JSON.stringify(run)}\n${logs()}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(run!.status, `${run!.error}\n${logs()}`).toBe('succeeded');
    expect(run!.phases.map((p) => [p.index, p.status, p.candidateIds.length])).toEqual([[1, 'succeeded', 2]]);
    expect(run!.candidates.map((c) => [c.phase, c.status])).toEqual([[1, 'succeeded'], [1, 'succeeded']]);
    // Every model there is, each made once: the template, the pruned one, 2 retrained, the soup.
    const models = await json<{ total: number; items: { origin: { kind: string; candidateId?: string; soupId?: string } }[] }>(`${service.url}/models?limit=100`);
    expect(models.total).toBe(5);
    expect(models.items.map((m) => m.origin.candidateId).filter(Boolean).sort()).toEqual(run!.candidates.map((c) => c.id).sort());
    const soups = await json<{ total: number; items: { id: string; status: string }[] }>(`${service.url}/soups?limit=100`);
    expect(soups.items.map((s) => [s.id, s.status]).sort()).toEqual(run!.phases.map((p) => [p.soupId, 'succeeded']).sort());
    for (const p of run!.phases) expect([p.index, (await json<{ total: number }>(`${service.url}/models/${p.resultModelId}/evaluations`)).total]).toEqual([p.index, 1]);
    // No orphans: every stored object has a row, and nothing unreferenced is left to collect.
    const rows = await json<{ total: number }>(`${service.url}/artifacts?limit=1`);
    const objects = readdirSync(join(dataDir, 'artifacts', 'sha256'), { recursive: true }).filter((f) => /[0-9a-f]{64}$/.test(String(f)));
    expect(objects.length).toBe(rows.total);
    expect((await json<{ rowsDeleted: number }>(`${service.url}/artifacts/gc`, { method: 'POST', body: JSON.stringify({ graceSeconds: 0 }) })).rowsDeleted).toBe(0);
    // Both processes lived through it.
    expect(service.child.exitCode, logs()).toBeNull();
    expect(worker.child.exitCode, logs()).toBeNull();
    expect(`${service.output()}\n${worker.output()}`).not.toMatch(/unhandled ?rejection|uncaught/i);
    // And they did see the server go away (the restarts were not between their queries).
    expect(`${service.output()}\n${worker.output()}`).toMatch(/database unavailable|database is away|heartbeat failed/i);
  }, 420_000);
});
