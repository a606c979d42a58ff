import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from './support/app.js';
import { binaryParser, safetensorsBytes, seededWeights } from './support/checkpoints.js';
import { artifactFiles } from './support/files.js';
import { uploadMnistSlice } from './support/datasets.js';
import { waitForRun, waitForSoup } from './support/runs.js';

const PROBLEM = /application\/problem\+json/;

describe('soups over HTTP', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ WORKERS: '2' });
  });
  afterAll(() => t?.close());

  const upload = async (name: string, tensors: Parameters<typeof safetensorsBytes>[0]) =>
    (await request(t.http).post(`/models?name=${name}`).set('content-type', 'application/octet-stream').send(await safetensorsBytes(tensors)).expect(201)).body;
  const layout = (seed: number) => [
    { name: 'conv.weight', shape: [4, 2, 3, 3], data: seededWeights(72, seed) },
    { name: 'conv.bias', shape: [4], data: seededWeights(4, seed + 1) },
    { name: 'fc.weight', shape: [3, 16], dtype: 'F16' as const, data: seededWeights(48, seed + 2) },
  ];
  const download = async (id: string) => (await request(t.http).get(`/models/${id}/safetensors`).buffer(true).parse(binaryParser).expect(200)).body as Buffer;

  let candidates: { id: string }[] = [];
  let mask: { id: string; hash: string };

  it('lists its methods with parameters and references', async () => {
    const methods = (await request(t.http).get('/soups/methods').expect(200)).body;
    expect(methods.map((m: { name: string }) => m.name)).toEqual(['uniform', 'weighted', 'greedy']);
    expect(methods[2].parameters[0]).toMatchObject({ name: 'comparison', default: '>=' });
    expect(methods.every((m: { reference: string }) => m.reference.startsWith('https://'))).toBe(true);
  });

  it('makes a uniform soup that keeps the shared mask and equals the element-wise mean', async () => {
    const base = await upload('base', layout(1));
    const pruned = (await request(t.http).post(`/models/${base.id}/prune`).send({ method: 'magnitude-global', sparsity: 0.6 }).expect(201)).body;
    mask = pruned.mask;
    candidates = [pruned.model];
    for (const seed of [10, 20]) {
      const other = await upload(`c${seed}`, layout(seed));
      candidates.push((await request(t.http).post(`/masks/${mask.id}/apply`).send({ modelId: other.id }).expect(201)).body);
    }
    const res = await request(t.http).post('/soups').send({ modelIds: candidates.map((c) => c.id), method: 'uniform' }).expect(201);
    expect(res.body).toMatchObject({ status: 'succeeded', method: 'uniform', maskHash: mask.hash, acceptedIds: candidates.map((c) => c.id) });
    const soup = (await request(t.http).get(`/models/${res.body.resultModelId}`).expect(200)).body;
    expect(soup.impliedMaskHash).toBe(mask.hash);
    expect(soup.parentIds).toEqual(candidates.map((c) => c.id));
    expect(res.body.sparsity).toBeCloseTo((await request(t.http).get(`/models/${candidates[0].id}`)).body.prunableSparsity, 12);

    const { openSafetensors } = await import('../src/core/checkpoint/safetensors.js');
    const { writeFileSync } = await import('node:fs');
    const read = async (id: string, name: string) => {
      const p = `${t.config.dataDir}/${id}.st`;
      writeFileSync(p, await download(id));
      const r = await openSafetensors(p);
      const d = await r.readFloat32(name);
      await r.close();
      return d;
    };
    for (const name of ['conv.weight', 'conv.bias']) {
      const parts = await Promise.all(candidates.map((c) => read(c.id, name)));
      const mean = parts[0].map((_, i) => Math.fround((parts[0][i] + parts[1][i] + parts[2][i]) / 3));
      const got = await read(res.body.resultModelId, name);
      for (let i = 0; i < got.length; i++) expect(got[i]).toBeCloseTo(mean[i], 6);
    }
  });

  it('gives back the model itself for a soup of identical models, and for weights [1, 0, 0]', async () => {
    const bytes = await safetensorsBytes(layout(5));
    const a = (await request(t.http).post('/models?name=same-a').set('content-type', 'application/octet-stream').send(bytes).expect(201)).body;
    const b = (await request(t.http).post('/models?name=same-b').set('content-type', 'application/octet-stream').send(bytes).expect(201)).body;
    const soup = (await request(t.http).post('/soups').send({ modelIds: [a.id, b.id], method: 'uniform' }).expect(201)).body;
    expect((await request(t.http).get(`/models/${soup.resultModelId}`)).body.sha256).toBe(a.sha256);
    const weighted = (await request(t.http).post('/soups').send({ modelIds: candidates.map((c) => c.id), method: 'weighted', weights: [3, 0, 0] }).expect(201)).body;
    expect(weighted.weights).toEqual([1, 0, 0]);
    expect(weighted.acceptedIds).toEqual([candidates[0].id]);
    // The same tensors, byte for byte; the headers differ only by each file's provenance.
    const data = (b: Buffer) => b.subarray(8 + Number(b.readBigUInt64LE(0)));
    expect(Buffer.compare(data(await download(weighted.resultModelId)), data(await download(candidates[0].id)))).toBe(0);
  });

  describe('candidates that differ are never merged: 422 with what differs, no row, no file', () => {
    async function expectRefused(body: object, status: number, check: (b: { detail: string; mismatches?: { kind: string; tensor: string; differing?: number }[] }) => void) {
      const before = (await request(t.http).get('/soups')).body.total;
      const files = artifactFiles(t.config.dataDir);
      const res = await request(t.http).post('/soups').send(body);
      expect(res.status).toBe(status);
      expect(res.headers['content-type']).toMatch(PROBLEM);
      check(res.body);
      expect((await request(t.http).get('/soups')).body.total).toBe(before);
      expect(artifactFiles(t.config.dataDir)).toEqual(files);
    }
    it('different masks, with the differing positions per tensor', async () => {
      const other = (await request(t.http).post(`/models/${candidates[1].id}/prune`).send({ method: 'magnitude-global', sparsity: 0.8 }).expect(201)).body.model;
      await expectRefused({ modelIds: [candidates[0].id, other.id], method: 'uniform' }, 422, (b) => {
        const masks = b.mismatches!.filter((x) => x.kind === 'mask');
        expect(masks.length).toBeGreaterThan(0);
        expect(masks.every((x) => (x.differing ?? 0) > 0)).toBe(true);
      });
    });
    it('different shapes and missing tensors', async () => {
      const odd = await upload('odd', [{ name: 'conv.weight', shape: [4, 2, 3, 3], data: seededWeights(72, 3) }, { name: 'fc.weight', shape: [3, 8], data: seededWeights(24, 4) }]);
      await expectRefused({ modelIds: [candidates[0].id, odd.id], method: 'uniform' }, 422, (b) => {
        const kinds = b.mismatches!.map((x) => x.kind);
        expect(kinds).toContain('missing');
        expect(b.mismatches!.some((x) => x.tensor === 'fc.weight' && ['shape', 'dtype'].includes(x.kind))).toBe(true);
      });
    });
    it('weights that do not match the models', () => expectRefused({ modelIds: candidates.map((c) => c.id), method: 'weighted', weights: [1, 2] }, 400, (b) => expect(b.detail).toMatch(/weight/)));
    it('a name the models table cannot hold (too long, NUL) or a datasetId with a NUL', async () => {
      const ids = candidates.map((c) => c.id);
      await expectRefused({ modelIds: ids, method: 'uniform', name: 'n'.repeat(201) }, 400, (b) => expect(b.detail).toMatch(/name/));
      await expectRefused({ modelIds: ids, method: 'uniform', name: 'a\u0000b' }, 400, (b) => expect(b.detail).toMatch(/name/));
      await expectRefused({ modelIds: ids, method: 'greedy', datasetId: 'mnist\u0000' }, 400, (b) => expect(b.detail).toMatch(/datasetId.*NUL/));
    });
    it('greedy without a dataset', () => expectRefused({ modelIds: candidates.map((c) => c.id), method: 'greedy' }, 422, (b) => expect(b.detail).toMatch(/layers models/)));
  });

  it('prunes, retrains three seeds, and makes uniform and greedy soups with their acceptance trace', async () => {
    const data = (await uploadMnistSlice(t)).id;
    const template = (await request(t.http).post('/models/templates').send({ architecture: 'cnn-bn', datasetId: data, seed: 4 }).expect(201)).body;
    const FAST = { epochs: 1, batchSize: 32, learningRate: 0.05, schedule: 'constant' };
    const dense = await waitForRun(t, (await request(t.http).post('/runs').send({ kind: 'train', modelId: template.id, datasetId: data, training: FAST }).expect(202)).body.id);
    expect(dense.status).toBe('succeeded');
    const pruned = (await request(t.http).post(`/models/${dense.candidates[0].resultModelId}/prune`).send({ method: 'magnitude-global', sparsity: 0.7 }).expect(201)).body;
    const retrain = await waitForRun(t, (await request(t.http).post('/runs').send({ kind: 'retrain', modelId: pruned.model.id, maskId: pruned.mask.id, datasetId: data, training: { ...FAST, epochs: 0.5 }, m: 3 }).expect(202)).body.id);
    expect(retrain.status).toBe('succeeded');
    const ids = retrain.candidates.map((c: { resultModelId: string }) => c.resultModelId);

    expect((await request(t.http).get(`/runs/${retrain.id}/report`).expect(200)).body.phases[0].soup).toBeNull();
    const uniform = (await request(t.http).post('/soups').send({ modelIds: ids, method: 'uniform', datasetId: data }).expect(201)).body;
    // The retrain run's report shows the soup made from its candidates.
    expect((await request(t.http).get(`/runs/${retrain.id}/report`).expect(200)).body.phases[0].soup).toMatchObject({ id: uniform.id, method: 'uniform', valAccuracy: uniform.valAccuracy });
    expect(uniform).toMatchObject({ status: 'succeeded', maskHash: pruned.mask.hash });
    expect(uniform.sparsity).toBeCloseTo(pruned.model.prunableSparsity, 12);
    expect(uniform.valAccuracy).toBeGreaterThan(0.2);

    const accepted = await request(t.http).post('/soups').send({ modelIds: ids, method: 'greedy', datasetId: data }).expect(202);
    const greedy = await waitForSoup(t, accepted.body.id);
    expect(greedy.status).toBe('succeeded');
    expect(greedy.steps).toHaveLength(3);
    expect(greedy.steps[0].accepted).toBe(true);
    const scores = greedy.steps.map((s: { score: number }) => s.score);
    expect([...scores].sort((a, b) => b - a)).toEqual(scores);
    for (const [i, s] of greedy.steps.entries()) if (i > 0) expect(s.accepted).toBe(s.soupScore >= Math.max(...greedy.steps.slice(0, i).filter((p: { accepted: boolean }) => p.accepted).map((p: { soupScore: number }) => p.soupScore)));
    expect(greedy.acceptedIds).toEqual(greedy.steps.filter((s: { accepted: boolean }) => s.accepted).map((s: { modelId: string }) => s.modelId).sort((a: string, b: string) => ids.indexOf(a) - ids.indexOf(b)));
    expect((await request(t.http).get(`/models/${greedy.resultModelId}`)).body.impliedMaskHash).toBe(pruned.mask.hash);
    // The score recorded for the accepted set is the score of the stored soup: greedy scores through
    // the same merge that writes it (and the same recalibration), so evaluating the result agrees exactly.
    const finalScore = greedy.steps.filter((s: { accepted: boolean }) => s.accepted).at(-1).soupScore;
    expect(greedy.valAccuracy).toBe(finalScore);
    const evaluated = (await request(t.http).post(`/models/${greedy.resultModelId}/evaluations`).send({ datasetId: data, split: 'val' }).expect(201)).body;
    expect(evaluated.accuracy).toBe(finalScore);

    const single = await waitForSoup(t, (await request(t.http).post('/soups').send({ modelIds: [ids[1]], method: 'greedy', datasetId: data, bnRecalibration: false }).expect(202)).body.id);
    expect(single.weights).toEqual([1]);
    expect((await request(t.http).get(`/models/${single.resultModelId}`)).body.sha256).toBe((await request(t.http).get(`/models/${ids[1]}`)).body.sha256);

    // Batch-norm recalibration: averaged moving statistics are not the average model's statistics.
    const broken = (await request(t.http).post('/soups').send({ modelIds: ids, method: 'uniform', datasetId: data, bnRecalibration: false }).expect(201)).body;
    expect(uniform.valAccuracy).toBeGreaterThanOrEqual(broken.valAccuracy);
  }, 300_000);
});
