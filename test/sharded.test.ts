import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from './support/app.js';
import { binaryParser } from './support/checkpoints.js';
import { artifactFiles } from './support/files.js';

const run = promisify(execFile);
const SCRIPT = join(import.meta.dirname, 'fixtures/sharded/torch_shards.py');
const PYTHON = '/usr/bin/python3';
const INDEX = 'model.safetensors.index.json';
const hasTorch = await run(PYTHON, ['-c', 'import torch']).then(
  () => true,
  () => false,
);

const binary = binaryParser;

// CI installs Debian's torch and sets SPARSOUP_REQUIRE_TORCH, so a missing torch fails there instead of skipping.
if (!hasTorch && process.env.SPARSOUP_REQUIRE_TORCH) throw new Error(`SPARSOUP_REQUIRE_TORCH is set but ${PYTHON} cannot import torch`);
if (!hasTorch) console.warn(`skipping the sharded-safetensors tests: ${PYTHON} cannot import torch (apt-get install python3-torch)`);

describe.skipIf(!hasTorch)('Hugging Face sharded safetensors over HTTP (a PyTorch state_dict in three shards)', () => {
  let t: TestApp;
  let folder: string;
  let written: { tensors: string[]; shards: Record<string, string> };
  const files = () => readdirSync(folder).filter((f) => f !== INDEX).sort();
  const post = (parts: [string, Buffer][]) => {
    const r = request(t.http).post('/models?name=sharded');
    for (const [n, b] of parts) r.attach(n, b, n);
    return r;
  };
  const folderParts = (): [string, Buffer][] => [[INDEX, readFileSync(join(folder, INDEX))], ...files().reverse().map((f): [string, Buffer] => [f, readFileSync(join(folder, f))])];

  beforeAll(async () => {
    t = await startTestApp({}, { listen: true });
    folder = mkdtempSync(join(t.config.dataDir, 'hf-'));
    written = JSON.parse((await run(PYTHON, [SCRIPT, 'write', folder])).stdout);
  });
  afterAll(() => t?.close());

  it('posts as one model, prunes to the exact count across shards, and comes back as index + shards that load_state_dict(strict=True) accepts', async () => {
    const created = (await post(folderParts()).expect(201)).body;
    expect(created.format).toBe('safetensors');
    expect(created.tensors.map((x: { name: string }) => x.name)).toEqual(written.tensors);
    expect(created.files.map((f: { name: string }) => f.name)).toEqual([INDEX, ...files()]);
    // Each shard comes back with the same tensors in the same order and the same tensor bytes (the
    // header is re-encoded compactly, so the files are not byte-identical to Python's).
    const split = (b: Buffer) => {
      const n = Number(b.readBigUInt64LE(0));
      const h = JSON.parse(b.subarray(8, 8 + n).toString('utf8'));
      return { names: Object.keys(h).filter((k) => k !== '__metadata__'), data: b.subarray(8 + n) };
    };
    for (const f of files()) {
      const res = await request(t.http).get(`/models/${created.id}/files/${f}`).buffer(true).parse(binary).expect(200);
      const [ours, theirs] = [split(res.body), split(readFileSync(join(folder, f)))];
      expect(ours.names).toEqual(theirs.names);
      expect(Buffer.compare(ours.data, theirs.data)).toBe(0);
    }

    const pruned = (await request(t.http).post(`/models/${created.id}/prune`).send({ method: 'magnitude-global', sparsity: 0.5 }).expect(201)).body.model;
    expect(pruned.files.map((f: { name: string }) => f.name)).toEqual([INDEX, ...files()]);
    const listed = (await request(t.http).get(`/models/${pruned.id}/files`).expect(200)).body;
    expect(listed).toEqual(pruned.files);
    const out = mkdtempSync(join(t.config.dataDir, 'back-'));
    for (const f of listed as { name: string; sizeBytes: number }[]) {
      const res = await request(t.http).get(`/models/${pruned.id}/files/${f.name}`).buffer(true).parse(binary).expect(200);
      expect(res.body.length).toBe(f.sizeBytes);
      writeFileSync(join(out, f.name), res.body);
    }
    const index = JSON.parse(readFileSync(join(out, INDEX), 'utf8'));
    expect(index.weight_map).toEqual(written.shards);
    const loaded = JSON.parse((await run(PYTHON, [SCRIPT, 'load', out])).stdout);
    expect(loaded).toEqual({ loaded: true, zeros: Math.round(0.5 * 2500), size: 2500 });

    // The whole model as one file still.
    const whole = await request(t.http).get(`/models/${pruned.id}/safetensors`).buffer(true).parse(binary).expect(200);
    const header = JSON.parse(whole.body.subarray(8, 8 + Number(whole.body.readBigUInt64LE(0))).toString('utf8'));
    expect(Object.keys(header).filter((k) => k !== '__metadata__').sort()).toEqual([...written.tensors].sort());
    // Provenance, in the whole file and in every shard: id, parents, how it was made, the mask.
    const shardHeader = (b: Buffer) => JSON.parse(b.subarray(8, 8 + Number(b.readBigUInt64LE(0))).toString('utf8')).__metadata__;
    for (const meta of [header.__metadata__, shardHeader(readFileSync(join(out, files()[0])))]) {
      expect(meta).toMatchObject({ format: 'pt', 'sparsoup.model_id': pruned.id, 'sparsoup.parents': JSON.stringify([created.id]), 'sparsoup.mask_id': pruned.maskId, 'sparsoup.mask_hash': pruned.impliedMaskHash });
      expect(JSON.parse(meta['sparsoup.origin'])).toMatchObject({ kind: 'prune', method: 'magnitude-global', sparsity: 0.5 });
    }
    await request(t.http).get(`/models/${pruned.id}/files/nope.safetensors`).expect(404);
  });

  it('the CLI uploads the folder and downloads it back as index + shards', async () => {
    const cli = (args: string[]) => run(process.execPath, ['dist/src/cli/main.js', ...args, '--json'], { env: { ...process.env, NO_COLOR: '1', SPARSOUP_URL: t.url } });
    const created = JSON.parse((await cli(['models', 'upload', folder, '--name', 'from-cli'])).stdout);
    expect(created.files.map((f: { name: string }) => f.name)).toEqual([INDEX, ...files()]);
    const out = join(t.config.dataDir, 'cli-out');
    const got = JSON.parse((await cli(['models', 'download', created.id, '--format', 'files', '-o', out])).stdout);
    expect(got.files.map((f: { file: string }) => f.file)).toEqual([INDEX, ...files()].map((f) => join(out, f)));
    expect(JSON.parse(readFileSync(join(out, INDEX), 'utf8')).weight_map).toEqual(written.shards);
    expect(JSON.parse((await run(PYTHON, [SCRIPT, 'load', out])).stdout).loaded).toBe(true);
  });

  describe('bad folders: a 4xx problem naming what is wrong, no row, no file', () => {
    async function expectRefused(parts: [string, Buffer][], detail: RegExp) {
      const before = (await request(t.http).get('/models')).body.total;
      const filesBefore = artifactFiles(t.config.dataDir);
      const res = await post(parts);
      expect(res.status).toBe(400);
      expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
      expect(res.body.detail).toMatch(detail);
      expect((await request(t.http).get('/models')).body.total).toBe(before);
      expect(artifactFiles(t.config.dataDir)).toEqual(filesBefore);
    }
    const withIndex = (index: string): [string, Buffer][] => [[INDEX, Buffer.from(index)], ...folderParts().slice(1)];
    const indexText = () => readFileSync(join(folder, INDEX), 'utf8');

    it('a shard the index names that never arrives', () => expectRefused(folderParts().slice(0, 3), /model-00001-of-00003.safetensors", which did not come/));
    it('a part the index does not name', () => expectRefused([...folderParts(), ['extra.safetensors', Buffer.alloc(8)]], /part "extra.safetensors" is not a shard the index names/));
    it('a tensor the index puts in another shard', () => expectRefused(withIndex(indexText().replace('"0.bias": "model-00001-of-00003.safetensors"', '"0.bias": "model-00002-of-00003.safetensors"')), /holds tensor 0.bias, which the index puts in "model-00002-of-00003.safetensors"|lacks tensor 0.bias/));
    it('a tensor twice in the index', () => expectRefused(withIndex(indexText().replace('"weight_map": {', '"weight_map": {\n "0.bias": "model-00002-of-00003.safetensors",')), /has the key "0.bias" twice/));
    it('a shard name with a path separator', () => expectRefused(withIndex(indexText().replaceAll('model-00003-of-00003', '../model-00003-of-00003')), /path separator/));
    it('a truncated shard', () => {
      const parts = folderParts();
      parts[1] = [parts[1][0], parts[1][1].subarray(0, parts[1][1].length - 3)];
      return expectRefused(parts, /shorter than its header describes/);
    });
  });
});
