import * as tf from '@tensorflow/tfjs';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SafetensorsWriter } from '../src/core/checkpoint/safetensors.js';
import { startTestApp, type TestApp } from './support/app.js';
import { artifactFiles } from './support/files.js';

const PROBLEM = /application\/problem\+json/;

async function safetensorsBytes(tensors: { name: string; dtype: 'F32' | 'F16'; shape: number[]; data: Float32Array }[], metadata: Record<string, string> = {}) {
  const chunks: Uint8Array[] = [];
  const w = new SafetensorsWriter(tensors.map(({ name, dtype, shape }) => ({ name, dtype, shape })), metadata, async (c) => {
    chunks.push(c.slice());
  });
  for (const t of tensors) await w.writeTensor(t.name, t.data);
  await w.finish();
  return Buffer.concat(chunks);
}

function lenet(seed = 1) {
  return tf.sequential({
    layers: [
      tf.layers.dense({ name: 'fc1', inputShape: [16], units: 8, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed }) }),
      tf.layers.dense({ name: 'fc2', units: 4, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }) }),
    ],
  });
}

describe('models over HTTP', () => {
  let t: TestApp;
  beforeAll(async () => {
    await tf.setBackend('cpu');
    t = await startTestApp({ MAX_UPLOAD_BYTES: String(1024 * 1024) }, { listen: true });
  });
  afterAll(() => t?.close());

  it('takes a model saved with tf.io.http and gives it back to tf.loadLayersModel with identical predictions', async () => {
    const model = lenet();
    const saved = await model.save(tf.io.http(`${t.url}/models?name=lenet`));
    const response = saved.responses![0];
    expect(response.status).toBe(201);
    const created = (await response.json()) as { id: string; tensors: { name: string; prunable: boolean }[] };
    expect(created).toMatchObject({ name: 'lenet', format: 'tfjs-layers', paramCount: 16 * 8 + 8 + 8 * 4 + 4, parentIds: [], nonFinite: false });
    expect(created.tensors.map((x: { name: string }) => x.name)).toEqual(['fc1/kernel', 'fc1/bias', 'fc2/kernel', 'fc2/bias']);
    expect(created.tensors.find((x: { name: string }) => x.name === 'fc1/kernel')?.prunable).toBe(true);
    expect(created.tensors.find((x: { name: string }) => x.name === 'fc1/bias')?.prunable).toBe(false);

    const loaded = await tf.loadLayersModel(`${t.url}/models/${created.id}/model.json`);
    const x = tf.randomUniform([5, 16], 0, 1, 'float32', 7);
    expect(Array.from((loaded.predict(x) as tf.Tensor).dataSync())).toEqual(Array.from((model.predict(x) as tf.Tensor).dataSync()));
  });

  it('converts a TensorFlow.js model to safetensors keeping its weight names', async () => {
    const model = lenet(5);
    const created = (await (await model.save(tf.io.http(`${t.url}/models?name=lenet-st`))).responses![0].json()) as { id: string; paramCount: number };
    const res = await request(t.http).get(`/models/${created.id}/safetensors`).buffer(true).parse((r, cb) => {
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.on('end', () => cb(null, Buffer.concat(chunks)));
    }).expect(200);
    const back = await request(t.http).post('/models?name=converted').set('content-type', 'application/octet-stream').send(res.body).expect(201);
    expect(back.body.tensors.map((x: { name: string }) => x.name)).toEqual(['fc1/kernel', 'fc1/bias', 'fc2/kernel', 'fc2/bias']);
    expect(back.body.paramCount).toBe(created.paramCount);
    const kernel = model.getWeights()[0].dataSync();
    const stHeaderLen = Number(res.body.readBigUInt64LE(0));
    const stKernel = new Float32Array(res.body.buffer.slice(res.body.byteOffset + 8 + stHeaderLen, res.body.byteOffset + 8 + stHeaderLen + kernel.length * 4));
    expect(Array.from(stKernel)).toEqual(Array.from(kernel));
  });

  it('stores a safetensors upload, reports sparsity, and gives back the same bytes', async () => {
    const data = new Float32Array([0, 1, 0, 2, 0, 3]);
    const bytes = await safetensorsBytes([
      { name: 'layer.weight', dtype: 'F32', shape: [2, 3], data },
      { name: 'layer.bias', dtype: 'F16', shape: [2], data: new Float32Array([0.5, 0]) },
    ], { producer: 'test' });
    const res = await request(t.http).post('/models?name=tiny').set('content-type', 'application/octet-stream').send(bytes).expect(201);
    expect(res.body).toMatchObject({ format: 'safetensors', paramCount: 8, sizeBytes: bytes.length, metadata: { producer: 'test' } });
    expect(res.body.sparsity).toBeCloseTo(4 / 8);
    expect(res.body.prunableSparsity).toBeCloseTo(3 / 6);
    const again = await request(t.http).post('/models?name=tiny-again').set('content-type', 'application/octet-stream').send(bytes).expect(201);
    expect(again.body.sha256).toBe(res.body.sha256);
    const files = artifactFiles(t.config.dataDir).filter((f) => f.includes(res.body.sha256));
    expect(files).toHaveLength(1);
    const down = await request(t.http).get(`/models/${res.body.id}/safetensors`).buffer(true).parse((r, cb) => {
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.on('end', () => cb(null, Buffer.concat(chunks)));
    }).expect(200);
    expect(Buffer.compare(down.body, bytes)).toBe(0);
  });

  it('lists, filters, fetches and deletes models', async () => {
    const bytes = await safetensorsBytes([{ name: 'w', dtype: 'F32', shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) }]);
    const a = await request(t.http).post('/models?name=listme').set('content-type', 'application/octet-stream').send(bytes).expect(201);
    const list = await request(t.http).get('/models?name=listme').expect(200);
    expect(list.body).toMatchObject({ total: 1, limit: 50, offset: 0 });
    expect(list.body.items[0].id).toBe(a.body.id);
    await request(t.http).get(`/models/${a.body.id}`).expect(200);
    await request(t.http).delete(`/models/${a.body.id}`).expect(204);
    const gone = await request(t.http).get(`/models/${a.body.id}`).expect(404);
    expect(gone.headers['content-type']).toMatch(PROBLEM);
    await request(t.http).get('/models/not-a-uuid').expect(400);
  });

  it('flags NaN and infinite weights but accepts them', async () => {
    const bytes = await safetensorsBytes([{ name: 'w', dtype: 'F32', shape: [3], data: new Float32Array([1, Number.NaN, Number.POSITIVE_INFINITY]) }]);
    const res = await request(t.http).post('/models?name=nan').set('content-type', 'application/octet-stream').send(bytes).expect(201);
    expect(res.body.nonFinite).toBe(true);
  });

  describe('bad input: a 4xx problem, no row, no file', () => {
    async function expectRefused(req: request.Test, status: number, detail: RegExp) {
      const before = (await request(t.http).get('/models')).body.total;
      const filesBefore = artifactFiles(t.config.dataDir);
      const res = await req;
      expect(res.status).toBe(status);
      expect(res.headers['content-type']).toMatch(PROBLEM);
      expect(res.body.detail).toMatch(detail);
      expect((await request(t.http).get('/models')).body.total).toBe(before);
      expect(artifactFiles(t.config.dataDir)).toEqual(filesBefore);
      return res;
    }
    const post = (body: Buffer | string, type = 'application/octet-stream') =>
      request(t.http).post('/models?name=bad').set('content-type', type).send(body);

    it('malformed header JSON', async () => {
      const json = Buffer.from('{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]');
      const head = Buffer.alloc(8);
      head.writeBigUInt64LE(BigInt(json.length));
      await expectRefused(post(Buffer.concat([head, json, Buffer.alloc(4)])), 400, /JSON|header/i);
    });
    it('a header length beyond the body', async () => {
      const head = Buffer.alloc(8);
      head.writeBigUInt64LE(10_000n);
      await expectRefused(post(Buffer.concat([head, Buffer.from('{}')])), 400, /header|length|truncated|short/i);
    });
    it('29 bytes of garbage whose length prefix claims exabytes: invalid input (400), not a large body, the length exact as a string', async () => {
      const garbage = Buffer.concat([Buffer.from('this is not a safetensors file', 'latin1')]).subarray(0, 29);
      const claimed = garbage.readBigUInt64LE(0);
      expect(claimed > BigInt(Number.MAX_SAFE_INTEGER)).toBe(true);
      const res = await expectRefused(post(garbage), 400, /header length \d+ exceeds the limit/);
      expect(res.body.type).toMatch(/invalid-safetensors$/);
      expect(res.body.headerLength).toBe(claimed.toString());
    });
    it('a truncated body', async () => {
      const bytes = await safetensorsBytes([{ name: 'w', dtype: 'F32', shape: [64], data: new Float32Array(64) }]);
      await expectRefused(post(bytes.subarray(0, bytes.length - 10)), 400, /bytes|short|truncated|ends/i);
    });
    it('a byte range that does not match dtype × shape', async () => {
      const json = Buffer.from(JSON.stringify({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }));
      const head = Buffer.alloc(8);
      head.writeBigUInt64LE(BigInt(json.length));
      await expectRefused(post(Buffer.concat([head, json, Buffer.alloc(8)])), 400, /w/);
    });
    const rawHeader = (json: string, dataBytes: number) => {
      const head = Buffer.alloc(8);
      head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
      return Buffer.concat([head, Buffer.from(json), Buffer.alloc(dataBytes)]);
    };
    it('a tensor name or metadata the database cannot store (NUL, lone surrogate, too long)', async () => {
      const tensor = (name: string) => `${JSON.stringify(name)}:{"dtype":"F32","shape":[1],"data_offsets":[0,4]}`;
      await expectRefused(post(rawHeader(`{${tensor('w\u0000')}}`, 4)), 400, /tensor name .*NUL/);
      await expectRefused(post(rawHeader(`{"w\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 4)), 400, /lone surrogate/);
      await expectRefused(post(rawHeader(`{${tensor('w'.repeat(1025))}}`, 4)), 400, /at most 1024 characters/);
      await expectRefused(post(rawHeader(`{"__metadata__":{"k":"v\\u0000"},${tensor('w')}}`, 4)), 400, /metadata value for key "k" .*NUL/);
      await expectRefused(post(rawHeader(`{"__metadata__":{"\\udc00":"v"},${tensor('w')}}`, 4)), 400, /metadata key .*lone surrogate/);
    });
    it('deeply nested JSON in a header field', async () => {
      await expectRefused(post(rawHeader(`{"w":{"dtype":"F32","shape":${'['.repeat(20000)}${']'.repeat(20000)},"data_offsets":[0,4]}}`, 4)), 400, /nests 20002 levels/);
    });
    it('a name query the database cannot store', async () => {
      for (const q of ['%00', 'a'.repeat(201)]) {
        const res = await request(t.http).get(`/models?name=${q}`);
        expect(res.status, q).toBe(400);
        expect(res.headers['content-type']).toMatch(PROBLEM);
      }
    });
    it('a body over MAX_UPLOAD_BYTES (413)', async () => {
      await expectRefused(post(Buffer.alloc(2 * 1024 * 1024)), 413, /limit/i);
    });
    it('an unsupported content type (415)', async () => {
      await expectRefused(post('hello', 'text/plain'), 415, /octet-stream/);
    });
    it('a missing name (400)', async () => {
      const res = await request(t.http).post('/models').set('content-type', 'application/octet-stream').send(Buffer.alloc(8));
      expect(res.status).toBe(400);
      expect(res.body.errors[0].field).toBe('name');
    });
    it('a weights manifest whose sizes do not add up to the upload', async () => {
      const model = lenet();
      let artifacts: tf.io.ModelArtifacts | undefined;
      await model.save(tf.io.withSaveHandler(async (a) => {
        artifacts = a;
        return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
      }));
      const manifest = { modelTopology: artifacts!.modelTopology, format: 'layers-model', weightsManifest: [{ paths: ['./model.weights.bin'], weights: artifacts!.weightSpecs }] };
      const weights = Buffer.from(artifacts!.weightData as ArrayBuffer);
      const req = request(t.http).post('/models?name=bad-manifest')
        .attach('model.json', Buffer.from(JSON.stringify(manifest)), 'model.json')
        .attach('model.weights.bin', weights.subarray(0, weights.length - 4), 'model.weights.bin');
      await expectRefused(req, 400, /bytes/);
    });
    it('weight paths that try to leave their folder', async () => {
      const manifest = { modelTopology: {}, weightsManifest: [{ paths: ['../../etc/passwd'], weights: [{ name: 'w', shape: [1], dtype: 'float32' }] }] };
      const req = request(t.http).post('/models?name=evil')
        .attach('model.json', Buffer.from(JSON.stringify(manifest)), 'model.json')
        .attach('model.weights.bin', Buffer.alloc(4), 'model.weights.bin');
      await expectRefused(req, 400, /path/i);
    });
  });
});
