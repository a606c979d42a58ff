import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, type ReadStream } from 'node:fs';
import { type FileHandle, mkdir, open, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type ArtifactStore, type ArtifactWriter, asUnwritable, type ByteRange, deleteUnreferenced, isSha256, type StoredArtifact, sweepTempFiles, UploadTooLargeError, writeAll } from './artifact-store.js';

/**
 * A writer that streams bytes into a temporary file while hashing them. `commit()` renames it to
 * its content address; `abort()` removes it. Until commit nothing is visible under the address,
 * so a crash leaves at most a temporary file, which `collectGarbage` removes later.
 */
export class FsArtifactWriter implements ArtifactWriter {
  private readonly hash = createHash('sha256');
  private size = 0;
  private done = false;

  constructor(
    private readonly store: FsArtifactStore,
    private readonly handle: FileHandle,
    readonly tempPath: string,
    private readonly maxBytes: number,
  ) {}

  get bytesWritten(): number {
    return this.size;
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.done) throw new Error('artifact writer already finished');
    if (this.size + chunk.byteLength > this.maxBytes) throw new UploadTooLargeError(this.maxBytes);
    this.hash.update(chunk);
    let offset = 0;
    while (offset < chunk.byteLength) {
      const { bytesWritten } = await this.handle.write(chunk, offset, chunk.byteLength - offset).catch((err) => {
        throw asUnwritable(err, this.store.root);
      });
      offset += bytesWritten;
    }
    this.size += chunk.byteLength;
  }

  async commit(): Promise<StoredArtifact> {
    if (this.done) throw new Error('artifact writer already finished');
    this.done = true;
    try {
      await this.handle.sync();
      await this.handle.close();
      const sha256 = this.hash.digest('hex');
      const target = this.store.pathOf(sha256);
      // Pinned from the moment the address is known until the caller can hold it: a discard of the
      // same object by another request meanwhile must not take the file this commit finds there.
      const unpin = this.store.pin(sha256);
      try {
        await this.store.deleted(sha256);
        await mkdir(join(target, '..'), { recursive: true });
        const existed = await exists(target);
        if (existed) await rm(this.tempPath, { force: true });
        else await rename(this.tempPath, target);
        return { sha256, sizeBytes: this.size, created: !existed };
      } finally {
        setImmediate(unpin);
      }
    } catch (err) {
      await rm(this.tempPath, { force: true }).catch(() => {});
      throw asUnwritable(err, this.store.root);
    }
  }

  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await this.handle.close().catch(() => {});
    await rm(this.tempPath, { force: true });
  }
}

/**
 * The filesystem artifact store. Content-addressed files: `root/sha256/ab/abcdef…`. Written through
 * a temporary file in `root/tmp` and renamed, so an address either holds the complete bytes or nothing.
 */
export class FsArtifactStore implements ArtifactStore {
  readonly tmpDir: string;
  readonly objectsDir: string;

  constructor(readonly root: string) {
    this.tmpDir = join(root, 'tmp');
    this.objectsDir = join(root, 'sha256');
  }

  async init(): Promise<void> {
    await mkdir(this.tmpDir, { recursive: true });
    await mkdir(this.objectsDir, { recursive: true });
  }

  get location(): string {
    return this.root;
  }

  pathOf(sha256: string): string {
    if (!isSha256(sha256)) throw new Error(`not a sha256 hex digest: ${sha256}`);
    return join(this.objectsDir, sha256.slice(0, 2), sha256);
  }

  async createWriter(opts: { maxBytes?: number } = {}): Promise<FsArtifactWriter> {
    const tempPath = join(this.tmpDir, `${Date.now()}-${randomBytes(8).toString('hex')}.part`);
    try {
      await mkdir(this.tmpDir, { recursive: true });
      const handle = await open(tempPath, 'wx');
      return new FsArtifactWriter(this, handle, tempPath, opts.maxBytes ?? Number.POSITIVE_INFINITY);
    } catch (err) {
      throw asUnwritable(err, this.root);
    }
  }

  /** Streams any byte source into the store. On any error the temporary file is removed. */
  async put(source: AsyncIterable<Uint8Array> | Uint8Array, opts: { maxBytes?: number } = {}): Promise<StoredArtifact> {
    return writeAll(await this.createWriter(opts), source);
  }

  async has(sha256: string): Promise<boolean> {
    return exists(this.pathOf(sha256));
  }

  async size(sha256: string): Promise<number> {
    return (await stat(this.pathOf(sha256))).size;
  }

  read(sha256: string, range?: ByteRange): ReadStream {
    // `end` is exclusive here, inclusive for createReadStream.
    return createReadStream(this.pathOf(sha256), range ? { start: range.start, end: range.end - 1 } : {});
  }

  async readBytes(sha256: string, range?: ByteRange): Promise<Uint8Array> {
    const h = await open(this.pathOf(sha256), 'r');
    try {
      const start = range?.start ?? 0;
      const end = range ? range.end : (await h.stat()).size;
      const out = new Uint8Array(Math.max(0, end - start));
      let off = 0;
      while (off < out.length) {
        const { bytesRead } = await h.read(out, off, out.length - off, start + off);
        if (bytesRead === 0) break;
        off += bytesRead;
      }
      return off === out.length ? out : out.subarray(0, off);
    } finally {
      await h.close();
    }
  }

  async localPath(sha256: string): Promise<string> {
    return this.pathOf(sha256);
  }

  async randomAccess(sha256: string): Promise<string> {
    return this.pathOf(sha256);
  }

  async close(): Promise<void> {}

  async checkWritable(): Promise<void> {
    await mkdir(this.tmpDir, { recursive: true });
    const probe = join(this.tmpDir, `.health-${randomBytes(4).toString('hex')}`);
    await writeFile(probe, 'ok');
    await rm(probe);
  }

  private readonly pins = new Map<string, number>();
  private readonly deleting = new Map<string, Promise<void>>();

  /** Marks an object a commit in this process is resolving to; returns the unpin. */
  pin(sha256: string): () => void {
    this.pins.set(sha256, (this.pins.get(sha256) ?? 0) + 1);
    return () => {
      const n = (this.pins.get(sha256) ?? 1) - 1;
      if (n > 0) this.pins.set(sha256, n);
      else this.pins.delete(sha256);
    };
  }

  inUse(sha256: string): boolean {
    return this.pins.has(sha256);
  }

  /** Resolves once a delete of this object under way has finished. */
  async deleted(sha256: string): Promise<void> {
    await this.deleting.get(sha256);
  }

  async delete(sha256: string): Promise<void> {
    const done = rm(this.pathOf(sha256), { force: true });
    this.deleting.set(sha256, done);
    try {
      await done;
    } finally {
      if (this.deleting.get(sha256) === done) this.deleting.delete(sha256);
    }
  }

  async *list(): AsyncGenerator<{ sha256: string; mtimeMs: number }> {
    for (const prefix of await readdir(this.objectsDir).catch(() => [] as string[])) {
      for (const name of await readdir(join(this.objectsDir, prefix)).catch(() => [] as string[])) {
        if (!isSha256(name)) continue;
        const s = await stat(join(this.objectsDir, prefix, name)).catch(() => null);
        if (s) yield { sha256: name, mtimeMs: s.mtimeMs };
      }
    }
  }

  async collectGarbage(
    isReferenced: (sha256: string) => Promise<boolean> | boolean,
    graceMs = 10 * 60_000,
  ): Promise<{ deleted: string[]; tempFilesDeleted: number }> {
    const cutoff = Date.now() - graceMs;
    const deleted = await deleteUnreferenced(this, isReferenced, cutoff);
    const tempFilesDeleted = await sweepTempFiles(this.tmpDir, cutoff);
    return { deleted, tempFilesDeleted };
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
