import { createHash } from 'node:crypto';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from './support/app.js';
import { binaryParser, safetensorsBytes, seededWeights } from './support/checkpoints.js';

/**
 * The task protocol for external trainers, end to end over HTTP: a fake trainer written here
 * leases tasks, downloads the model and mask as safetensors, "trains" (nudges the kept weights,
 * keeps the pruned ones at zero) and posts results; the service checks every result before it counts.
 */

const WRITE = 'Bearer wkey-123';
const WORKER = 'Bearer trainer-456';
const READ = 'Bearer rkey-789';

interface Tensor {
  name: string;
  dtype: 'F32' | 'U8';
  shape: number[];
  data: Float32Array | Uint8Array;
}

/** The fake trainer's own safetensors reader (F32 and U8 only), independent of the service's parser. */
function parseSafetensors(buf: Buffer): Tensor[] {
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const base = 8 + n;
  return Object.entries(header)
    .filter(([k]) => k !== '__metadata__')
    .sort((a, b) => a[1].data_offsets[0] - b[1].data_offsets[0])
    .map(([name, h]) => {
      const bytes = buf.subarray(base + h.data_offsets[0], base + h.data_offsets[1]);
      const copy = new Uint8Array(bytes);
      return { name, dtype: h.dtype as 'F32' | 'U8', shape: h.shape, data: h.dtype === 'F32' ? new Float32Array(copy.buffer) : copy };
    });
}

const f32 = (tensors: Tensor[]) => safetensorsBytes(tensors.map((t) => ({ name: t.name, shape: t.shape, data: t.data as Float32Array })));

/** A small MLP with batch norm, a few KB. */
const TINY = () => [
  { name: 'fc1.weight', shape: [16, 12], data: seededWeights(192, 1) },
  { name: 'fc1.bias', shape: [16], data: seededWeights(16, 2) },
  { name: 'bn1.weight', shape: [16], data: seededWeights(16, 3) },
  { name: 'bn1.bias', shape: [16], data: seededWeights(16, 4) },
  { name: 'bn1.running_mean', shape: [16], data: new Float32Array(16) },
  { name: 'bn1.running_var', shape: [16], data: new Float32Array(16).fill(1) },
  { name: 'fc2.weight', shape: [4, 16], data: seededWeights(64, 5) },
  { name: 'fc2.bias', shape: [4], data: seededWeights(4, 6) },
];

/** The scripted trainer's "accuracy": a function of the exact tensor bytes, so any model scores the same wherever it is evaluated. */
const scoreOf = (tensors: Tensor[]) => {
  const h = createHash('sha256');
  for (const x of [...tensors].sort((a, b) => (a.name < b.name ? -1 : 1))) h.update(x.name).update(Buffer.from(x.data.buffer, x.data.byteOffset, x.data.byteLength));
  return h.digest().readUInt32BE(0) / 2 ** 32;
};

/** The greedy soup (SMS, '>='), replayed from the scores the trainer sent: the trace the service must record. */
const expectedGreedy = (m: number, score: (members: number[]) => number) => {
  const individual = Array.from({ length: m }, (_, i) => score([i]));
  const order = Array.from({ length: m }, (_, i) => i).sort((a, b) => individual[b] - individual[a] || a - b);
  const accepted = [order[0]];
  let best = individual[order[0]];
  const trace = [{ index: order[0], soupScore: best, accepted: true }];
  for (const i of order.slice(1)) {
    const s = score([...accepted, i].sort((a, b) => a - b));
    const ok = s >= best;
    if (ok) {
      accepted.push(i);
      best = s;
    }
    trace.push({ index: i, soupScore: s, accepted: ok });
  }
  return { trace, accepted: accepted.sort((a, b) => a - b), score: best };
};

describe('external trainers: the /tasks protocol', () => {
  let t: TestApp;
  let datasetId: string;
  let denseId: string;
  let prunedId: string;
  let maskId: string;

  const post = (path: string, auth = WRITE) => request(t.http).post(path).set('authorization', auth);
  const get = (path: string, auth = WRITE) => request(t.http).get(path).set('authorization', auth);
  const lease = async (kinds = ['train', 'evaluate', 'recalibrate'], waitSeconds = 10, auth = WORKER) => {
    const res = await post('/tasks/lease', auth).send({ workerId: 'fake-trainer', kinds, waitSeconds });
    expect([200, 204]).toContain(res.status);
    return res.status === 200 ? res.body : null;
  };
  const download = async (url: string, auth = WORKER) => (await get(url, auth).buffer(true).parse(binaryParser).expect(200)).body as Buffer;

  /** What a trainer does with a train task: every kept weight nudged, every pruned one left at exactly 0 (the mask re-applied). */
  const trainedModel = async (task: { model: { url: string }; mask: { url: string } | null }) => {
    const tensors = parseSafetensors(await download(task.model.url));
    const mask = task.mask ? new Map(parseSafetensors(await download(task.mask.url)).map((m) => [m.name, m.data as Uint8Array])) : new Map();
    for (const x of tensors) {
      const d = x.data as Float32Array;
      const m = mask.get(x.name);
      for (let i = 0; i < d.length; i++) d[i] = m && m[i] === 0 ? 0 : d[i] * 0.9 + 0.01;
    }
    return { tensors, mask };
  };
  const send = (taskId: string, model: Buffer | null, metrics: unknown = { valAccuracy: 0.5, testAccuracy: 0.45, loss: 1.2 }) => {
    const r = post(`/tasks/${taskId}/result`, WORKER).field('metrics', JSON.stringify(metrics));
    return model ? r.attach('model.safetensors', model, 'model.safetensors') : r;
  };
  const modelCount = async () => Number((await t.dataSource.query('SELECT count(*)::int AS n FROM model'))[0].n);
  const artifactFiles = () => {
    const root = join(t.config.dataDir, 'artifacts');
    const walk = (d: string): number => readdirSync(d).reduce((n, f) => (f === 'tmp' ? n : statSync(join(d, f)).isDirectory() ? n + walk(join(d, f)) : n + 1), 0);
    try {
      return walk(root);
    } catch {
      return 0;
    }
  };
  /** Waits for a run to end (the run's state, as GET /runs/{id} reports it). */
  const waitForRun = async (_t: TestApp, id: string) => {
    for (;;) {
      const run = (await get(`/runs/${id}`).expect(200)).body;
      if (['succeeded', 'failed', 'cancelled'].includes(run.status)) return run;
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  const retrain = async (m = 1) => (await post('/runs').send({ kind: 'retrain', trainer: 'external', modelId: prunedId, datasetId, m, training: { epochs: 1 } }).expect(202)).body;

  beforeAll(async () => {
    t = await startTestApp({ API_KEYS: 'ops:wkey-123:write,gpu:trainer-456:worker,dash:rkey-789:read', TASK_LEASE_SECONDS: '2', TASK_MAX_ATTEMPTS: '12', LOG_LEVEL: process.env.TASKS_LOG ?? 'silent' });
    datasetId = (await post('/datasets').send({ name: 'fashion-torch', source: 'external', classes: 4 }).expect(201)).body.id;
    denseId = (await post('/models?name=tiny').set('content-type', 'application/octet-stream').send(await safetensorsBytes(TINY())).expect(201)).body.id;
    const pruned = (await post(`/models/${denseId}/prune`).send({ method: 'magnitude-global', sparsity: 0.5 }).expect(201)).body;
    prunedId = pruned.model.id;
    maskId = pruned.mask.id;
  });
  afterAll(() => t?.close());

  it('creates an external dataset (a name and a class count) and refuses a bad one with a 400 and no row', async () => {
    const d = (await get(`/datasets/${datasetId}`).expect(200)).body;
    expect(d).toMatchObject({ source: 'external', name: 'fashion-torch', classes: 4 });
    const before = (await get('/datasets').expect(200)).body.total;
    const bad = await post('/datasets').send({ name: 'x', source: 'external', classes: 1 }).expect(400);
    expect(bad.headers['content-type']).toMatch(/problem\+json/);
    expect(bad.body.detail).toMatch(/classes/);
    expect((await get('/datasets').expect(200)).body.total).toBe(before);
    // A built-in run cannot use it; an external run cannot use a built-in dataset or a TensorFlow.js model.
    await post('/runs').send({ kind: 'retrain', modelId: prunedId, datasetId, m: 1 }).expect(422);
    const builtin = await post('/runs').send({ kind: 'retrain', trainer: 'external', modelId: prunedId, datasetId: 'mnist', m: 1 }).expect(422);
    expect(builtin.body.detail).toMatch(/external/);
    // Soups by an external trainer: greedy ones on an external dataset of safetensors models, nothing else; a refusal makes nothing.
    const soups = (await get('/soups').expect(200)).body.total;
    const tfjs = (await post('/models/templates').send({ architecture: 'lenet-300-100', datasetId: 'mnist', seed: 1 }).expect(201)).body.id;
    const [models, files] = [await modelCount(), artifactFiles()];
    const uniform = await post('/soups').send({ modelIds: [prunedId, denseId], method: 'uniform', trainer: 'external' }).expect(400);
    expect(uniform.body.detail).toMatch(/needs no trainer/);
    const builtinData = await post('/soups').send({ modelIds: [prunedId, denseId], method: 'greedy', datasetId: 'mnist', trainer: 'external' }).expect(422);
    expect(builtinData.body.detail).toMatch(/dataset mnist is builtin/);
    const layers = await post('/soups').send({ modelIds: [prunedId, tfjs], method: 'greedy', datasetId, trainer: 'external' }).expect(422);
    expect(layers.body.detail).toMatch(/not safetensors/);
    // Two models with different masks cannot be merged: refused before any row or task exists.
    const mixed = await post('/soups').send({ modelIds: [prunedId, denseId], method: 'greedy', datasetId, trainer: 'external' }).expect(422);
    expect(mixed.headers['content-type']).toMatch(/problem\+json/);
    expect((await get('/soups').expect(200)).body.total).toBe(soups);
    expect(await modelCount()).toBe(models);
    expect(artifactFiles()).toBe(files);
    expect((await get('/tasks?kind=evaluate').expect(200)).body.total + (await get('/tasks?kind=recalibrate').expect(200)).body.total).toBe(0);
    await request(t.http).delete(`/models/${tfjs}`).set('authorization', WRITE).expect(204);
  });

  it('serves the mask as safetensors: one U8 tensor per masked tensor, same shape, 1 kept and 0 pruned', async () => {
    const mask = parseSafetensors(await download(`/masks/${maskId}/safetensors`, WRITE));
    const pruned = parseSafetensors(await download(`/models/${prunedId}/safetensors`, WRITE));
    expect(mask.map((m) => m.name).sort()).toEqual(['fc1.weight', 'fc2.weight']);
    for (const m of mask) {
      expect(m.dtype).toBe('U8');
      const w = pruned.find((p) => p.name === m.name)!;
      expect(m.shape).toEqual(w.shape);
      for (let i = 0; i < m.data.length; i++) expect(m.data[i]).toBe((w.data as Float32Array)[i] === 0 ? 0 : 1);
    }
  });

  it('scopes: a worker key leases and downloads what its task names, nothing else (403); a read key cannot lease', async () => {
    await get('/models', WORKER).expect(403);
    await post('/runs', WORKER).send({}).expect(403);
    await post('/tasks/lease', READ).send({ workerId: 'x', kinds: ['train'] }).expect(403);
    // Nothing leased names the dense model: the worker key may not download it.
    await get(`/models/${denseId}/safetensors`, WORKER).expect(403);
    // A write key may lease too (one key for a user testing locally): an empty queue answers 204.
    await post('/tasks/lease', WRITE).send({ workerId: 'local', kinds: ['train'], waitSeconds: 0 }).expect(204);
    const run = await retrain();
    const task = await lease(['train']);
    expect(task).toMatchObject({ kind: 'train', runId: run.id, model: { id: prunedId, url: `/models/${prunedId}/safetensors` }, mask: { id: maskId, url: `/masks/${maskId}/safetensors` }, dataset: { id: datasetId, name: 'fashion-torch' }, split: 'train', attempts: 1 });
    expect(task.training).toMatchObject({ epochs: 1, initialLearningRate: task.training.learningRate });
    await get(task.model.url, WORKER).expect(200);
    await get(task.mask.url, WORKER).expect(200);
    await get(`/models/${denseId}/safetensors`, WORKER).expect(403);
    await get('/tasks', WORKER).expect(403);
    await post(`/runs/${run.id}/cancel`).expect(200);
  });

  it('runs an external retrain to the end: each candidate a train task, each result checked and stored with the mask', async () => {
    const run = await retrain(2);
    expect(run.status).toBe('queued');
    const seen = new Set<string>();
    for (let i = 0; i < 2; i++) {
      const task = await lease(['train']);
      expect(task.runId).toBe(run.id);
      seen.add(task.candidateId);
      const hb = await post(`/tasks/${task.id}/heartbeat`, WORKER).send({ progress: { epoch: 0.5, step: 3, steps: 6, loss: 0.7, samplesPerSecond: 1000 } }).expect(200);
      expect(hb.body.cancelled).toBe(false);
      expect(new Date(hb.body.leaseExpiresAt).getTime()).toBeGreaterThan(Date.now());
      const { tensors } = await trainedModel(task);
      const accepted = await send(task.id, await f32(tensors)).expect(201);
      expect(accepted.body.status).toBe('succeeded');
    }
    expect(seen.size).toBe(2);
    const done = await waitForRun(t, run.id);
    expect(done.status).toBe('succeeded');
    // The heartbeat's progress reached the run's events as built-in training's does.
    const events = (await t.dataSource.query(`SELECT type, data FROM run_event WHERE run_id = $1 ORDER BY id`, [run.id])) as { type: string; data: Record<string, unknown> }[];
    expect(events.filter((e) => e.type === 'progress').map((e) => e.data.step)).toEqual([3, 3]);
    const candidates = (await t.dataSource.query('SELECT result_model_id, val_accuracy FROM run_candidate WHERE run_id = $1', [run.id])) as { result_model_id: string; val_accuracy: number }[];
    for (const c of candidates) {
      const m = (await get(`/models/${c.result_model_id}`).expect(200)).body;
      expect(m.maskId).toBe(maskId);
      expect(m.parentIds).toEqual([prunedId]);
      expect(c.val_accuracy).toBe(0.5);
    }
  });

  describe('results are checked before they count: 422, nothing kept, the task back in the queue', () => {
    let task: { id: string; model: { url: string }; mask: { url: string } | null; runId: string };
    let runId: string;
    beforeAll(async () => {
      runId = (await retrain()).id;
      task = await lease(['train']);
    });
    afterAll(async () => {
      await post(`/runs/${runId}/cancel`);
    });

    const refusedWith = async (body: Buffer | null, pattern: RegExp, metrics?: unknown) => {
      const [models, files] = [await modelCount(), artifactFiles()];
      const res = await send(task.id, body, metrics).expect(422);
      expect(res.headers['content-type']).toMatch(/problem\+json/);
      expect(res.body.detail).toMatch(pattern);
      expect(await modelCount()).toBe(models);
      expect(artifactFiles()).toBe(files);
      const after = (await get(`/tasks/${task.id}`).expect(200)).body;
      expect(after.status).toBe('queued');
      expect(after.error).toMatch(/result refused/);
      // Lease it again for the next case (a refused result ended the attempt).
      const again = await lease(['train']);
      expect(again.id).toBe(task.id);
      return after;
    };

    it('a result that revives a pruned weight', async () => {
      const { tensors, mask } = await trainedModel(task);
      const m = mask.get('fc1.weight')!;
      const i = m.indexOf(0);
      (tensors.find((x) => x.name === 'fc1.weight')!.data as Float32Array)[i] = 0.25;
      await refusedWith(await f32(tensors), /1 pruned weight is not zero.*fc1\.weight \(1\)/);
    });

    it('wrong shapes, missing or extra names, another dtype', async () => {
      const { tensors } = await trainedModel(task);
      const reshaped = tensors.map((x) => (x.name === 'fc2.weight' ? { ...x, shape: [16, 4] } : x));
      await refusedWith(await f32(reshaped), /fc2\.weight is \[16, 4\], the input has \[4, 16\]/);
      const renamed = tensors.map((x) => (x.name === 'fc2.bias' ? { ...x, name: 'head.bias' } : x));
      await refusedWith(await f32(renamed), /missing tensors fc2\.bias; tensors not in the input model head\.bias/);
      const f16 = await safetensorsBytes(tensors.map((x) => ({ name: x.name, shape: x.shape, data: x.data as Float32Array, dtype: x.name === 'fc1.bias' ? 'F16' : 'F32' })));
      await refusedWith(f16, /fc1\.bias is F16, the input has F32/);
    });

    it('non-finite values, a missing model part, bad metrics, a body that is not safetensors', async () => {
      const { tensors } = await trainedModel(task);
      (tensors.find((x) => x.name === 'fc2.bias')!.data as Float32Array)[1] = Number.NaN;
      await refusedWith(await f32(tensors), /non-finite.*fc2\.bias \(1\)/);
      await refusedWith(null, /model\.safetensors/);
      const ok = await trainedModel(task);
      await refusedWith(await f32(ok.tensors), /valAccuracy/, { valAccuracy: 1.5, testAccuracy: 0.1 });
      await refusedWith(Buffer.from('not a safetensors file at all'), /model\.safetensors/);
    });

    it('after the last attempt the task and its run fail with the reason', async () => {
      // Attempts so far: 1 + one per refusal; the limit is 12, so keep failing until it gives up.
      let current = (await get(`/tasks/${task.id}`).expect(200)).body;
      while (current.status === 'leased') {
        await post(`/tasks/${task.id}/fail`, WORKER).send({ error: 'CUDA out of memory' }).expect(200);
        current = (await get(`/tasks/${task.id}`).expect(200)).body;
        if (current.status === 'queued') await lease(['train']);
        current = (await get(`/tasks/${task.id}`).expect(200)).body;
      }
      expect(current.status).toBe('failed');
      expect(current.error).toMatch(/train task failed after 12 attempts: the trainer reported: CUDA out of memory/);
      const run = await waitForRun(t, runId);
      expect(run.status).toBe('failed');
      expect(run.error).toMatch(/CUDA out of memory/);
    });
  });

  it('a lapsed lease returns the task to the queue; a second result for a settled task gets 409 and keeps nothing', async () => {
    const run = await retrain();
    const first = await lease(['train']);
    // The trainer dies: no heartbeat. A second trainer's long poll gets the same task once the lease lapses.
    const second = await lease(['train'], 15);
    expect(second.id).toBe(first.id);
    expect(second.attempts).toBe(2);
    const events = (await t.dataSource.query(`SELECT type, data FROM run_event WHERE run_id = $1 AND type = 'candidate-requeued'`, [run.id])) as { data: { reason: string } }[];
    expect(events[0].data.reason).toMatch(/lease lapsed/);
    const { tensors } = await trainedModel(second);
    const body = await f32(tensors);
    await send(second.id, body).expect(201);
    const [models, files] = [await modelCount(), artifactFiles()];
    // The first trainer comes back late, and the second one retries: both refused, nothing lands twice.
    const late = await send(first.id, body).expect(409);
    expect(late.body.detail).toMatch(/already succeeded/);
    const moved = tensors.map((x) => ({ ...x, data: (x.data as Float32Array).map((v) => v * 2) }));
    await send(first.id, await f32(moved)).expect(409);
    expect(await modelCount()).toBe(models);
    expect(artifactFiles()).toBe(files);
    const done = await waitForRun(t, run.id);
    expect(done.status).toBe('succeeded');
    expect(done.candidates).toHaveLength(1);
  });

  it('a trainer that hangs up during its long poll is not handed a task', async () => {
    // The poll is cut after 300 ms; the task comes afterwards, while the server side would still be waiting.
    await expect(post('/tasks/lease', WORKER).send({ workerId: 'gone', kinds: ['train'], waitSeconds: 30 }).timeout(300)).rejects.toThrow(/timeout/i);
    const run = await retrain();
    const task = await lease(['train'], 5);
    expect(task).toMatchObject({ runId: run.id, attempts: 1, workerId: 'fake-trainer' });
    await post(`/runs/${run.id}/cancel`).expect(200);
  });

  it('a cancelled run: its leased task hears "cancelled" on the next heartbeat and its result gets 409', async () => {
    const run = await retrain(2);
    const task = await lease(['train']);
    const { tensors } = await trainedModel(task);
    await post(`/runs/${run.id}/cancel`).expect(200);
    // What the task named is no longer the worker's to download.
    await get(task.model.url, WORKER).expect(403);
    const hb = await post(`/tasks/${task.id}/heartbeat`, WORKER).send({}).expect(200);
    expect(hb.body).toEqual({ leaseExpiresAt: null, cancelled: true });
    const models = await modelCount();
    await send(task.id, await f32(tensors)).expect(409);
    expect(await modelCount()).toBe(models);
    const tasks = (await get(`/tasks?runId=${run.id}`).expect(200)).body.items;
    expect(tasks.map((x: { status: string }) => x.status)).toEqual(['cancelled', 'cancelled']);
    expect((await waitForRun(t, run.id)).status).toBe('cancelled');
    await post('/tasks/lease', WORKER).send({ workerId: 'x', kinds: ['train'], waitSeconds: 0 }).expect(204);
  });

  it('fuzz: mangled result bodies get a 4xx problem (never a 5xx), and a refusal keeps nothing', async () => {
    const valid = await f32(parseSafetensors(await download(`/models/${prunedId}/safetensors`, WRITE)));
    const rng = fc.sample(fc.tuple(fc.constantFrom('truncate', 'flip', 'garbage', 'prefix'), fc.nat(), fc.nat(255)), { numRuns: 24, seed: 13 });
    let task: { id: string } | null = null;
    let runId = '';
    for (const [how, at, byte] of rng) {
      if (!task) {
        runId = (await retrain()).id;
        task = await lease(['train']);
      }
      const body = Buffer.from(valid);
      const i = at % body.length;
      if (how === 'flip') body.writeUInt8(byte, i);
      const mangled = how === 'truncate' ? body.subarray(0, i) : how === 'garbage' ? Buffer.from(fc.sample(fc.nat(255), { numRuns: (at % 64) + 1, seed: at }) as number[]) : how === 'prefix' ? Buffer.concat([Buffer.from(body.subarray(0, 8)), body]) : body;
      const [models, files] = [await modelCount(), artifactFiles()];
      const res = await send(task!.id, mangled);
      expect([201, 413, 422], `${how} at ${i}: ${res.status} ${res.body?.detail}`).toContain(res.status);
      if (res.status === 201) {
        task = null;
        continue;
      }
      expect(res.headers['content-type']).toMatch(/problem\+json/);
      expect(await modelCount()).toBe(models);
      expect(artifactFiles()).toBe(files);
      const after = (await get(`/tasks/${task!.id}`).expect(200)).body;
      task = after.status === 'queued' ? await lease(['train']) : null;
    }
    if (task) await post(`/runs/${runId}/cancel`).expect(200);
  });

  it('ALLR: the service computes η₀ from the prune and sends it as initialLearningRate', async () => {
    const run = (await post('/runs').send({ kind: 'retrain', trainer: 'external', modelId: prunedId, datasetId, m: 1, pretrainEpochs: 4, training: { epochs: 1, learningRate: 0.2, schedule: 'allr' } }).expect(202)).body;
    const task = await lease(['train']);
    expect(task.runId).toBe(run.id);
    // d = ‖θ − θ_pruned‖ / ‖θ‖ over the prunable tensors, θ the dense parent; p = 0.5 (half the weights pruned); E_r / E_p = 1/4.
    const dense = parseSafetensors(await download(`/models/${denseId}/safetensors`, WRITE));
    const pruned = parseSafetensors(await download(`/models/${prunedId}/safetensors`, WRITE));
    let diff = 0;
    let norm = 0;
    for (const name of ['fc1.weight', 'fc2.weight']) {
      const a = dense.find((x) => x.name === name)!.data as Float32Array;
      const b = pruned.find((x) => x.name === name)!.data as Float32Array;
      for (let i = 0; i < a.length; i++) {
        diff += (a[i] - b[i]) ** 2;
        norm += a[i] ** 2;
      }
    }
    const d = Math.sqrt(diff) / Math.sqrt(norm);
    const expected = Math.min(Math.max((d / Math.sqrt(0.5)) * 0.2, 0.25 * 0.2), 0.2);
    expect(task.training.schedule).toBe('allr');
    expect(task.training.initialLearningRate).toBeCloseTo(expected, 6);
    expect(task.training.initialLearningRate).toBeLessThan(0.2);
    await post(`/runs/${run.id}/cancel`).expect(200);
  });

  it('runs an external IMP run: one train task and one evaluate task per phase, no soup, no recalibration', async () => {
    const run = (await post('/runs').send({ kind: 'imp', trainer: 'external', modelId: denseId, datasetId, phases: 2, goalSparsity: 0.75, training: { epochs: 1 } }).expect(202)).body;
    const kinds: string[] = [];
    while (!['succeeded', 'failed', 'cancelled'].includes((await get(`/runs/${run.id}`).expect(200)).body.status)) {
      const task = await lease(['train', 'evaluate', 'recalibrate'], 1);
      if (!task) continue;
      kinds.push(`${task.phase}:${task.kind}`);
      if (task.kind === 'train') await send(task.id, await f32((await trainedModel(task)).tensors)).expect(201);
      else await send(task.id, null, { valAccuracy: 0.7, testAccuracy: 0.6, loss: 0.9 }).expect(201);
    }
    const done = (await get(`/runs/${run.id}`).expect(200)).body;
    expect(done.status).toBe('succeeded');
    expect(done.trainer).toBe('external');
    expect(kinds).toEqual(['1:train', '1:evaluate', '2:train', '2:evaluate']);
    expect(done.phases.map((p: { resultModelId: string }) => p.resultModelId)).toEqual(done.candidates.map((c: { resultModelId: string }) => c.resultModelId));
  });

  it('runs an external SMS run (2 phases, m = 2, batch norm): train tasks, soup, recalibrate, evaluate; every phase result keeps its mask', async () => {
    const run = (await post('/runs').send({ kind: 'sms', trainer: 'external', modelId: denseId, datasetId, m: 2, phases: 2, goalSparsity: 0.75, training: { epochs: 1 } }).expect(202)).body;
    const kinds: string[] = [];
    // The trainer's loop: long-poll for work until the run has ended.
    while (!['succeeded', 'failed', 'cancelled'].includes((await get(`/runs/${run.id}`).expect(200)).body.status)) {
      const task = await lease(['train', 'evaluate', 'recalibrate'], 1);
      if (!task) continue;
      expect(task.runId).toBe(run.id);
      kinds.push(`${task.phase}:${task.kind}`);
      if (task.kind === 'train') {
        const { tensors } = await trainedModel(task);
        await send(task.id, await f32(tensors), { valAccuracy: 0.6 + task.phase / 10, testAccuracy: 0.55, loss: 0.9 }).expect(201);
      } else if (task.kind === 'recalibrate') {
        const tensors = parseSafetensors(await download(task.model.url));
        // A recalibration that touches a weight is refused; one that changes the BN statistics only counts.
        const touched = tensors.map((x) => (x.name === 'fc2.bias' ? { ...x, data: (x.data as Float32Array).map((v) => v + 1) } : x));
        const res = await send(task.id, await f32(touched), null).expect(422);
        expect(res.body.detail).toMatch(/batch-norm running statistics only; these tensors changed: fc2\.bias/);
        const again = await lease(['recalibrate']);
        for (const x of tensors) if (x.name === 'bn1.running_mean') (x.data as Float32Array).fill(0.125);
        await send(again.id, await f32(tensors), null).expect(201);
      } else {
        await send(task.id, null, { valAccuracy: 0.7, testAccuracy: 0.65, loss: 0.8, ece: 0.05, perClassAccuracy: [0.6, 0.7, 0.8, 0.5] }).expect(201);
      }
    }
    const done = await waitForRun(t, run.id);
    expect(done.status).toBe('succeeded');
    expect(kinds).toEqual(['1:train', '1:train', '1:recalibrate', '1:evaluate', '2:train', '2:train', '2:recalibrate', '2:evaluate']);
    const phases = (await t.dataSource.query('SELECT index, mask_id, result_model_id, metrics FROM run_phase WHERE run_id = $1 ORDER BY index', [run.id])) as { index: number; mask_id: string; result_model_id: string; metrics: Record<string, unknown> }[];
    for (const p of phases) {
      const mask = new Map(parseSafetensors(await download(`/masks/${p.mask_id}/safetensors`, WRITE)).map((m) => [m.name, m.data as Uint8Array]));
      const result = parseSafetensors(await download(`/models/${p.result_model_id}/safetensors`, WRITE));
      for (const x of result) {
        const m = mask.get(x.name);
        if (!m) continue;
        // Exactly the phase's mask: pruned weights zero, kept ones not (they were nudged away from 0).
        for (let i = 0; i < m.length; i++) expect((x.data as Float32Array)[i] === 0).toBe(m[i] === 0);
      }
      expect(result.find((x) => x.name === 'bn1.running_mean')!.data[0]).toBe(0.125);
      expect(p.metrics).toMatchObject({ testAccuracy: 0.65, valAccuracy: 0.7, ece: 0.05, worstClassAccuracy: 0.5, trainer: 'external' });
    }
    if (process.env.TASKS_LOG) console.log((await t.dataSource.query('SELECT type, at FROM run_event WHERE run_id = $1 ORDER BY id', [run.id])).map((e: { type: string; at: Date }) => `${new Date(e.at).toISOString().slice(14, 23)} ${e.type}`).join('\n'));
    const report = (await get(`/runs/${run.id}/report`).expect(200)).body;
    expect(report.phases).toHaveLength(2);
    await get(`/runs/${run.id}/report.svg`).expect(200);
  });
  /** A train task done with a per-seed nudge (candidates differ), the mask kept. */
  const trainBySeed = async (task: { id: string; model: { url: string }; mask: { url: string } | null; training: { seed: number } }) => {
    const { tensors } = await trainedModel(task);
    for (const x of tensors) if (!/running_/.test(x.name)) {
        const d = x.data as Float32Array;
        for (let i = 0; i < d.length; i++) d[i] *= 1 + 0.05 * task.training.seed;
      }
    await send(task.id, await f32(tensors)).expect(201);
  };

  it('a greedy soup of an external retrain run (POST /soups, trainer external): 202; each set merged here, recalibrated and scored by the trainer; the trace scores the stored soup', async () => {
    const run = await retrain(3);
    for (let i = 0; i < 3; i++) await trainBySeed(await lease(['train']));
    const trained = await waitForRun(t, run.id);
    expect(trained.status).toBe('succeeded');
    const ids = [...trained.candidates].sort((a: { index: number }, b: { index: number }) => a.index - b.index).map((c: { resultModelId: string }) => c.resultModelId);
    const created = await post('/soups').send({ modelIds: ids, method: 'greedy', trainer: 'external', datasetId }).expect(202);
    expect(created.body).toMatchObject({ status: 'queued', method: 'greedy', modelIds: ids });
    const soupId = created.body.id;
    const scores = new Map<string, number>();
    const inputs = new Map<string, Tensor[]>();
    let refusedOnce = false;
    const status = async () => (await get(`/soups/${soupId}`).expect(200)).body.status;
    while (!['succeeded', 'failed'].includes(await status())) {
      let task = await lease(['recalibrate', 'evaluate'], 1);
      if (!task) continue;
      expect(task).toMatchObject({ soupId, runId: null, dataset: { id: datasetId }, mask: { id: maskId } });
      const key = task.members.join(',');
      const tensors = parseSafetensors(await download(task.model.url));
      if (task.kind === 'recalibrate') {
        expect(task.split).toBe('train');
        inputs.set(key, parseSafetensors(await download(task.model.url)));
        if (!refusedOnce && task.members.length > 1) {
          // A recalibration that moves a weight is refused: 422, no model row, no file; the task comes back.
          // (On a set of two: by then the soup's job has merged every set it needs and waits.)
          const [models, files] = [await modelCount(), artifactFiles()];
          const touched = tensors.map((x) => (x.name === 'fc1.bias' ? { ...x, data: (x.data as Float32Array).map((v) => v + 1) } : x));
          const res = await send(task.id, await f32(touched), { valAccuracy: 0.9, testAccuracy: 0.9 }).expect(422);
          expect(res.body.detail).toMatch(/these tensors changed: fc1\.bias/);
          expect(await modelCount()).toBe(models);
          expect(artifactFiles()).toBe(files);
          task = await lease(['recalibrate']);
          expect(task.members.join(',')).toBe(key);
          refusedOnce = true;
        }
        for (const x of tensors) if (x.name === 'bn1.running_mean') (x.data as Float32Array).fill(0.01 * (1 + task.members.length + task.members[0]));
        // Singletons come back with their score; larger sets without, so the service asks for an evaluate task.
        const score = scoreOf(tensors);
        if (task.members.length === 1) scores.set(key, score);
        await send(task.id, await f32(tensors), task.members.length === 1 ? { valAccuracy: score, testAccuracy: score / 2 } : null).expect(201);
      } else {
        expect(task.split).toBe('val');
        expect(task.members.length).toBeGreaterThan(1);
        const score = scoreOf(tensors);
        scores.set(key, score);
        await send(task.id, null, { valAccuracy: score, testAccuracy: score / 2 }).expect(201);
      }
    }
    const soup = (await get(`/soups/${soupId}`).expect(200)).body;
    expect(soup.status, soup.error).toBe('succeeded');
    const want = expectedGreedy(3, (members) => scores.get(members.join(','))!);
    expect(soup.steps).toEqual(want.trace.map((s) => ({ modelId: ids[s.index], score: scores.get(String(s.index)), soupScore: s.soupScore, accepted: s.accepted })));
    expect(soup.valAccuracy).toBe(want.score);
    expect(soup.acceptedIds).toEqual(want.accepted.map((i) => ids[i]));
    // The score the trace records is the stored soup's: evaluating the stored model gives it again.
    const stored = parseSafetensors(await download(`/models/${soup.resultModelId}/safetensors`, WRITE));
    expect(scoreOf(stored)).toBe(soup.valAccuracy);
    // The stored soup is the core merge of the accepted set (what POST /soups uniform writes) with the trainer's BN statistics.
    const uniform = (await post('/soups').send({ modelIds: want.accepted.map((i) => ids[i]), method: 'uniform' }).expect(201)).body;
    const merged = parseSafetensors(await download(`/models/${uniform.resultModelId}/safetensors`, WRITE));
    expect(inputs.get(want.accepted.join(','))!.map((x) => [x.name, [...x.data]])).toEqual(merged.map((x) => [x.name, [...x.data]]));
    for (const x of merged) if (x.name !== 'bn1.running_mean') expect([...stored.find((y) => y.name === x.name)!.data]).toEqual([...x.data]);
    const model = (await get(`/models/${soup.resultModelId}`).expect(200)).body;
    expect(model.maskId).toBe(maskId);
    // One scoring per set: 3 alone, then 2 growing sets (a recalibration each; an evaluation for the larger ones).
    const tasks = (await get(`/tasks?limit=100`).expect(200)).body.items.filter((x: { soupId: string }) => x.soupId === soupId);
    expect(tasks.filter((x: { kind: string }) => x.kind === 'recalibrate')).toHaveLength(5);
    expect(tasks.filter((x: { kind: string }) => x.kind === 'evaluate')).toHaveLength(2);
  });

  it('a greedy soup whose scoring task fails for good fails with the reason; its other tasks are not handed out', async () => {
    const run = await retrain(2);
    for (let i = 0; i < 2; i++) await trainBySeed(await lease(['train']));
    const ids = (await waitForRun(t, run.id)).candidates.map((c: { resultModelId: string }) => c.resultModelId);
    const soupId = (await post('/soups').send({ modelIds: ids, method: 'greedy', trainer: 'external', datasetId }).expect(202)).body.id;
    let task = await lease(['recalibrate']);
    const failing = task.id;
    for (;;) {
      await post(`/tasks/${failing}/fail`, WORKER).send({ error: 'CUDA out of memory' }).expect(200);
      if ((await get(`/tasks/${failing}`).expect(200)).body.status === 'failed') break;
      task = await lease(['recalibrate']);
      expect(task.id).toBe(failing);
    }
    const soup = (await get(`/soups/${soupId}`).expect(200)).body;
    expect(soup.status).toBe('failed');
    expect(soup.error).toMatch(/recalibrate task failed after 12 attempts: the trainer reported: CUDA out of memory/);
    await post('/tasks/lease', WORKER).send({ workerId: 'x', kinds: ['recalibrate', 'evaluate'], waitSeconds: 0 }).expect(204);
    const tasks = (await get('/tasks?limit=100').expect(200)).body.items.filter((x: { soupId: string }) => x.soupId === soupId);
    expect(tasks.map((x: { status: string }) => x.status).sort()).toEqual(['cancelled', 'failed']);
  });

  it('runs an external SMS run with a greedy soup per phase: every set scored by a recalibration with metrics, no separate evaluation; the phase result is the soup as scored', async () => {
    const run = (await post('/runs').send({ kind: 'sms', trainer: 'external', modelId: denseId, datasetId, m: 2, phases: 2, goalSparsity: 0.75, training: { epochs: 1 }, soup: { method: 'greedy' } }).expect(202)).body;
    const kinds: string[] = [];
    while (!['succeeded', 'failed', 'cancelled'].includes((await get(`/runs/${run.id}`).expect(200)).body.status)) {
      const task = await lease(['train', 'evaluate', 'recalibrate'], 1);
      if (!task) continue;
      expect(task.runId).toBe(run.id);
      kinds.push(`${task.phase}:${task.kind}${task.members ? `:${task.members.join('+')}` : ''}`);
      if (task.kind === 'train') await trainBySeed(task);
      else {
        const tensors = parseSafetensors(await download(task.model.url));
        for (const x of tensors) if (x.name === 'bn1.running_mean') (x.data as Float32Array).fill(0.125);
        const score = scoreOf(tensors);
        // Only the first candidate's scoring names the phase's candidates for the ensemble.
        expect(task.ensemble === null).toBe(task.members.join(',') !== '0');
        await send(task.id, await f32(tensors), { valAccuracy: score, testAccuracy: score / 2, ece: 0.1, ...(task.ensemble ? { ensembleTestAccuracy: 0.5 + task.phase / 10 } : {}) }).expect(201);
      }
    }
    const done = await waitForRun(t, run.id);
    expect(done.status, done.error).toBe('succeeded');
    for (const p of [1, 2]) expect(kinds.filter((k) => k.startsWith(`${p}:`)).sort()).toEqual([`${p}:recalibrate:0`, `${p}:recalibrate:0+1`, `${p}:recalibrate:1`, `${p}:train`, `${p}:train`]);
    const phases = (await t.dataSource.query('SELECT index, mask_id, soup_id, result_model_id, metrics FROM run_phase WHERE run_id = $1 ORDER BY index', [run.id])) as { index: number; mask_id: string; soup_id: string; result_model_id: string; metrics: Record<string, number> }[];
    for (const p of phases) {
      const soup = (await get(`/soups/${p.soup_id}`).expect(200)).body;
      expect(soup).toMatchObject({ method: 'greedy', status: 'succeeded', resultModelId: p.result_model_id });
      const result = parseSafetensors(await download(`/models/${p.result_model_id}/safetensors`, WRITE));
      expect(scoreOf(result)).toBe(soup.valAccuracy);
      expect(p.metrics).toMatchObject({ valAccuracy: soup.valAccuracy, testAccuracy: soup.valAccuracy / 2, ece: 0.1, ensembleTestAccuracy: 0.5 + p.index / 10, trainer: 'external' });
      const mask = new Map(parseSafetensors(await download(`/masks/${p.mask_id}/safetensors`, WRITE)).map((m) => [m.name, m.data as Uint8Array]));
      for (const x of result) {
        const m = mask.get(x.name);
        if (m) for (let i = 0; i < m.length; i++) expect((x.data as Float32Array)[i] === 0).toBe(m[i] === 0);
      }
    }
    await get(`/runs/${run.id}/report`).expect(200);
  });

  it('cancelling an external SMS run while its greedy soup is being scored ends that soup cancelled, not running', async () => {
    const run = (await post('/runs').send({ kind: 'sms', trainer: 'external', modelId: denseId, datasetId, m: 2, phases: 2, goalSparsity: 0.75, training: { epochs: 1 }, soup: { method: 'greedy' } }).expect(202)).body;
    let scoring: { id: string } | null = null;
    while (!scoring) {
      const task = await lease(['train', 'evaluate', 'recalibrate'], 1);
      if (!task) continue;
      if (task.kind === 'train') await trainBySeed(task);
      else scoring = task;
    }
    const phase = (await t.dataSource.query('SELECT soup_id FROM run_phase WHERE run_id = $1 AND index = 1', [run.id])) as { soup_id: string }[];
    expect(phase[0].soup_id).toBeTruthy();
    expect((await get(`/soups/${phase[0].soup_id}`).expect(200)).body.status).toBe('running');
    await post(`/runs/${run.id}/cancel`).expect(200);
    expect((await waitForRun(t, run.id)).status).toBe('cancelled');
    const soup = (await get(`/soups/${phase[0].soup_id}`).expect(200)).body;
    expect(soup).toMatchObject({ status: 'cancelled', error: 'its run was cancelled' });
    expect(soup.finishedAt).toBeTruthy();
  });

  it('an SMS phase evaluates once: a recalibration that sends val and test accuracy is the phase evaluation (no evaluate task)', async () => {
    const run = (await post('/runs').send({ kind: 'sms', trainer: 'external', modelId: denseId, datasetId, m: 2, phases: 1, goalSparsity: 0.5, training: { epochs: 1 } }).expect(202)).body;
    const kinds: string[] = [];
    while (!['succeeded', 'failed', 'cancelled'].includes((await get(`/runs/${run.id}`).expect(200)).body.status)) {
      const task = await lease(['train', 'evaluate', 'recalibrate'], 1);
      if (!task) continue;
      kinds.push(`${task.phase}:${task.kind}`);
      if (task.kind === 'train') await trainBySeed(task);
      else if (task.kind === 'recalibrate') {
        // The phase's candidates ride along: the trainer may measure their prediction ensemble too (a worker key may download them now).
        const candidates = (await get(`/runs/${run.id}`).expect(200)).body.candidates.map((c: { resultModelId: string }) => c.resultModelId);
        expect(task.ensemble.map((m: { id: string }) => m.id).sort()).toEqual([...candidates].sort());
        for (const m of task.ensemble) await download(m.url);
        await send(task.id, await download(task.model.url), { valAccuracy: 0.81, testAccuracy: 0.79, ece: 0.02, ensembleTestAccuracy: 0.83 }).expect(201);
        await get(task.ensemble[0].url, WORKER).expect(403);
      }
      else await send(task.id, null, { valAccuracy: 0.5, testAccuracy: 0.5 }).expect(201);
    }
    const done = await waitForRun(t, run.id);
    expect(done.status, done.error).toBe('succeeded');
    expect(kinds).toEqual(['1:train', '1:train', '1:recalibrate']);
    const [p] = (await t.dataSource.query('SELECT metrics FROM run_phase WHERE run_id = $1', [run.id])) as { metrics: Record<string, unknown> }[];
    expect(p.metrics).toMatchObject({ valAccuracy: 0.81, testAccuracy: 0.79, ece: 0.02, ensembleTestAccuracy: 0.83 });
    const report = (await get(`/runs/${run.id}/report`).expect(200)).body;
    expect(report.phases[0].ensembleTestAccuracy).toBe(0.83);
  });
});
