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
