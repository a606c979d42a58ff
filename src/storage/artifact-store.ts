import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { ByteSource } from '../core/checkpoint/byte-source.js';

/**
 * The artifact store: content-addressed bytes (weights, model.json, masks, dataset files). Every
 * part of the service reads and writes artifacts through this interface — the HTTP services on the
 * main thread and the handlers in worker threads — so a second implementation (object storage)
 * can replace the filesystem one without touching them. Addresses are sha256 hex digests of the
 * bytes; an address holds the complete bytes or nothing.
 */
export interface ArtifactStore {
  /** Where the bytes live, for health reports and logs (a directory, a bucket URL). */
  readonly location: string;
  /**
   * A local scratch folder for spooling multipart parts before they are checked and stored; the
   * store's garbage collection removes what a crash left there.
   */
  readonly tmpDir: string;
  /** Creates what the store needs (directories, a bucket check); idempotent. */
  init(): Promise<void>;
  /** A writer that hashes as it streams; nothing is visible under the address until `commit()`. */
  createWriter(opts?: { maxBytes?: number }): Promise<ArtifactWriter>;
  /** Streams any byte source into the store (one writer, committed; aborted on any error). */
  put(source: AsyncIterable<Uint8Array> | Uint8Array, opts?: { maxBytes?: number }): Promise<StoredArtifact>;
  has(sha256: string): Promise<boolean>;
  size(sha256: string): Promise<number>;
  /** The bytes as a stream; `range.end` is exclusive. */
  read(sha256: string, range?: ByteRange): Readable;
  /** The bytes (or a range of them) in memory: for small artifacts (model.json, masks) and headers. */
  readBytes(sha256: string, range?: ByteRange): Promise<Uint8Array>;
  /**
   * A local file holding the bytes, for readers that need random access (checkpoint readers, the
   * safetensors dataset). The filesystem store answers its own file; an object store would answer a
   * cached download.
   */
  localPath(sha256: string): Promise<string>;
  /**
   * Random access for the checkpoint readers (a header, then one tensor at a time): a local file
   * path (the folder's own file, or a cached download), or a source that reads ranges of the object.
   */
  randomAccess(sha256: string): Promise<string | ByteSource>;
  delete(sha256: string): Promise<void>;
  /** True while a commit in this process is resolving to this object (its caller cannot hold it yet). */
  inUse?(sha256: string): boolean;
  list(): AsyncIterable<{ sha256: string; mtimeMs: number }>;
  /**
   * Deletes stored objects that `isReferenced` rejects and unfinished writes, both only when older
   * than `graceMs` (a younger one may belong to an upload whose row is not written yet).
   */
  collectGarbage(isReferenced: (sha256: string) => Promise<boolean> | boolean, graceMs?: number): Promise<{ deleted: string[]; tempFilesDeleted: number }>;
  /** Throws when the store cannot take a write now (the health check). */
  checkWritable(): Promise<void>;
  /** Releases connections and this process's cache. */
  close(): Promise<void>;
}

/**
 * The first half of every store's `collectGarbage`: deletes the listed objects older than `cutoff`
 * (epoch ms) that `isReferenced` rejects, one at a time, and returns their addresses.
 */
export async function deleteUnreferenced(
  store: Pick<ArtifactStore, 'list' | 'delete'>,
  isReferenced: (sha256: string) => Promise<boolean> | boolean,
  cutoff: number,
): Promise<string[]> {
  const deleted: string[] = [];
  for await (const obj of store.list()) {
    if (obj.mtimeMs > cutoff) continue;
    if (await isReferenced(obj.sha256)) continue;
    await store.delete(obj.sha256);
    deleted.push(obj.sha256);
  }
  return deleted;
}

/** Deletes the spool files in `dir` last written at or before `cutoff` (crashed uploads); returns how many. */
export async function sweepTempFiles(dir: string, cutoff: number): Promise<number> {
  let deleted = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const path = join(dir, name);
    const s = await stat(path).catch(() => null);
    if (s && s.mtimeMs <= cutoff) {
      await rm(path, { force: true });
      deleted++;
    }
  }
  return deleted;
}

export interface ArtifactWriter {
  readonly bytesWritten: number;
  write(chunk: Uint8Array): Promise<void>;
  commit(): Promise<StoredArtifact>;
  /** Discards what was written; safe to call after commit or twice. */
  abort(): Promise<void>;
}

/** Streams a byte source through `writer` and commits it, aborting it on any error: every store's `put`. */
export async function writeAll(writer: ArtifactWriter, source: AsyncIterable<Uint8Array> | Uint8Array): Promise<StoredArtifact> {
  try {
    if (source instanceof Uint8Array) await writer.write(source);
    else for await (const chunk of source) await writer.write(chunk);
    return await writer.commit();
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

export interface StoredArtifact {
  sha256: string;
  sizeBytes: number;
  /** False when the same bytes were already stored (content addressing de-duplicates). */
  created: boolean;
}

/** A byte range: `start` inclusive, `end` exclusive. */
export interface ByteRange {
  start: number;
  end: number;
}

export class UploadTooLargeError extends Error {
  constructor(readonly limit: number) {
    super(`body exceeds the limit of ${limit} bytes`);
    this.name = 'UploadTooLargeError';
  }
}

const UNWRITABLE_STORE = 'the artifact store cannot be written';
/** What the filesystem answers when a folder cannot take a file: read-only, not ours, or full. */
const UNWRITABLE_CODES = new Set(['EROFS', 'EACCES', 'EPERM', 'ENOSPC', 'EDQUOT']);

/**
 * The store refused a write: its folder is read-only (EROFS), not writable by this process
 * (EACCES, EPERM) or full (ENOSPC, EDQUOT). The message starts the same way wherever it is read
 * (errors from worker threads arrive as plain Errors): a request answers 503, a training fails with
 * a message that says what happened.
 */
export class ArtifactStoreUnwritableError extends Error {
  constructor(
    readonly code: string,
    location: string,
    cause: Error,
  ) {
    super(`${UNWRITABLE_STORE} at ${location} (${cause.message})`);
    this.name = 'ArtifactStoreUnwritableError';
  }
}

/** `err`, or, if it is a filesystem refusal to write, the same as an ArtifactStoreUnwritableError. */
export function asUnwritable(err: unknown, location: string): unknown {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code && UNWRITABLE_CODES.has(code) && !(err instanceof ArtifactStoreUnwritableError) ? new ArtifactStoreUnwritableError(code, location, err as Error) : err;
}

export function isArtifactStoreUnwritable(err: unknown): boolean {
  return err instanceof ArtifactStoreUnwritableError || (err instanceof Error && err.message.startsWith(UNWRITABLE_STORE));
}

const SHA256 = /^[0-9a-f]{64}$/;

export function isSha256(s: string): boolean {
  return SHA256.test(s);
}
