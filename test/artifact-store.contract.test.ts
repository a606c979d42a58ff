/**
 * The artifact store's contract, run against both implementations: the folder, and a bucket on a
 * real S3 protocol server (s3rver in a child process, spoken to by the AWS SDK over HTTP; no mocks).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeSafetensorsHeader, openSafetensors } from '../src/core/checkpoint/safetensors.js';
import { type ArtifactStore, UploadTooLargeError } from '../src/storage/artifact-store.js';
import { FsArtifactStore } from '../src/storage/fs-artifact-store.js';
import { S3ArtifactStore, type S3ByteSource } from '../src/storage/s3-artifact-store.js';
import { type S3Server, startS3Server } from './support/s3rver.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const MiB = 1024 * 1024;

let server: S3Server;
let scratch: string;
let n = 0;

beforeAll(async () => {
  server = await startS3Server();
  scratch = mkdtempSync(join(tmpdir(), 'sparsoup-contract-'));
});
afterAll(async () => {
  await server?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

/** Every file below `dir` (recursively). */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true }).filter((d) => d.isFile()).map((d) => join(d.parentPath, d.name));
}

interface Harness {
  store: ArtifactStore;
  /** Every object or file the store holds, seen from outside it (the folder, the server's files). */
  residue(): string[];
  /** Leaves what a crash between upload and commit leaves. */
  leaveTemp(): Promise<void>;
}

function s3Store(prefix: string, cacheBytes: number, extra: { handedOutGraceMs?: number } = {}): S3ArtifactStore {
  return new S3ArtifactStore({
    bucket: server.bucket,
    prefix,
    region: 'us-east-1',
    endpoint: server.endpoint,
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    tmpDir: join(scratch, `spool-${prefix.replace(/\W/g, '')}`),
    cache: { dir: join(scratch, 'cache'), maxBytes: cacheBytes, ...extra },
    partSize: 5 * MiB,
    listPageSize: 2,
  });
}

const kinds: Record<string, () => Promise<Harness>> = {
  folder: async () => {
    const store = new FsArtifactStore(mkdtempSync(join(scratch, 'fs-')));
    await store.init();
    return {
      store,
      residue: () => filesUnder(store.root),
      leaveTemp: async () => {
        const w = await store.createWriter();
        await w.write(new Uint8Array([9, 9]));
      },
    };
  },
  s3: async () => {
    const prefix = `contract-${++n}/`;
    const store = s3Store(prefix, 64 * MiB);
    await store.init();
    const uploads = join(server.dir, server.bucket, '._S3rver_uploads');
    return {
      store,
      // Objects under the prefix, and parts of multipart uploads that were never completed or aborted.
      residue: () => [...filesUnder(join(server.dir, server.bucket, prefix.slice(0, -1))), ...filesUnder(uploads)].filter((f) => f.endsWith('._S3rver_object') || f.includes('._S3rver_uploads')),
      leaveTemp: async () => {
        await store.client.send(new PutObjectCommand({ Bucket: server.bucket, Key: `${prefix}tmp/crashed-write`, Body: 'partial' }));
      },
    };
  },
};

async function collect(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function pattern(size: number, seed = 1): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

for (const [kind, make] of Object.entries(kinds)) {
  describe(`artifact store contract: ${kind}`, () => {
    it('stores bytes under their sha256, de-duplicates, and answers has/size', async () => {
      const { store, residue } = await make();
      const bytes = new TextEncoder().encode('hello sparse world');
      const a = await store.put(bytes);
      expect(a).toEqual({ sha256: sha(bytes), sizeBytes: bytes.length, created: true });
      const b = await store.put((async function* () { yield bytes.subarray(0, 5); yield bytes.subarray(5); })());
      expect(b).toEqual({ ...a, created: false });
      expect(await store.has(a.sha256)).toBe(true);
      expect(await store.has(sha(new Uint8Array([1])))).toBe(false);
      expect(await store.size(a.sha256)).toBe(bytes.length);
      expect(Buffer.from(await store.readBytes(a.sha256)).toString()).toBe('hello sparse world');
      expect(readFileSync(await store.localPath(a.sha256)).toString()).toBe('hello sparse world');
      expect(residue()).toHaveLength(1);
      await store.close();
    });

    it('streams a multipart-sized write and reads ranges back (stream, readBytes, past the end)', async () => {
      const { store } = await make();
      const bytes = pattern(11 * MiB + 123);
      const { sha256, sizeBytes } = await store.put((async function* () { for (let o = 0; o < bytes.length; o += 1 << 20) yield bytes.subarray(o, o + (1 << 20)); })());
      expect(sha256).toBe(sha(bytes));
      expect(sizeBytes).toBe(bytes.length);
      const at = 6 * MiB - 7;
      expect((await collect(store.read(sha256, { start: at, end: at + 1000 }))).equals(Buffer.from(bytes.subarray(at, at + 1000)))).toBe(true);
      expect(Buffer.from(await store.readBytes(sha256, { start: 10, end: 20 })).equals(Buffer.from(bytes.subarray(10, 20)))).toBe(true);
      expect(Buffer.from(await store.readBytes(sha256, { start: bytes.length - 5, end: bytes.length + 50 })).equals(Buffer.from(bytes.subarray(bytes.length - 5)))).toBe(true);
      expect(await store.readBytes(sha256, { start: bytes.length + 10, end: bytes.length + 20 })).toHaveLength(0);
      expect(sha(new Uint8Array(await collect(store.read(sha256))))).toBe(sha256);
      await store.close();
    });

    it('opens a safetensors checkpoint for random access and reads it tensor by tensor', async () => {
      const { store } = await make();
      const a = Float32Array.from({ length: 300 }, (_, i) => i / 7);
      const b = Float32Array.from({ length: 50 }, (_, i) => -i);
      const header = encodeSafetensorsHeader([{ name: 'a', dtype: 'F32', shape: [30, 10] }, { name: 'b', dtype: 'F32', shape: [50] }]);
      const file = Buffer.concat([header, Buffer.from(a.buffer), Buffer.from(b.buffer)]);
      const { sha256 } = await store.put(file);
      const reader = await openSafetensors(await store.randomAccess(sha256));
      expect(reader.tensors.map((t) => t.name)).toEqual(['a', 'b']);
      expect([...(await reader.readFloat32('b'))]).toEqual([...b]);
      expect([...(await reader.readFloat32('a'))]).toEqual([...a]);
      await reader.close();
      await store.close();
    });

    it('lists every object (across pages) and deletes', async () => {
      const { store, residue } = await make();
      const put = [];
      for (let i = 0; i < 5; i++) put.push((await store.put(new Uint8Array([i, i, i]))).sha256);
      const listed = [];
      for await (const o of store.list()) listed.push(o.sha256);
      expect(listed.sort()).toEqual([...put].sort());
      await store.delete(put[0]);
      expect(await store.has(put[0])).toBe(false);
      const after = [];
      for await (const o of store.list()) after.push(o.sha256);
      expect(after.sort()).toEqual(put.slice(1).sort());
      expect(residue()).toHaveLength(4);
      await store.close();
    });

    it('leaves no object and no parts when the source fails mid-write (multipart) or the writer is aborted', async () => {
      const { store, residue } = await make();
      async function* failing() {
        for (let i = 0; i < 12; i++) yield pattern(MiB, i + 1);
        throw new Error('connection reset');
      }
      await expect(store.put(failing())).rejects.toThrow('connection reset');
      const w = await store.createWriter();
      await w.write(pattern(7 * MiB));
      await w.abort();
      await w.abort(); // twice is fine
      expect(residue()).toEqual([]);
      for await (const o of store.list()) throw new Error(`left ${o.sha256}`);
      await store.close();
    });

    it('refuses past maxBytes with UploadTooLargeError and leaves nothing', async () => {
      const { store, residue } = await make();
      let chunksRead = 0;
      async function* big() {
        for (let i = 0; i < 40; i++) {
          chunksRead++;
          yield pattern(MiB, i);
        }
      }
      await expect(store.put(big(), { maxBytes: 6 * MiB })).rejects.toBeInstanceOf(UploadTooLargeError);
      expect(chunksRead).toBeLessThanOrEqual(7);
      expect(residue()).toEqual([]);
      await store.close();
    });

    it('takes concurrent puts of the same bytes: one object, intact, no temporary left', async () => {
      const { store, residue } = await make();
      const bytes = pattern(300_000, 5);
      const results = await Promise.all([1, 2, 3].map(() => store.put(bytes)));
      expect(new Set(results.map((r) => r.sha256))).toEqual(new Set([sha(bytes)]));
      expect(sha(await store.readBytes(sha(bytes)))).toBe(sha(bytes));
      expect(residue()).toHaveLength(1);
      await store.close();
    });

    it('collects garbage: unreferenced objects and stale temporaries after the grace, never young ones', async () => {
      const { store, residue, leaveTemp } = await make();
      const keep = await store.put(new Uint8Array([1]));
      const drop = await store.put(new Uint8Array([2]));
      await leaveTemp();
      const young = await store.collectGarbage((s) => s === keep.sha256, 3600_000);
      expect(young).toEqual({ deleted: [], tempFilesDeleted: 0 });
      expect(await store.has(drop.sha256)).toBe(true);
      const old = await store.collectGarbage((s) => s === keep.sha256, 0);
      expect(old.deleted).toEqual([drop.sha256]);
      expect(old.tempFilesDeleted).toBe(1);
      expect(await store.has(keep.sha256)).toBe(true);
      expect(await store.has(drop.sha256)).toBe(false);
      expect(residue()).toHaveLength(1);
      await store.close();
    });

    it('reports whether it can take a write, leaving no probe behind', async () => {
      const { store, residue } = await make();
      await store.checkWritable();
      expect(residue()).toEqual([]);
      await store.close();
    });

    it('refuses addresses that are not sha256 digests', async () => {
      const { store } = await make();
      await expect(async () => store.has('../../etc/passwd')).rejects.toThrow(/sha256/);
      await store.close();
    });
  });
}

describe('S3ArtifactStore: reads and the local cache', () => {
  it('reads a checkpoint by ranges when it does not fit the cache (ARTIFACT_CACHE_BYTES=0)', async () => {
    const store = s3Store(`ranges-${++n}/`, 0);
    await store.init();
    const a = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i));
    const file = Buffer.concat([encodeSafetensorsHeader([{ name: 'w', dtype: 'F32', shape: [1000] }]), Buffer.from(a.buffer)]);
    const { sha256 } = await store.put(file);
    const source = await store.randomAccess(sha256);
    expect(typeof source).not.toBe('string'); // ranges of the object, not a download
    const reader = await openSafetensors(source);
    expect([...(await reader.readFloat32('w'))]).toEqual([...a]);
    await reader.close();
    expect(store.cache!.downloads).toBe(0);
    expect(Buffer.from(await store.readBytes(sha256)).equals(file)).toBe(true);
    expect(store.cache!.downloads).toBe(0);
    await store.close();
  });

  it('serves small tensors from one read-ahead window and big ones with one GET each', async () => {
    const store = s3Store(`ahead-${++n}/`, 0);
    await store.init();
    const small = Array.from({ length: 200 }, (_, i) => Float32Array.from({ length: 1000 }, (_, j) => i + j / 1000));
    const big = Float32Array.from({ length: 5 * 262_144 }, (_, j) => -j);
    const specs = [...small.map((_, i) => ({ name: `s${i}`, dtype: 'F32' as const, shape: [1000] })), { name: 'big', dtype: 'F32' as const, shape: [big.length] }];
    const file = Buffer.concat([encodeSafetensorsHeader(specs), ...small.map((a) => Buffer.from(a.buffer)), Buffer.from(big.buffer)]);
    const { sha256 } = await store.put(file);
    const source = (await store.randomAccess(sha256)) as S3ByteSource;
    const reader = await openSafetensors(source);
    for (const [i, a] of small.entries()) expect([...(await reader.readFloat32(`s${i}`))]).toEqual([...a]);
    expect(Buffer.from((await reader.readFloat32('big')).buffer).equals(Buffer.from(big.buffer))).toBe(true);
    expect(source.requests).toBe(2); // the header with the first 4 MiB, then the 5 MiB tensor
    await reader.close();
    await store.close();
  });

  it('downloads an object once per process, even when the main thread and worker threads ask at once', async () => {
    const store = s3Store(`once-${++n}/`, 64 * MiB);
    await store.init();
    const bytes = pattern(3 * MiB, 3);
    const { sha256 } = await store.put(bytes);
    const threadConfig = { kind: 's3' as const, ...store.threadConfig };
    const code = `
      const { workerData, parentPort } = require('node:worker_threads');
      import(workerData.module).then(async ({ createArtifactStore }) => {
        const store = createArtifactStore(workerData.config);
        const paths = await Promise.all([store.localPath(workerData.sha), store.localPath(workerData.sha), store.randomAccess(workerData.sha)]);
        parentPort.postMessage(paths);
      }).catch((e) => parentPort.postMessage({ error: String(e) }));`;
    const inThread = () =>
      new Promise<string[]>((resolve, reject) => {
        const w = new Worker(code, { eval: true, workerData: { module: new URL('../dist/src/storage/create.js', import.meta.url).href, config: threadConfig, sha: sha256 } });
        w.once('message', (m) => { void w.terminate(); (Array.isArray(m) ? resolve(m) : reject(new Error(m.error))); });
        w.once('error', reject);
      });
    const [t1, t2, m1, m2] = await Promise.all([inThread(), inThread(), store.localPath(sha256), store.readBytes(sha256)]);
    expect(store.cache!.downloads).toBe(1);
    expect(new Set([...t1, ...t2, m1])).toEqual(new Set([m1]));
    expect(sha(readFileSync(m1))).toBe(sha256);
    expect(sha(m2)).toBe(sha256);
    await store.close();
    expect(existsSync(m1)).toBe(false); // the process's cache goes with the store
  });

  it('evicts the least recently used file past ARTIFACT_CACHE_BYTES; a reader that has the file open keeps reading', async () => {
    const store = s3Store(`evict-${++n}/`, 1000, { handedOutGraceMs: 0 });
    await store.init();
    const [a, b, c] = [pattern(400, 1), pattern(400, 2), pattern(400, 3)];
    const [sa, sb, sc] = await Promise.all([a, b, c].map(async (x) => (await store.put(x)).sha256));
    const pa = await store.localPath(sa);
    const held = await open(pa, 'r');
    await store.localPath(sb);
    await store.localPath(sa); // a is now more recently used than b
    await store.localPath(sc); // 1,200 bytes > 1,000: b goes
    expect(store.cache!.has(sb)).toBe(false);
    expect(store.cache!.has(sa) && store.cache!.has(sc)).toBe(true);
    expect(store.cache!.usedBytes).toBeLessThanOrEqual(1000);
    await store.localPath(sb); // back in; a (least recent now) goes while `held` still has it open
    expect(store.cache!.has(sa)).toBe(false);
    expect(existsSync(pa)).toBe(false);
    const buf = Buffer.alloc(400);
    await held.read(buf, 0, 400, 0);
    expect(buf.equals(Buffer.from(a))).toBe(true);
    await held.close();
    expect(store.cache!.downloads).toBe(4);
    expect(statSync(await store.localPath(sc)).size).toBe(400);
    await store.close();
  });

  it('names the bucket and the reason when it cannot reach it', async () => {
    const store = new S3ArtifactStore({ ...s3Store('x/', 0).config, bucket: 'no-such-bucket' });
    await expect(store.init()).rejects.toThrow(/ARTIFACTS_URL: cannot reach bucket no-such-bucket at http:\/\/127\.0\.0\.1:\d+: it does not exist/);
    await store.close();
  });
});
