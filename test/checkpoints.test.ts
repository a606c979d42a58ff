import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from './support/app.js';
import { binaryParser } from './support/checkpoints.js';
import { artifactFiles } from './support/files.js';

const PROBLEM = /application\/problem\+json/;

function mlp(seed = 3) {
  return tf.sequential({
    layers: [
      tf.layers.dense({ name: 'fc1', inputShape: [12], units: 10, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed }) }),
      tf.layers.dense({ name: 'fc2', units: 6, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }) }),
      tf.layers.dense({ name: 'out', units: 3, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 2 }) }),
    ],
  });
}

/** What the converter's --quantize_uint8 writes: per weight min and scale, q = round((w − min) / scale). */
function quantizeUint8(values: Float32Array): { bytes: Uint8Array; min: number; scale: number } {
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  for (const v of values) {
    min = Math.min(min, v);
    max = Math.max(max, v);
  }
  const scale = max > min ? (max - min) / 255 : 1;
  return { bytes: Uint8Array.from(values, (v) => Math.round((v - min) / scale)), min, scale };
}

interface Folder {
  modelJson: Record<string, unknown>;
  /** Shard file name → bytes, in manifest order. */
  shards: [string, Uint8Array][];
  /** For tf.io.fromMemory: TensorFlow.js's own load of the same folder. */
  artifacts: tf.io.ModelArtifacts;
}

/** A converter-style folder: model.json with uint8-quantized kernels (float16 biases) and `shards` weight files. */
async function converterFolder(model: tf.LayersModel, shards: number): Promise<Folder> {
  let saved: tf.io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      saved = a;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  const specs: tf.io.WeightsManifestEntry[] = [];
  const parts: Uint8Array[] = [];
  for (const [i, w] of model.getWeights().entries()) {
    const spec = saved!.weightSpecs![i];
    const values = w.dataSync() as Float32Array;
    if (spec.name.endsWith('kernel')) {
      const q = quantizeUint8(values);
      specs.push({ ...spec, quantization: { dtype: 'uint8', min: q.min, scale: q.scale } });
      parts.push(q.bytes);
    } else {
      const h = new Uint16Array(values.length);
      for (let k = 0; k < values.length; k++) h[k] = f32ToF16Bits(values[k]);
      specs.push({ ...spec, quantization: { dtype: 'float16' } });
      parts.push(new Uint8Array(h.buffer));
    }
  }
  const all = new Uint8Array(Buffer.concat(parts));
  const size = Math.ceil(all.length / shards);
  const names = Array.from({ length: shards }, (_, i) => `group1-shard${i + 1}of${shards}`);
  const modelJson = { format: 'layers-model', generatedBy: 'test', convertedBy: 'converter-like test', modelTopology: saved!.modelTopology, weightsManifest: [{ paths: names, weights: specs }] };
  return {
    modelJson,
    shards: names.map((n, i) => [n, all.slice(i * size, (i + 1) * size)]),
    artifacts: { modelTopology: saved!.modelTopology, weightSpecs: specs, weightData: all.buffer.slice(0) },
  };
}

/** Half bits by round to nearest (exactness is not the point here: TensorFlow.js decodes the same bits). */
function f32ToF16Bits(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = ((u >>> 23) & 0xff) - 112;
  if (exp <= 0) return sign;
  if (exp >= 31) return sign | 0x7c00;
  return sign | (exp << 10) | ((u >>> 13) & 0x3ff);
}

function openFdsUnder(dir: string): string[] {
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(dir)) out.push(target);
    } catch {}
  }
  return out;
}

describe('real-world TensorFlow.js checkpoints over HTTP', () => {
  let t: TestApp;
  beforeAll(async () => {
    await tf.setBackend('cpu');
    t = await startTestApp({ MAX_UPLOAD_BYTES: String(64 * 1024) }, { listen: true });
  });
  afterAll(() => t?.close());

  const x = () => tf.randomUniform([7, 12], -1, 1, 'float32', 11);

  it('a converter folder (uint8 + float16 quantization, three shards) posted with curl as it lies on disk loads back and predicts as TensorFlow.js loads the folder', async () => {
    const folder = await converterFolder(mlp(), 3);
    const dir = mkdtempSync(join(t.config.dataDir, 'folder-'));
    writeFileSync(join(dir, 'model.json'), JSON.stringify(folder.modelJson));
    for (const [name, bytes] of folder.shards) writeFileSync(join(dir, name), bytes);
    // Shards in reverse order: the order of the parts does not matter, only their names.
    const args = ['-s', '-F', `model.json=@${join(dir, 'model.json')}`, ...[...folder.shards].reverse().flatMap(([n]) => ['-F', `${n}=@${join(dir, n)}`]), `${t.url}/models?name=quantized`];
    // Not execFileSync: the service runs in this process and must keep serving while curl waits.
    const created = JSON.parse((await promisify(execFile)('curl', ['--max-time', '60', ...args], { encoding: 'utf8' })).stdout) as { id: string; format: string; tensors: { name: string; dtype: string }[] };
    expect(created.format).toBe('tfjs-layers');
    expect(created.tensors.map((w) => w.dtype)).toEqual(['F32', 'F32', 'F32', 'F32', 'F32', 'F32']);

    const theirs = await tf.loadLayersModel(tf.io.fromMemory(folder.artifacts));
    const ours = await tf.loadLayersModel(`${t.url}/models/${created.id}/model.json`);
    expect(Array.from((ours.predict(x()) as tf.Tensor).dataSync())).toEqual(Array.from((theirs.predict(x()) as tf.Tensor).dataSync()));
    // The stored weights are TensorFlow.js's own decoding of the quantized bytes, bit for bit.
    const expected = theirs.getWeights().map((w) => Array.from(w.dataSync()));
    expect(ours.getWeights().map((w) => Array.from(w.dataSync()))).toEqual(expected);

    const pruned = (await request(t.http).post(`/models/${created.id}/prune`).send({ method: 'magnitude-global', sparsity: 0.6 }).expect(201)).body.model;
    const loaded = await tf.loadLayersModel(`${t.url}/models/${pruned.id}/model.json`);
    const kernels = loaded.getWeights().filter((_, i) => i % 2 === 0);
    const zeros = kernels.reduce((n, k) => n + Array.from(k.dataSync()).filter((v) => v === 0).length, 0);
    const total = kernels.reduce((n, k) => n + k.size, 0);
    expect(zeros).toBe(Math.round(0.6 * total));
    expect(pruned.prunableSparsity).toBeCloseTo(zeros / total, 10);
    // Provenance in the files a client downloads: model.json and the safetensors conversion.
    const mj = (await request(t.http).get(`/models/${pruned.id}/model.json`).expect(200)).body;
    expect(mj.userDefinedMetadata.sparsoup).toMatchObject({ modelId: pruned.id, parentIds: [created.id], maskId: pruned.maskId, maskHash: pruned.impliedMaskHash, origin: { kind: 'prune', method: 'magnitude-global', sparsity: 0.6 } });
    const st = (await request(t.http).get(`/models/${pruned.id}/safetensors`).buffer(true).parse(binaryParser).expect(200)).body as Buffer;
    const meta = JSON.parse(st.subarray(8, 8 + Number(st.readBigUInt64LE(0))).toString('utf8')).__metadata__;
    expect(meta).toMatchObject({ 'sparsoup.model_id': pruned.id, 'sparsoup.parents': JSON.stringify([created.id]), 'sparsoup.mask_hash': pruned.impliedMaskHash });
  });

  it('tf.io.http and a single model.weights.bin part still work beside named shards', async () => {
    const model = mlp(9);
    const saved = await model.save(tf.io.http(`${t.url}/models?name=http`));
    expect(saved.responses![0].status).toBe(201);
  });

  it('a graph model (MatMul + BiasAdd + Relu) posted as its folder loads back with tf.loadGraphModel, pruned, souped; training and evaluating it are refused', async () => {
    const f32 = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 7.1 + i * 1.7));
    const w = f32(4 * 3, 1);
    const b = f32(3, 2);
    const dt = { type: 'DT_FLOAT' };
    const modelJson = {
      format: 'graph-model',
      generatedBy: 'hand',
      convertedBy: 'hand',
      modelTopology: {
        node: [
          { name: 'x', op: 'Placeholder', attr: { dtype: dt, shape: { shape: { dim: [{ size: '-1' }, { size: '4' }] } } } },
          { name: 'dense/kernel', op: 'Const', attr: { dtype: dt, value: { tensor: { dtype: 'DT_FLOAT', tensorShape: { dim: [{ size: '4' }, { size: '3' }] } } } } },
          { name: 'dense/bias', op: 'Const', attr: { dtype: dt, value: { tensor: { dtype: 'DT_FLOAT', tensorShape: { dim: [{ size: '3' }] } } } } },
          { name: 'dense/MatMul', op: 'MatMul', input: ['x', 'dense/kernel'], attr: { T: dt, transpose_a: { b: false }, transpose_b: { b: false } } },
          { name: 'dense/BiasAdd', op: 'BiasAdd', input: ['dense/MatMul', 'dense/bias'], attr: { T: dt, data_format: { s: Buffer.from('NHWC').toString('base64') } } },
          { name: 'y', op: 'Relu', input: ['dense/BiasAdd'], attr: { T: dt } },
        ],
        versions: { producer: 1 },
      },
      weightsManifest: [{ paths: ['group1-shard1of1.bin'], weights: [{ name: 'dense/kernel', shape: [4, 3], dtype: 'float32' }, { name: 'dense/bias', shape: [3], dtype: 'float32' }] }],
    };
    const created = (
      await request(t.http)
        .post('/models?name=graph')
        .attach('model.json', Buffer.from(JSON.stringify(modelJson)), 'model.json')
        .attach('group1-shard1of1.bin', Buffer.concat([Buffer.from(w.buffer), Buffer.from(b.buffer)]), 'group1-shard1of1.bin')
        .expect(201)
    ).body;
    expect(created.format).toBe('tfjs-graph');
    expect(created.tensors.map((x: { prunable: boolean }) => x.prunable)).toEqual([true, false]);
    const input = tf.tensor2d([[1, -2, 0.5, 3], [0.1, 0.2, -0.3, 0.4]]);
    const expected = tf.relu(tf.add(tf.matMul(input, tf.tensor2d(w, [4, 3])), tf.tensor1d(b)));
    const loaded = await tf.loadGraphModel(`${t.url}/models/${created.id}/model.json`);
    expect(Array.from((loaded.predict(input) as tf.Tensor).dataSync())).toEqual(Array.from(expected.dataSync()));

    const pruned = (await request(t.http).post(`/models/${created.id}/prune`).send({ method: 'magnitude-global', sparsity: 0.5 }).expect(201)).body.model;
    expect(pruned.format).toBe('tfjs-graph');
    const prunedGraph = await tf.loadGraphModel(`${t.url}/models/${pruned.id}/model.json`);
    const kernel = Array.from(w);
    const threshold = [...kernel].map(Math.abs).sort((p, q) => p - q)[5];
    const kept = tf.tensor2d(kernel.map((v) => (Math.abs(v) > threshold ? v : 0)), [4, 3]);
    const prunedExpected = tf.relu(tf.add(tf.matMul(input, kept), tf.tensor1d(b)));
    expect(Array.from((prunedGraph.predict(input) as tf.Tensor).dataSync())).toEqual(Array.from(prunedExpected.dataSync()));

    const again = (await request(t.http).post(`/models/${created.id}/prune`).send({ method: 'magnitude-global', sparsity: 0.5 }).expect(201)).body.model;
    const soup = (await request(t.http).post('/soups').send({ modelIds: [pruned.id, again.id], method: 'uniform' }).expect(201)).body;
    const souped = (await request(t.http).get(`/models/${soup.resultModelId}`).expect(200)).body;
    expect(souped.format).toBe('tfjs-graph');
    const soupGraph = await tf.loadGraphModel(`${t.url}/models/${souped.id}/model.json`);
    expect(Array.from((soupGraph.predict(input) as tf.Tensor).dataSync())).toEqual(Array.from(prunedExpected.dataSync()));

    const run = await request(t.http).post('/runs').send({ kind: 'train', modelId: created.id, datasetId: 'mnist', training: { epochs: 0.01 } });
    expect(run.status).toBe(422);
    expect(run.body.detail).toMatch(/graph model/);
    const evaluation = await request(t.http).post(`/models/${created.id}/evaluations`).send({ datasetId: 'mnist', split: 'test' });
    expect(evaluation.status).toBe(422);
    expect(evaluation.body.detail).toMatch(/graph model/);
  });

  describe('bad uploads: a 4xx problem naming what is wrong, no row, no file, no open handle', () => {
    let folder: Folder;
    beforeAll(async () => {
      folder = await converterFolder(mlp(5), 3);
    });

    async function expectRefused(send: () => PromiseLike<{ status: number; headers: Record<string, string>; body: { detail?: string } }>, status: number, detail: RegExp) {
      const before = (await request(t.http).get('/models')).body.total;
      const filesBefore = artifactFiles(t.config.dataDir);
      const res = await send();
      expect(res.status).toBe(status);
      expect(res.headers['content-type']).toMatch(PROBLEM);
      expect(res.body.detail).toMatch(detail);
      expect((await request(t.http).get('/models')).body.total).toBe(before);
      expect(artifactFiles(t.config.dataDir)).toEqual(filesBefore);
      expect(openFdsUnder(join(t.config.dataDir, 'artifacts'))).toEqual([]);
    }
    const post = (modelJson: unknown, parts: [string, Uint8Array][], first: [string, Uint8Array][] = []) => {
      const r = request(t.http).post('/models?name=bad');
      for (const [n, b] of first) r.attach(n, Buffer.from(b), n);
      r.attach('model.json', Buffer.from(typeof modelJson === 'string' ? modelJson : JSON.stringify(modelJson)), 'model.json');
      for (const [n, b] of parts) r.attach(n, Buffer.from(b), n);
      return r;
    };
    const withWeights = (f: (w: tf.io.WeightsManifestEntry[]) => unknown[]) => ({ ...folder.modelJson, weightsManifest: [{ paths: folder.shards.map(([n]) => n), weights: f(folder.artifacts.weightSpecs!) }] });

    it('a missing shard is named', () => expectRefused(() => post(folder.modelJson, folder.shards.slice(0, 2)), 400, /"group1-shard3of3", which did not come/));
    it('an extra shard is named', () => expectRefused(() => post(folder.modelJson, [...folder.shards, ['group1-shard4of3', new Uint8Array(4)]]), 400, /part "group1-shard4of3" is not a weight file the manifest names/));
    it('a short shard is named', () => expectRefused(() => post(folder.modelJson, [folder.shards[0], folder.shards[1], ['group1-shard3of3', folder.shards[2][1].subarray(1)]]), 400, /group1-shard3of3.* bytes; the manifest names/));
    it('weights a byte too long', () => expectRefused(() => post(folder.modelJson, [folder.shards[0], folder.shards[1], ['group1-shard3of3', Buffer.concat([folder.shards[2][1], Buffer.alloc(1)])]]), 400, /bytes/));
    it('the concatenation a byte too long', () => {
      const all = Buffer.concat([...folder.shards.map(([, b]) => b), Buffer.alloc(1)]);
      return expectRefused(() => post(folder.modelJson, [['model.weights.bin', all]]), 400, /"model.weights.bin" has more bytes than the manifest names/);
    });
    it('a shard name with a path separator', () => expectRefused(() => post(folder.modelJson, [['sub/group1-shard1of3', folder.shards[0][1]]]), 400, /path separator/));
    it('a part sent twice', () => expectRefused(() => post(folder.modelJson, [folder.shards[0], folder.shards[0], folder.shards[1], folder.shards[2]]), 400, /"group1-shard1of3" was sent twice/));
    it('weights before model.json', () => expectRefused(() => post(folder.modelJson, folder.shards.slice(1), folder.shards.slice(0, 1)), 400, /came before model.json/));
    it('a second model.json', () => expectRefused(() => post(folder.modelJson, [['model.json', new Uint8Array(2)], ...folder.shards]), 400, /more than one model.json/));
    it('a manifest with weights: []', () => expectRefused(() => post(withWeights(() => []), folder.shards), 400, /weights is empty/));
    it('a manifest with no weights at all', () => expectRefused(() => post({ ...folder.modelJson, weightsManifest: [] }, []), 400, /no weights/));
    it('a weight named twice in the manifest', () => expectRefused(() => post(withWeights((w) => [...w, w[0]]), folder.shards), 400, /listed twice/));
    it('an unknown quantization dtype', () => expectRefused(() => post(withWeights((w) => w.map((s, i) => (i ? s : { ...s, quantization: { dtype: 'int4', min: 0, scale: 1 } }))), folder.shards), 422, /quantization dtype "int4"/));
    it('a scale that is not finite', () => {
      const text = JSON.stringify(withWeights((w) => w.map((s, i) => (i ? s : { ...s, quantization: { dtype: 'uint8', min: 0, scale: 12345 } })))).replace('12345', '1e999');
      return expectRefused(() => post(text, folder.shards), 400, /scale Infinity is not a finite number/);
    });
    it('a form field instead of a file', () => expectRefused(() => request(t.http).post('/models?name=bad').field('model.json', '{}'), 400, /unexpected field/));
    it('a chunked body over MAX_UPLOAD_BYTES counts as a whole (413)', async () => {
      // model.json may be large (64 MiB): padded past the body limit, it is the whole body that is refused.
      const padded = `${JSON.stringify(folder.modelJson)}${' '.repeat(80 * 1024)}`;
      await expectRefused(() => rawMultipart(t.url, padded, folder.shards, { chunked: true }), 413, /limit/);
    });
    it('a multipart body whose closing boundary never comes (400), and the service keeps serving', async () => {
      await expectRefused(() => rawMultipart(t.url, folder.modelJson, folder.shards, { chunked: true, unterminated: true }), 400, /malformed multipart body|Unexpected end/i);
      await request(t.http).get('/health').expect(200);
    });
    it('a client that cuts the connection mid-upload leaves nothing behind', async () => {
      const filesBefore = artifactFiles(t.config.dataDir);
      const before = (await request(t.http).get('/models')).body.total;
      await cutUpload(t.url, folder.modelJson, folder.shards);
      // The server notices the cut asynchronously: wait (by polling, not by time) until it has cleaned up.
      for (let i = 0; i < 200 && (artifactFiles(t.config.dataDir).length !== filesBefore.length || openFdsUnder(join(t.config.dataDir, 'artifacts')).length); i++) {
        await new Promise((r) => setTimeout(r, 25));
      }
      expect(artifactFiles(t.config.dataDir)).toEqual(filesBefore);
      expect(openFdsUnder(join(t.config.dataDir, 'artifacts'))).toEqual([]);
      expect((await request(t.http).get('/models')).body.total).toBe(before);
      await request(t.http).get('/health').expect(200);
    });
  });
});

const BOUNDARY = 'sparsoup-test-boundary';

function multipartBody(modelJson: unknown, parts: [string, Uint8Array][], unterminated = false): Buffer {
  const chunks: Buffer[] = [];
  const json = typeof modelJson === 'string' ? modelJson : JSON.stringify(modelJson);
  for (const [name, bytes] of [['model.json', Buffer.from(json)] as [string, Uint8Array], ...parts]) {
    chunks.push(Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="${name}"; filename="${name}"\r\nContent-Type: application/octet-stream\r\n\r\n`));
    chunks.push(Buffer.from(bytes));
    chunks.push(Buffer.from('\r\n'));
  }
  if (!unterminated) chunks.push(Buffer.from(`--${BOUNDARY}--\r\n`));
  return Buffer.concat(chunks);
}

/** POSTs over a raw socket (chunked: no Content-Length) and parses the answer. */
function rawMultipart(base: string, modelJson: unknown, parts: [string, Uint8Array][], opts: { chunked?: boolean; unterminated?: boolean }) {
  const url = new URL(base);
  const body = multipartBody(modelJson, parts, opts.unterminated);
  return new Promise<{ status: number; headers: Record<string, string>; body: { detail?: string } }>((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname);
    const received: Buffer[] = [];
    socket.on('data', (c) => received.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(received).toString('utf8');
      const [head, ...rest] = text.split('\r\n\r\n');
      const lines = head.split('\r\n');
      const headers: Record<string, string> = {};
      for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
      }
      let payload = rest.join('\r\n\r\n');
      if (headers['transfer-encoding'] === 'chunked') payload = payload.replace(/^[0-9a-f]+\r\n/, '').replace(/\r\n0\r\n\r\n$/, '');
      resolve({ status: Number(lines[0].split(' ')[1]), headers, body: JSON.parse(payload || '{}') });
    });
    socket.write(`POST /models?name=raw HTTP/1.1\r\nHost: ${url.host}\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=${BOUNDARY}\r\nTransfer-Encoding: chunked\r\n\r\n`);
    for (let i = 0; i < body.length; i += 8192) {
      const piece = body.subarray(i, i + 8192);
      socket.write(`${piece.length.toString(16)}\r\n`);
      socket.write(piece);
      socket.write('\r\n');
    }
    socket.write('0\r\n\r\n');
  });
}

/** Sends model.json and half of the weights, then destroys the socket. */
function cutUpload(base: string, modelJson: unknown, parts: [string, Uint8Array][]) {
  const url = new URL(base);
  const body = multipartBody(modelJson, parts);
  return new Promise<void>((resolve) => {
    const socket = connect(Number(url.port), url.hostname, () => {
      socket.write(`POST /models?name=cut HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: multipart/form-data; boundary=${BOUNDARY}\r\nContent-Length: ${body.length}\r\n\r\n`);
      socket.write(body.subarray(0, Math.floor(body.length * 0.6)), () => {
        setTimeout(() => {
          socket.destroy();
          resolve();
        }, 50);
      });
    });
    socket.on('error', () => resolve());
  });
}
