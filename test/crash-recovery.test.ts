import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createScratchDatabase } from '../src/database/scratch.js';
import { json, prepareDataDir, type ServiceProcess, startService } from './support/process.js';

interface Run {
  id: string;
  status: string;
  candidates: { id: string; status: string; attempts: number; progress: unknown; resultModelId: string | null }[];
}

describe('a service killed with SIGKILL while a run trains', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'sparsoup-crash-'));
  const port = 41000 + Math.floor(Math.random() * 2000);
  let service: ServiceProcess | null = null;
  let drop: (() => Promise<void>) | null = null;
  afterAll(async () => {
    await service?.kill('SIGKILL');
    await drop?.();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('finishes the run after a restart: every candidate once, no orphaned artifacts', async () => {
    const env: Record<string, string> = { DATA_DIR: dataDir, WORKERS: '1' };
    if (process.env.DATABASE_URL) {
      const scratch = await createScratchDatabase(process.env.DATABASE_URL, 'sparsoup_crash');
      env.DATABASE_URL = scratch.url;
      drop = scratch.drop;
    }
    prepareDataDir(dataDir);
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

    service = await startService(env, port);
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
});
