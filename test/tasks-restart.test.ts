import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createScratchDatabase } from '../src/database/scratch.js';
import { safetensorsBytes, seededWeights } from './support/checkpoints.js';
import { json, prepareDataDir, type ServiceProcess, startService } from './support/process.js';

interface Task {
  id: string;
  attempts: number;
  runId: string | null;
  candidateId: string;
  soupId: string | null;
  members: number[] | null;
  kind: string;
  model: { url: string };
}

/** External tasks are rows: a service killed with SIGKILL mid-run keeps its queue and finishes the run after a restart. */
describe('external tasks across a service crash', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'sparsoup-tasks-crash-'));
  const port = 43000 + Math.floor(Math.random() * 2000);
  let service: ServiceProcess | null = null;
  let drop: (() => Promise<void>) | null = null;
  afterAll(async () => {
    await service?.kill('SIGKILL');
    await drop?.();
    rmSync(dataDir, { recursive: true, force: true });
  });

  const lease = async (waitSeconds: number, kinds = ['train']): Promise<Task | null> => {
    const res = await fetch(`${service!.url}/tasks/lease`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ workerId: 'w', kinds, waitSeconds }) });
    if (res.status === 204) return null;
    expect(res.status).toBe(200);
    return (await res.json()) as Task;
  };
  /** The trainer sends back the model it was given: unchanged weights pass every check. */
  const finish = async (task: Task) => {
    const model = new Uint8Array(await (await fetch(`${service!.url}${task.model.url}`)).arrayBuffer());
    const form = new FormData();
    form.append('metrics', JSON.stringify({ valAccuracy: 0.5, testAccuracy: 0.5, loss: 1 }));
    form.append('model.safetensors', new Blob([model]), 'model.safetensors');
    return fetch(`${service!.url}/tasks/${task.id}/result`, { method: 'POST', body: form });
  };

  it('keeps the queue and the leases: the lapsed task is leased again, every candidate lands once', async () => {
    const env: Record<string, string> = { DATA_DIR: dataDir, WORKERS: '1', TASK_LEASE_SECONDS: '2' };
    if (process.env.DATABASE_URL) {
      const scratch = await createScratchDatabase(process.env.DATABASE_URL, 'sparsoup_tasks_crash');
      env.DATABASE_URL = scratch.url;
      drop = scratch.drop;
    }
    prepareDataDir(dataDir);
    service = await startService(env, port);
    const bytes = await safetensorsBytes([{ name: 'fc.weight', shape: [8, 8], data: seededWeights(64, 3) }, { name: 'fc.bias', shape: [8], data: seededWeights(8, 4) }]);
    const dense = (await (await fetch(`${service.url}/models?name=d`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: bytes })).json()) as { id: string };
    const pruned = await json<{ model: { id: string } }>(`${service.url}/models/${dense.id}/prune`, { method: 'POST', body: JSON.stringify({ method: 'magnitude-global', sparsity: 0.5 }) });
    const ds = await json<{ id: string }>(`${service.url}/datasets`, { method: 'POST', body: JSON.stringify({ name: 'theirs', source: 'external', classes: 3 }) });
    const run = await json<{ id: string }>(`${service.url}/runs`, { method: 'POST', body: JSON.stringify({ kind: 'retrain', trainer: 'external', modelId: pruned.model.id, datasetId: ds.id, m: 2 }) });
    const first = (await lease(0))!;
    expect((await finish(first)).status).toBe(201);
    const second = (await lease(0))!;
    expect(second.candidateId).not.toBe(first.candidateId);
    // The service dies while the second task is out; its trainer dies with it.
    await service.kill('SIGKILL');
    service = await startService(env, port);
    const again = (await lease(20))!;
    expect(again.id).toBe(second.id);
    expect(again.attempts).toBe(2);
    expect((await finish(again)).status).toBe(201);
    expect((await finish(first)).status).toBe(409);
    const done = await json<{ status: string; candidates: { status: string; resultModelId: string }[] }>(`${service.url}/runs/${run.id}`);
    expect(done.status).toBe('succeeded');
    expect(done.candidates.map((c) => c.status)).toEqual(['succeeded', 'succeeded']);
    const models = await json<{ items: { origin: { kind: string; runId?: string } }[] }>(`${service.url}/models?limit=100`);
    expect(models.items.filter((m) => m.origin.runId === run.id)).toHaveLength(2);
    expect(await lease(0)).toBeNull();

    // A greedy soup of the two candidates, scored by this trainer (no batch norm: evaluate tasks on val).
    const soup = await json<{ id: string; status: string }>(`${service.url}/soups`, { method: 'POST', body: JSON.stringify({ modelIds: done.candidates.map((c) => c.resultModelId), method: 'greedy', trainer: 'external', datasetId: ds.id }) });
    expect(soup.status).toBe('queued');
    const score = (t: Task) => ({ '0': 0.5, '1': 0.6, '0,1': 0.7 })[t.members!.join(',')]!;
    const evaluate = (t: Task) => {
      const form = new FormData();
      form.append('metrics', JSON.stringify({ valAccuracy: score(t), testAccuracy: 0.4 }));
      return fetch(`${service!.url}/tasks/${t.id}/result`, { method: 'POST', body: form });
    };
    const one = (await lease(20, ['evaluate']))!;
    const other = (await lease(20, ['evaluate']))!;
    expect([one.members, other.members].sort()).toEqual([[0], [1]]);
    expect(one).toMatchObject({ soupId: soup.id, runId: null, kind: 'evaluate' });
    expect((await evaluate(one)).status).toBe(201);
    // The service dies with a set's scoring out: after the restart the soup goes on from its task rows.
    await service.kill('SIGKILL');
    service = await startService(env, port);
    const retried = (await lease(20, ['evaluate']))!;
    expect(retried.id).toBe(other.id);
    expect((await evaluate(retried)).status).toBe(201);
    const pair = (await lease(30, ['evaluate']))!;
    expect(pair.members).toEqual([0, 1]);
    expect((await evaluate(pair)).status).toBe(201);
    let built: { status: string; valAccuracy: number; weights: number[]; steps: { soupScore: number; accepted: boolean }[]; resultModelId: string };
    for (;;) {
      built = await json(`${service.url}/soups/${soup.id}`);
      if (built.status === 'succeeded' || built.status === 'failed') break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(built).toMatchObject({ status: 'succeeded', valAccuracy: 0.7, weights: [0.5, 0.5] });
    expect(built.steps.map((x) => [x.soupScore, x.accepted])).toEqual([[0.6, true], [0.7, true]]);
    // The stored soup is the model the pair was scored on.
    expect(built.resultModelId).toBe(pair.model.url.split('/')[2]);
    expect(await lease(0, ['evaluate', 'recalibrate'])).toBeNull();
    // Two service start-ups on a loaded machine: the run itself takes seconds.
  }, 180_000);
});
