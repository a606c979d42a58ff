import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { WorkerPool } from './worker-pool.js';

describe('WorkerPool', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pool-'));
  const pool = new WorkerPool(2, { backend: 'auto', artifacts: { kind: 'fs', root: dir }, cacheDir: dir, allowDiagnostics: true });
  afterAll(() => pool.close());

  it('runs tasks on threads that each start a TensorFlow.js backend', async () => {
    const info = await pool.run({ type: 'info' });
    expect(['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu']).toContain(info.backend.name);
    expect(info.threadId).toBeGreaterThan(0);
  });

  it('fails a task whose thread dies, and replaces the thread', async () => {
    await expect(pool.run({ type: 'crash', how: 'exit' })).rejects.toThrow(/exit|terminated|code/i);
    await expect(pool.run({ type: 'crash', how: 'throw' })).rejects.toThrow('diagnostic failure');
    const info = await pool.run({ type: 'info' });
    expect(info.backend.name).toBeTruthy();
    expect(pool.stats().failed).toBe(2);
  });

  it('cancels a task through its signal', async () => {
    const controller = new AbortController();
    const p = pool.run({ type: 'crash', how: 'hang' }, { signal: controller.signal });
    setTimeout(() => controller.abort(), 200);
    await expect(p).rejects.toThrow(/abort/i);
    expect((await pool.run({ type: 'info' })).backend.name).toBeTruthy();
  });
});

describe('WorkerPool lanes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pool-lanes-'));
  // One thread for queue work, one that only requests take.
  const pool = new WorkerPool(1, { backend: 'auto', artifacts: { kind: 'fs', root: dir }, cacheDir: dir, allowDiagnostics: true }, { requestThreads: 1 });
  afterAll(() => pool.close());

  it('answers a request while background work fills the pool, and queues the next background task until a thread frees', async () => {
    const hold = new AbortController();
    const busy = pool.run({ type: 'crash', how: 'hang' }, { lane: 'background', signal: hold.signal }).catch((e: unknown) => e);
    let secondStarted = false;
    const second = pool.run({ type: 'info' }, { lane: 'background', onStart: () => { secondStarted = true; } });
    // The request is answered on the request thread while the background thread hangs.
    const info = await pool.run({ type: 'info' });
    expect(info.backend.name).toBeTruthy();
    expect(secondStarted).toBe(false);
    expect(pool.stats().queued).toBe(1);
    hold.abort();
    expect(String(await busy)).toMatch(/abort/i);
    expect((await second).backend.name).toBeTruthy();
    expect(secondStarted).toBe(true);
  });

  it('a background task aborted while it waits for its turn never starts', async () => {
    const hold = new AbortController();
    const busy = pool.run({ type: 'crash', how: 'hang' }, { lane: 'background', signal: hold.signal }).catch((e: unknown) => e);
    const give = new AbortController();
    let started = false;
    const waiting = pool.run({ type: 'info' }, { lane: 'background', signal: give.signal, onStart: () => { started = true; } }).catch((e: unknown) => e);
    give.abort();
    expect(String(await waiting)).toMatch(/abort/i);
    hold.abort();
    await busy;
    expect(started).toBe(false);
    expect(pool.stats().queued).toBe(0);
    expect((await pool.run({ type: 'info' }, { lane: 'background' })).backend.name).toBeTruthy();
  });
});

describe('WorkerPool datasets', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pool-ds-'));
  const pool = new WorkerPool(2, { backend: 'auto', artifacts: { kind: 'fs', root: dir }, cacheDir: dir, allowDiagnostics: true });
  afterAll(() => pool.close());
  const ref = { id: 'mnist', source: 'builtin' as const };

  it('keeps one copy of a dataset per process: two threads at once see the pool\'s SharedArrayBuffer itself', async () => {
    const ds = await pool.sharedDatasetOf(ref);
    expect(ds).toBeDefined();
    expect(ds!.x.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(ds!.splits.train.buffer).toBeInstanceOf(SharedArrayBuffer);
    // Same memory, not a copy: a byte changed here is what both threads read.
    const index = 28 * 28 * 7 + 400;
    const original = ds!.x[index];
    ds!.x[index] = original ^ 0xa5;
    try {
      const counter = new SharedArrayBuffer(4);
      const probes = await Promise.all([0, 1].map(() => pool.run({ type: 'probe-dataset', dataset: ref, index, rendezvous: { counter, parties: 2 } })));
      expect(new Set(probes.map((p) => p.threadId)).size).toBe(2); // two distinct threads, at the same time
      for (const p of probes) {
        expect(p.shared).toBe(true);
        expect(p.value).toBe(original ^ 0xa5);
        expect(p.byteLength).toBe(ds!.x.byteLength);
      }
    } finally {
      ds!.x[index] = original;
    }
    expect(await pool.sharedDatasetOf(ref)).toBe(ds); // loaded once
  });
});
