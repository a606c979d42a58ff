/**
 * The service with ARTIFACTS_URL=s3://… on a real S3 protocol server (s3rver, started here): upload,
 * prune, a retrain run, uniform and greedy soups, downloads and garbage collection all work; DATA_DIR
 * holds no artifact; and the bucket holds exactly the artifacts GET /artifacts lists.
 */
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryByteSource } from '../src/core/checkpoint/byte-source.js';
import { openSafetensors } from '../src/core/checkpoint/safetensors.js';
import { startTestApp, type TestApp } from './support/app.js';
import { binaryParser, safetensorsBytes, seededWeights } from './support/checkpoints.js';
import { uploadMnistSlice } from './support/datasets.js';
import { artifactFiles } from './support/files.js';
import { waitForRun, waitForSoup } from './support/runs.js';
import { type S3Server, startS3Server } from './support/s3rver.js';

const PREFIX = 'api';
const FAST = { epochs: 0.2, batchSize: 64, learningRate: 0.05, schedule: 'constant' };

/** The objects in the bucket under PREFIX, by sha256, read from the server's own files (not through the store). */
function bucketObjects(server: S3Server): string[] {
  const dir = join(server.dir, server.bucket, PREFIX);
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile() && d.name.endsWith('._S3rver_object'))
    .map((d) => join(d.parentPath, d.name).slice(dir.length + 1).replace(/\._S3rver_object$/, ''))
    .sort();
}

async function listedArtifacts(t: TestApp): Promise<string[]> {
  const out: string[] = [];
  for (let offset = 0; ; offset += 500) {
    const page = (await request(t.http).get(`/artifacts?limit=500&offset=${offset}`).expect(200)).body;
    out.push(...page.items.map((a: { sha256: string }) => a.sha256));
    if (offset + 500 >= page.total) return out.sort();
  }
}

describe('the service on an S3 bucket (ARTIFACTS_URL=s3://…)', () => {
  let server: S3Server;
  let t: TestApp;
  let cacheDir: string;

  beforeAll(async () => {
    server = await startS3Server();
    cacheDir = mkdtempSync(join(tmpdir(), 'sparsoup-cache-'));
    t = await startTestApp({ ...server.env(PREFIX), WORKERS: '2', ARTIFACT_CACHE_DIR: cacheDir });
  });
  afterAll(async () => {
    await t?.close();
    await server?.stop();
    rmSync(cacheDir, { recursive: true, force: true });
  });

  it('reports the bucket in /health, writable', async () => {
    const health = (await request(t.http).get('/health').expect(200)).body;
    expect(health.artifacts).toMatchObject({ ok: true, kind: 's3', writable: true, location: `s3://${server.bucket}/${PREFIX}/ at ${server.endpoint}` });
  });

  it('uploads, prunes, retrains, soups (uniform and greedy), downloads and collects garbage, all in the bucket', async () => {
    // A safetensors upload, pruned, downloaded back.
    const st = await safetensorsBytes([{ name: 'dense/kernel', shape: [64, 32], data: seededWeights(64 * 32, 1) }, { name: 'dense/bias', shape: [32], data: seededWeights(32, 2) }]);
    const uploaded = (await request(t.http).post('/models?name=st').set('content-type', 'application/octet-stream').send(st).expect(201)).body;
    const stPruned = (await request(t.http).post(`/models/${uploaded.id}/prune`).send({ method: 'magnitude-global', sparsity: 0.5 }).expect(201)).body;
    const back = await request(t.http).get(`/models/${uploaded.id}/safetensors`).buffer(true).parse(binaryParser).expect(200);
    expect(Buffer.compare(back.body, st)).toBe(0);
    const prunedBack = await request(t.http).get(`/models/${stPruned.model.id}/safetensors`).buffer(true).parse(binaryParser).expect(200);
    const reader = await openSafetensors(memoryByteSource(new Uint8Array(prunedBack.body)));
    const kernel = await reader.readFloat32('dense/kernel');
    expect(kernel.filter((x) => x === 0).length).toBe(64 * 16);
    await reader.close();

    // A TensorFlow.js template on an uploaded dataset, pruned, retrained (m = 2) in worker threads.
    const data = (await uploadMnistSlice(t, 600)).id;
    const template = (await request(t.http).post('/models/templates').send({ architecture: 'lenet-300-100', datasetId: data, seed: 2 }).expect(201)).body;
    const pruned = (await request(t.http).post(`/models/${template.id}/prune`).send({ method: 'magnitude-global', sparsity: 0.8 }).expect(201)).body;
    const run = await waitForRun(t, (await request(t.http).post('/runs').send({ kind: 'retrain', modelId: pruned.model.id, maskId: pruned.mask.id, datasetId: data, training: FAST, m: 2 }).expect(202)).body.id);
    expect(run.status).toBe('succeeded');
    const ids = run.candidates.map((c: { resultModelId: string }) => c.resultModelId);
    for (const id of ids) expect((await request(t.http).get(`/models/${id}`).expect(200)).body.impliedMaskHash).toBe(pruned.mask.hash);

    const uniform = (await request(t.http).post('/soups').send({ modelIds: ids, method: 'uniform', datasetId: data }).expect(201)).body;
    expect(uniform).toMatchObject({ status: 'succeeded', maskHash: pruned.mask.hash });
    const greedy = await waitForSoup(t, (await request(t.http).post('/soups').send({ modelIds: ids, method: 'greedy', datasetId: data }).expect(202)).body.id);
    expect(greedy.status).toBe('succeeded');
    expect(greedy.steps).toHaveLength(2);

    // Downloads, the way tf.loadLayersModel fetches them.
    const json = (await request(t.http).get(`/models/${greedy.resultModelId}/model.json`).expect(200)).body;
    expect(json.weightsManifest[0].paths).toEqual(['model.weights.bin']);
    const weights = await request(t.http).get(`/models/${greedy.resultModelId}/model.weights.bin`).buffer(true).parse(binaryParser).expect(200);
    const specs = json.weightsManifest.flatMap((g: { weights: { shape: number[] }[] }) => g.weights);
    expect(weights.body.length).toBe(4 * specs.reduce((n: number, w: { shape: number[] }) => n + w.shape.reduce((a, b) => a * b, 1), 0));

    // Nothing in DATA_DIR: no artifact folder, no file under it.
    expect(existsSync(join(t.config.dataDir, 'artifacts'))).toBe(false);
    expect(artifactFiles(t.config.dataDir)).toEqual([]);
    // The bucket holds exactly the artifacts the API lists.
    expect(bucketObjects(server)).toEqual(await listedArtifacts(t));

    // Deleting a model and collecting garbage removes its objects from the bucket.
    const before = bucketObjects(server);
    const victim = (await request(t.http).get(`/models/${stPruned.model.id}`).expect(200)).body;
    await request(t.http).delete(`/models/${stPruned.model.id}`).expect(204);
    const gc = (await request(t.http).post('/artifacts/gc').send({ graceSeconds: 0 }).expect(200)).body;
    expect(gc.filesDeleted).toBeGreaterThanOrEqual(1);
    const after = bucketObjects(server);
    expect(after).not.toContain(victim.sha256);
    expect(after.length).toBeLessThan(before.length);
    expect(after).toEqual(await listedArtifacts(t));
    expect(existsSync(join(t.config.dataDir, 'artifacts'))).toBe(false);
  }, 240_000);
});
