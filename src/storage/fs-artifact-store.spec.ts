import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { UploadTooLargeError } from './artifact-store.js';
import { FsArtifactStore } from './fs-artifact-store.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('FsArtifactStore', () => {
  let store: FsArtifactStore;
  beforeEach(async () => {
    store = new FsArtifactStore(mkdtempSync(join(tmpdir(), 'artifacts-')));
    await store.init();
  });

  it('stores bytes under their sha256 and de-duplicates', async () => {
    const bytes = new TextEncoder().encode('hello sparse world');
    const a = await store.put(bytes);
    expect(a).toEqual({ sha256: sha(bytes), sizeBytes: bytes.length, created: true });
    expect(readFileSync(store.pathOf(a.sha256))).toEqual(Buffer.from(bytes));
    const b = await store.put((async function* () { yield bytes.subarray(0, 5); yield bytes.subarray(5); })());
    expect(b).toEqual({ ...a, created: false });
    expect(readdirSync(store.tmpDir)).toEqual([]);
  });

  it('leaves neither an object nor a temporary file when the source fails mid-write', async () => {
    async function* failing() {
      yield new Uint8Array(64 * 1024).fill(7);
      yield new Uint8Array(64 * 1024).fill(8);
      throw new Error('connection reset');
    }
    await expect(store.put(failing())).rejects.toThrow('connection reset');
    expect(readdirSync(store.tmpDir)).toEqual([]);
    expect(readdirSync(store.objectsDir)).toEqual([]);
  });

  it('stops at maxBytes with UploadTooLargeError and cleans up', async () => {
    let chunksRead = 0;
    async function* big() {
      for (let i = 0; i < 100; i++) {
        chunksRead++;
        yield new Uint8Array(1024);
      }
    }
    await expect(store.put(big(), { maxBytes: 4096 })).rejects.toBeInstanceOf(UploadTooLargeError);
    expect(chunksRead).toBeLessThanOrEqual(5);
    expect(readdirSync(store.tmpDir)).toEqual([]);
  });

  it('reads byte ranges back', async () => {
    const bytes = Uint8Array.from({ length: 100 }, (_, i) => i);
    const { sha256 } = await store.put(bytes);
    const chunks: Buffer[] = [];
    for await (const c of store.read(sha256, { start: 10, end: 20 })) chunks.push(c as Buffer);
    expect([...Buffer.concat(chunks)]).toEqual([...bytes.subarray(10, 20)]);
    expect([...(await store.readBytes(sha256, { start: 10, end: 20 }))]).toEqual([...bytes.subarray(10, 20)]);
    expect([...(await store.readBytes(sha256))]).toEqual([...bytes]);
    // A range past the end answers what is there, as a stream would.
    expect([...(await store.readBytes(sha256, { start: 95, end: 120 }))]).toEqual([...bytes.subarray(95)]);
    expect(readFileSync(await store.localPath(sha256))).toEqual(Buffer.from(bytes));
  });

  it('reports whether it can take a write, leaving no probe behind', async () => {
    await store.checkWritable();
    expect(readdirSync(store.tmpDir)).toEqual([]);
    expect(store.location).toBe(store.root);
  });

  it('garbage-collects unreferenced objects and stale temporary files, sparing young ones', async () => {
    const keep = await store.put(new Uint8Array([1]));
    const drop = await store.put(new Uint8Array([2]));
    const young = await store.put(new Uint8Array([3]));
    const writer = await store.createWriter();
    await writer.write(new Uint8Array([4]));
    const old = new Date(Date.now() - 3600_000);
    for (const p of [store.pathOf(keep.sha256), store.pathOf(drop.sha256), writer.tempPath]) utimesSync(p, old, old);
    const result = await store.collectGarbage((s) => s === keep.sha256, 60_000);
    expect(result.deleted).toEqual([drop.sha256]);
    expect(result.tempFilesDeleted).toBe(1);
    expect(await store.has(keep.sha256)).toBe(true);
    expect(await store.has(young.sha256)).toBe(true);
    expect(await store.has(drop.sha256)).toBe(false);
  });

  it('refuses addresses that are not sha256 digests', () => {
    expect(() => store.pathOf('../../etc/passwd')).toThrow(/sha256/);
  });
});
