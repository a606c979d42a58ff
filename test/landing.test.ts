import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { ArtifactsService } from '../src/artifacts/artifacts.service.js';
import { openSafetensors } from '../src/core/checkpoint/safetensors.js';
import { impliedMask, maskHash } from '../src/core/masks/index.js';
import { startTestApp, type TestApp } from './support/app.js';
import { safetensorsBytes, seededWeights } from './support/checkpoints.js';

/**
 * What a worker (or an upload's ingest) computed is used, not recomputed: landing a model reads no
 * weights file on the main thread. The spies watch every read path of the main thread's store.
 */
describe('landing results reads no weights on the main thread', () => {
  let t: TestApp;
  let reads: ReturnType<typeof vi.spyOn>[] = [];
  beforeAll(async () => {
    t = await startTestApp({ WORKERS: '1' });
  });
  afterAll(() => t?.close());
  afterEach(() => {
    for (const s of reads) s.mockRestore();
    reads = [];
  });
  const watchReads = () => {
    const store = t.app.get(ArtifactsService).store;
    reads = [vi.spyOn(store, 'read'), vi.spyOn(store, 'readBytes'), vi.spyOn(store, 'localPath')];
    return () => reads.reduce((n, s) => n + s.mock.calls.length, 0);
  };

  const sparse = (seed: number) => {
    const w = seededWeights(64, seed);
    for (let i = 0; i < w.length; i += 3) w[i] = i % 2 ? -0 : 0;
    return [
      { name: 'fc1.weight', shape: [8, 8], data: w },
      { name: 'fc1.bias', shape: [8], data: new Float32Array(8) },
      { name: 'fc2.weight', shape: [4, 6], dtype: 'F16' as const, data: seededWeights(24, seed + 1).map((x, i) => (i % 4 ? x : 0)) },
    ];
  };

  it('an upload: the implied mask is computed while the bytes arrive, and matches reading them back', async () => {
    const bytes = await safetensorsBytes(sparse(3));
    const readCount = watchReads();
    const model = (await request(t.http).post('/models?name=up').set('content-type', 'application/octet-stream').send(bytes).expect(201)).body;
    expect(readCount()).toBe(0);
    const path = join(mkdtempSync(join(tmpdir(), 'landing-')), 'm.safetensors');
    writeFileSync(path, bytes);
    const reader = await openSafetensors(path);
    expect(model.impliedMaskHash).toBe(maskHash(await impliedMask(reader)));
    await reader.close();
  });

  it('a template (stored by a worker, landed like a trained candidate)', async () => {
    const readCount = watchReads();
    const model = (await request(t.http).post('/models/templates').send({ architecture: 'lenet-300-100', datasetId: 'mnist', seed: 1 }).expect(201)).body;
    expect(readCount()).toBe(0);
    // A fresh template has no exact zeros: its implied mask keeps everything, so it has a hash.
    expect(model.impliedMaskHash).toMatch(/^[0-9a-f]{64}$/);
  });

  it('a soup: its implied mask is the candidates’ shared mask, with no read of the written weights', async () => {
    const upload = async (seed: number) =>
      (await request(t.http).post(`/models?name=c${seed}`).set('content-type', 'application/octet-stream').send(await safetensorsBytes(sparse(seed))).expect(201)).body;
    const base = await upload(10);
    const pruned = (await request(t.http).post(`/models/${base.id}/prune`).send({ method: 'magnitude-global', sparsity: 0.5 }).expect(201)).body;
    const other = (await request(t.http).post(`/masks/${pruned.mask.id}/apply`).send({ modelId: (await upload(20)).id }).expect(201)).body;
    const readCount = watchReads();
    const soup = (await request(t.http).post('/soups').send({ modelIds: [pruned.model.id, other.id], method: 'uniform' }).expect(201)).body;
    expect(readCount()).toBe(0);
    const result = (await request(t.http).get(`/models/${soup.resultModelId}`).expect(200)).body;
    expect(result.impliedMaskHash).toBe(pruned.mask.hash);
  });
});
