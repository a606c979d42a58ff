import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCopyCommand,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { ByteSource } from '../core/checkpoint/byte-source.js';
import { ArtifactCache, CacheClient, removeStaleCacheDirs, serveCache } from './artifact-cache.js';
import { type ArtifactStore, type ArtifactWriter, type ByteRange, deleteUnreferenced, isSha256, type StoredArtifact, sweepTempFiles, UploadTooLargeError, writeAll } from './artifact-store.js';

/** How to reach a bucket: plain data, handed to worker threads as it is. */
export interface S3StoreConfig {
  bucket: string;
  /** Key prefix, '' or ending in '/'. */
  prefix: string;
  region: string;
  /** A non-AWS endpoint (MinIO, Ceph RGW, R2, s3rver): addressed path-style. Null: AWS. */
  endpoint: string | null;
  /** Null: the SDK's default chain (environment, profile, instance role). */
  credentials: { accessKeyId: string; secretAccessKey: string } | null;
  /** Local scratch for spooling multipart parts (never artifacts). */
  tmpDir: string;
  cache: {
    /** The folder for this process's cache folders (the owner makes its own below it). */
    dir: string;
    maxBytes: number;
    /** Set for worker threads: the main thread's cache answers on this channel. */
    channel?: string;
    /** See HANDED_OUT_GRACE_MS (tests shorten it). */
    handedOutGraceMs?: number;
  };
  /** Multipart part size (at least 5 MiB, S3's minimum). */
  partSize?: number;
  /** Objects above this are copied to their address part by part (S3's CopyObject stops at 5 GiB). */
  maxSingleCopyBytes?: number;
  /** ListObjectsV2 page size (tests make it small to exercise paging). */
  listPageSize?: number;
}

const MiB = 1024 * 1024;
const DEFAULT_PART_SIZE = 8 * MiB;
const MAX_SINGLE_COPY = 5 * 1024 * MiB;
const COPY_PART_SIZE = 512 * MiB;

export function s3Client(c: Pick<S3StoreConfig, 'region' | 'endpoint' | 'credentials'>): S3Client {
  return new S3Client({
    region: c.region,
    ...(c.endpoint ? { endpoint: c.endpoint, forcePathStyle: true } : {}),
    ...(c.credentials ? { credentials: c.credentials } : {}),
    // S3-compatible servers (older MinIO, Ceph, s3rver) do not all take the SDK's default request
    // checksums (aws-chunked bodies with trailers): send them only where an operation requires one.
    ...(c.endpoint ? { requestChecksumCalculation: 'WHEN_REQUIRED' as const, responseChecksumValidation: 'WHEN_REQUIRED' as const } : {}),
  });
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NotFound' || e?.name === 'NoSuchKey' || e?.$metadata?.httpStatusCode === 404;
}

function isUnsupported(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NotImplemented' || e?.name === 'MethodNotAllowed' || e?.$metadata?.httpStatusCode === 501 || e?.$metadata?.httpStatusCode === 405;
}

/**
 * Streams bytes into a multipart upload under a temporary key while hashing them. `commit()` copies
 * the finished object to its content address and deletes the temporary one, so an address is only
 * ever written complete; `abort()` (and any failure) aborts the multipart upload and leaves no object.
 */
export class S3ArtifactWriter implements ArtifactWriter {
  private readonly hash = createHash('sha256');
  private size = 0;
  private done = false;
  private readonly body = new PassThrough({ highWaterMark: MiB });
  private readonly uploaded: Promise<unknown>;

  constructor(
    private readonly store: S3ArtifactStore,
    readonly tempKey: string,
    private readonly maxBytes: number,
  ) {
    const upload = new Upload({
      client: store.client,
      params: { Bucket: store.bucket, Key: tempKey, Body: this.body },
      partSize: store.partSize,
      queueSize: 2,
      leavePartsOnError: false,
    });
    this.uploaded = upload.done();
    this.uploaded.catch(() => {}); // observed in write(), commit() and abort()
  }

  get bytesWritten(): number {
    return this.size;
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.done) throw new Error('artifact writer already finished');
    if (this.size + chunk.byteLength > this.maxBytes) throw new UploadTooLargeError(this.maxBytes);
    this.hash.update(chunk);
    this.size += chunk.byteLength;
    // Copy: the caller may reuse its buffer as soon as write() returns, while the part is still queued.
    if (!this.body.write(Buffer.from(chunk))) await Promise.race([once(this.body, 'drain'), this.uploaded.then(() => {})]);
  }

  async commit(): Promise<StoredArtifact> {
    if (this.done) throw new Error('artifact writer already finished');
    this.done = true;
    this.body.end();
    try {
      await this.uploaded;
      const sha256 = this.hash.digest('hex');
      const existed = await this.store.has(sha256);
      if (!existed) await this.store.copyObject(this.tempKey, this.store.keyOf(sha256), this.size);
      return { sha256, sizeBytes: this.size, created: !existed };
    } finally {
      await this.store.deleteKey(this.tempKey).catch(() => {});
    }
  }

  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    // Failing the body makes lib-storage abort the multipart upload (AbortMultipartUpload) before
    // done() settles, so awaiting it means the abort has been sent.
    this.body.destroy(new Error('artifact write aborted'));
    await this.uploaded.catch(() => {});
    await this.store.deleteKey(this.tempKey).catch(() => {});
  }
}

/** Reads smaller than this are served from one window of this size, fetched ahead in one GET. */
const READ_AHEAD_BYTES = 4 * MiB;

/**
 * Ranges of one object, for the checkpoint readers. A large read (a big tensor) is one GET straight
 * into the caller's buffer; small reads (biases, norms, headers: most of a checkpoint's tensors) are
 * served from a read-ahead window, so a checkpoint of many small tensors costs a few requests, not one
 * per tensor. Memory: one window per open source.
 */
export class S3ByteSource implements ByteSource {
  private window: { start: number; bytes: Uint8Array } | null = null;
  private spare: Uint8Array | null = null;
  /** GETs issued (what the read-ahead saves is checked against it). */
  requests = 0;

  constructor(
    private readonly store: S3ArtifactStore,
    private readonly key: string,
    readonly size: number,
  ) {}

  get name(): string {
    return `s3://${this.store.bucket}/${this.key}`;
  }

  async readAt(target: Uint8Array, position: number): Promise<void> {
    if (target.byteLength === 0) return;
    const end = position + target.byteLength;
    if (end > this.size) throw new Error(`${this.name} ends at byte ${this.size}, before ${end}`);
    const w = this.window;
    if (w && position >= w.start && end <= w.start + w.bytes.byteLength) {
      target.set(w.bytes.subarray(position - w.start, end - w.start));
      return;
    }
    this.requests++;
    if (target.byteLength >= READ_AHEAD_BYTES) {
      await this.store.getRangeInto(this.key, position, target);
      return;
    }
    const length = Math.min(READ_AHEAD_BYTES, this.size - position);
    // Reuse the last window's buffer unless a concurrent read still uses it (first touch of fresh memory is slow).
    const reuse = this.spare && this.spare.byteLength >= length ? this.spare : null;
    this.spare = null;
    const bytes = (reuse ?? new Uint8Array(Math.min(READ_AHEAD_BYTES, this.size))).subarray(0, length);
    try {
      await this.store.getRangeInto(this.key, position, bytes);
    } catch (err) {
      this.spare = reuse;
      throw err;
    }
    if (this.window && this.window.bytes.buffer !== bytes.buffer) this.spare = new Uint8Array(this.window.bytes.buffer);
    this.window = { start: position, bytes };
    target.set(bytes.subarray(0, target.byteLength));
  }

  async close(): Promise<void> {
    this.window = null;
    this.spare = null;
  }
}

/**
 * The object-storage artifact store (S3 and S3-compatible servers). Objects live at
 * `<prefix><sha256>`; unfinished writes at `<prefix>tmp/…`. Reads are ranged GETs; whole objects a
 * process needs as files (or reads whole) go through its bounded local cache, downloaded once.
 */
export class S3ArtifactStore implements ArtifactStore {
  readonly client: S3Client;
  readonly bucket: string;
  readonly prefix: string;
  readonly tmpDir: string;
  readonly partSize: number;
  private readonly maxSingleCopy: number;
  private readonly listPageSize: number;
  /** The main thread's cache (null in worker threads, which ask it through `cacheClient`). */
  readonly cache: ArtifactCache | null;
  private readonly cacheClient: CacheClient | null;
  private serving: { close(): void } | null = null;
  /** What worker threads are given: the same bucket, and this process's cache by channel. */
  readonly threadConfig: S3StoreConfig;

  constructor(readonly config: S3StoreConfig) {
    this.client = s3Client(config);
    this.bucket = config.bucket;
    this.prefix = config.prefix;
    this.tmpDir = config.tmpDir;
    this.partSize = Math.max(5 * MiB, config.partSize ?? DEFAULT_PART_SIZE);
    this.maxSingleCopy = config.maxSingleCopyBytes ?? MAX_SINGLE_COPY;
    this.listPageSize = config.listPageSize ?? 1000;
    if (config.cache.channel) {
      this.cache = null;
      this.cacheClient = new CacheClient(config.cache.channel);
      this.threadConfig = config;
    } else {
      const dir = join(config.cache.dir, `${process.pid}-${randomBytes(6).toString('hex')}`);
      this.cache = new ArtifactCache(dir, config.cache.maxBytes, (sha, path) => this.download(sha, path), config.cache.handedOutGraceMs);
      this.cacheClient = null;
      this.threadConfig = { ...config, cache: { ...config.cache, dir, channel: `sparsoup-artifact-cache:${dir}` } };
    }
  }

  get location(): string {
    return `s3://${this.bucket}/${this.prefix}${this.config.endpoint ? ` at ${this.config.endpoint}` : ''}`;
  }

  keyOf(sha256: string): string {
    if (!isSha256(sha256)) throw new Error(`not a sha256 hex digest: ${sha256}`);
    return `${this.prefix}${sha256}`;
  }

  private get tempPrefix(): string {
    return `${this.prefix}tmp/`;
  }

  async init(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (err) {
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      const why = status === 404 ? 'it does not exist' : status === 403 ? 'access denied (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)' : (err as Error).message || String(err);
      throw new Error(`ARTIFACTS_URL: cannot reach bucket ${this.bucket}${this.config.endpoint ? ` at ${this.config.endpoint}` : ''}: ${why}`);
    }
    await mkdir(this.tmpDir, { recursive: true });
    if (this.cache) {
      await mkdir(this.config.cache.dir, { recursive: true });
      await removeStaleCacheDirs(this.config.cache.dir);
      await this.cache.init();
      this.serving ??= serveCache(this.cache, this.threadConfig.cache.channel!);
    }
  }

  async close(): Promise<void> {
    this.serving?.close();
    this.serving = null;
    this.cacheClient?.close();
    await this.cache?.close();
    this.client.destroy();
  }

  async createWriter(opts: { maxBytes?: number } = {}): Promise<S3ArtifactWriter> {
    const tempKey = `${this.tempPrefix}${Date.now()}-${randomBytes(8).toString('hex')}`;
    return new S3ArtifactWriter(this, tempKey, opts.maxBytes ?? Number.POSITIVE_INFINITY);
  }

  async put(source: AsyncIterable<Uint8Array> | Uint8Array, opts: { maxBytes?: number } = {}): Promise<StoredArtifact> {
    return writeAll(await this.createWriter(opts), source);
  }

  async has(sha256: string): Promise<boolean> {
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.keyOf(sha256) }));
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  async size(sha256: string): Promise<number> {
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.keyOf(sha256) }));
      return head.ContentLength ?? 0;
    } catch (err) {
      if (isNotFound(err)) throw Object.assign(new Error(`no artifact ${sha256} in ${this.location}`), { code: 'ENOENT' });
      throw err;
    }
  }

  read(sha256: string, range?: ByteRange): Readable {
    const key = this.keyOf(sha256);
    const cached = this.cache?.peek(sha256);
    if (cached) return createReadStream(cached, range ? { start: range.start, end: range.end - 1 } : {});
    const client = this.client;
    const bucket = this.bucket;
    return Readable.from(
      (async function* () {
        if (range && range.end <= range.start) return;
        const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key, ...(range ? { Range: `bytes=${range.start}-${range.end - 1}` } : {}) }));
        yield* res.Body as Readable;
      })(),
      { objectMode: false },
    );
  }

  async readBytes(sha256: string, range?: ByteRange): Promise<Uint8Array> {
    if (!range) {
      const size = await this.size(sha256);
      if (size <= this.config.cache.maxBytes) return new Uint8Array(await readFile(await this.cachedPath(sha256)));
      return this.getBytes(this.keyOf(sha256));
    }
    if (range.end <= range.start) return new Uint8Array(0);
    const cached = this.cache?.peek(sha256);
    if (cached) return readFileRange(cached, range);
    try {
      return await this.getBytes(this.keyOf(sha256), range);
    } catch (err) {
      // A range that starts at or past the end (416) has no bytes, as with a file.
      if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 416) return new Uint8Array(0);
      throw err;
    }
  }

  async localPath(sha256: string): Promise<string> {
    return this.cachedPath(sha256);
  }

  /**
   * For the checkpoint readers: the cached file when the object fits the cache (read again and
   * again by prunes, soups and the m candidates of a phase: fetched once), else ranges of the object.
   */
  async randomAccess(sha256: string): Promise<string | ByteSource> {
    const size = await this.size(sha256);
    if (size <= this.config.cache.maxBytes) return this.cachedPath(sha256);
    return new S3ByteSource(this, this.keyOf(sha256), size);
  }

  private cachedPath(sha256: string): Promise<string> {
    if (!isSha256(sha256)) throw new Error(`not a sha256 hex digest: ${sha256}`);
    return this.cache ? this.cache.path(sha256) : this.cacheClient!.path(sha256);
  }

  /** Downloads an object to `path`, checking its bytes against the address. */
  private async download(sha256: string, path: string): Promise<void> {
    const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.keyOf(sha256) }));
    const hash = createHash('sha256');
    const body = res.Body as Readable;
    body.on('data', (c: Buffer) => hash.update(c));
    await pipeline(body, createWriteStream(path));
    const got = hash.digest('hex');
    if (got !== sha256) throw new Error(`artifact ${sha256} downloaded from ${this.location} has sha256 ${got}: the object is corrupt`);
  }

  private async getBytes(key: string, range?: ByteRange): Promise<Uint8Array> {
    const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, ...(range ? { Range: `bytes=${range.start}-${range.end - 1}` } : {}) }));
    const out = new Uint8Array(res.ContentLength ?? 0);
    let off = 0;
    for await (const c of res.Body as Readable) {
      const chunk = c as Buffer;
      if (off + chunk.byteLength > out.byteLength) throw new Error(`s3://${this.bucket}/${key}: more bytes than the announced ${out.byteLength}`);
      out.set(chunk, off);
      off += chunk.byteLength;
    }
    if (off !== out.byteLength) throw new Error(`s3://${this.bucket}/${key}: ${off} bytes arrived of ${out.byteLength}`);
    return out;
  }

  /** One ranged GET streamed straight into `target` (no intermediate buffer of the whole range). */
  async getRangeInto(key: string, position: number, target: Uint8Array): Promise<void> {
    const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: `bytes=${position}-${position + target.byteLength - 1}` }));
    let off = 0;
    for await (const c of res.Body as Readable) {
      const chunk = c as Buffer;
      if (off + chunk.byteLength > target.byteLength) throw new Error(`s3://${this.bucket}/${key}: more bytes than the range asked`);
      target.set(chunk, off);
      off += chunk.byteLength;
    }
    if (off !== target.byteLength) throw new Error(`s3://${this.bucket}/${key} ends inside bytes ${position}..${position + target.byteLength}`);
  }

  /** Server-side copy to the address: one CopyObject, or part by part above S3's 5 GiB limit. */
  async copyObject(from: string, to: string, size: number): Promise<void> {
    const source = `${this.bucket}/${encodeURI(from)}`;
    if (size <= this.maxSingleCopy) {
      await this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key: to, CopySource: source }));
      return;
    }
    const { UploadId } = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: to }));
    try {
      const parts: { ETag: string; PartNumber: number }[] = [];
      const partSize = Math.max(COPY_PART_SIZE, Math.ceil(size / 10_000));
      for (let start = 0, n = 1; start < size; start += partSize, n++) {
        const end = Math.min(size, start + partSize) - 1;
        const r = await this.client.send(new UploadPartCopyCommand({ Bucket: this.bucket, Key: to, UploadId, PartNumber: n, CopySource: source, CopySourceRange: `bytes=${start}-${end}` }));
        parts.push({ ETag: r.CopyPartResult!.ETag!, PartNumber: n });
      }
      await this.client.send(new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: to, UploadId, MultipartUpload: { Parts: parts } }));
    } catch (err) {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: to, UploadId })).catch(() => {});
      throw err;
    }
  }

  async deleteKey(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
  }

  async checkWritable(): Promise<void> {
    const key = `${this.tempPrefix}.health-${randomBytes(4).toString('hex')}`;
    await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: 'ok' }));
    await this.deleteKey(key);
  }

  async delete(sha256: string): Promise<void> {
    await this.deleteKey(this.keyOf(sha256));
    await this.cache?.drop(sha256);
  }

  private async *listKeys(prefix: string, delimiter?: string): AsyncGenerator<{ key: string; mtimeMs: number }> {
    let token: string | undefined;
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, MaxKeys: this.listPageSize, ...(delimiter ? { Delimiter: delimiter } : {}), ...(token ? { ContinuationToken: token } : {}) }),
      );
      for (const o of page.Contents ?? []) if (o.Key) yield { key: o.Key, mtimeMs: o.LastModified?.getTime() ?? 0 };
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async *list(): AsyncGenerator<{ sha256: string; mtimeMs: number }> {
    for await (const o of this.listKeys(this.prefix, '/')) {
      const name = o.key.slice(this.prefix.length);
      if (isSha256(name)) yield { sha256: name, mtimeMs: o.mtimeMs };
    }
  }

  async collectGarbage(
    isReferenced: (sha256: string) => Promise<boolean> | boolean,
    graceMs = 10 * 60_000,
  ): Promise<{ deleted: string[]; tempFilesDeleted: number }> {
    const cutoff = Date.now() - graceMs;
    const deleted = await deleteUnreferenced(this, isReferenced, cutoff);
    let tempFilesDeleted = 0;
    // Temporary objects of writes that crashed between their upload and their copy.
    for await (const o of this.listKeys(this.tempPrefix)) {
      if (o.mtimeMs > cutoff) continue;
      await this.deleteKey(o.key);
      tempFilesDeleted++;
    }
    // Multipart uploads a crashed process never completed nor aborted (their parts cost storage).
    try {
      const uploads = await this.client.send(new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: this.tempPrefix }));
      for (const u of uploads.Uploads ?? []) {
        if (!u.Key || !u.UploadId || (u.Initiated?.getTime() ?? 0) > cutoff) continue;
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: u.Key, UploadId: u.UploadId }));
        tempFilesDeleted++;
      }
    } catch (err) {
      if (!isUnsupported(err)) throw err;
    }
    // Spool files of crashed multipart uploads, on this machine.
    tempFilesDeleted += await sweepTempFiles(this.tmpDir, cutoff);
    return { deleted, tempFilesDeleted };
  }
}

async function readFileRange(path: string, range: ByteRange): Promise<Uint8Array> {
  const h = await open(path, 'r');
  try {
    const size = (await h.stat()).size;
    const end = Math.min(range.end, size);
    const out = new Uint8Array(Math.max(0, end - range.start));
    let off = 0;
    while (off < out.length) {
      const { bytesRead } = await h.read(out, off, out.length - off, range.start + off);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    return out.subarray(0, off);
  } finally {
    await h.close();
  }
}
