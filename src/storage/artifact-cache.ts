import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { BroadcastChannel, threadId } from 'node:worker_threads';

/**
 * A file handed out within this long is never evicted: its caller is about to open it. Once a
 * reader has the file open, eviction (an unlink) cannot cut it short — on POSIX the bytes stay
 * readable through the open descriptor until it is closed, and only then is the space freed.
 */
export const HANDED_OUT_GRACE_MS = 60_000;

interface Entry {
  bytes: number;
  handedOutAt: number;
}

/**
 * A process's bounded local cache of artifacts from object storage: whole objects as files, least
 * recently used evicted first once the total passes `maxBytes`. Each object is downloaded once per
 * process even when several callers (or worker threads, through `CacheClient`) ask at the same
 * time. Objects are content-addressed, so a cached file never goes stale.
 *
 * The bound may be passed for a while when every file in the cache was handed out in the last
 * `HANDED_OUT_GRACE_MS` (those are never evicted), and by one file bigger than the whole cache that
 * a caller needs as a file (`localPath`); the next download evicts it.
 */
export class ArtifactCache {
  /** LRU order: the first key is the least recently used. */
  private readonly entries = new Map<string, Entry>();
  private readonly inflight = new Map<string, Promise<string>>();
  private total = 0;
  /** Downloads started by this cache: what the "once per process" tests count. */
  downloads = 0;

  constructor(
    readonly dir: string,
    readonly maxBytes: number,
    private readonly download: (sha256: string, path: string) => Promise<void>,
    private readonly handedOutGraceMs = HANDED_OUT_GRACE_MS,
  ) {}

  async init(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
    await mkdir(join(this.dir, 'partial'), { recursive: true });
  }

  get usedBytes(): number {
    return this.total;
  }

  has(sha256: string): boolean {
    return this.entries.has(sha256);
  }

  /** The cached file of `sha256` if there is one (marked as used), without downloading. */
  peek(sha256: string): string | null {
    const e = this.entries.get(sha256);
    if (!e) return null;
    this.touch(sha256, e);
    return this.pathOf(sha256);
  }

  /** A local file holding the object, downloaded on first use; concurrent callers share one download. */
  path(sha256: string): Promise<string> {
    const hit = this.peek(sha256);
    if (hit) return Promise.resolve(hit);
    let p = this.inflight.get(sha256);
    if (!p) {
      p = this.fetch(sha256).finally(() => this.inflight.delete(sha256));
      this.inflight.set(sha256, p);
    }
    return p;
  }

  /** Forgets an object (deleted from the store). A reader holding it open keeps reading. */
  async drop(sha256: string): Promise<void> {
    const e = this.entries.get(sha256);
    if (!e) return;
    this.entries.delete(sha256);
    this.total -= e.bytes;
    await rm(this.pathOf(sha256), { force: true });
  }

  async close(): Promise<void> {
    this.entries.clear();
    this.total = 0;
    await rm(this.dir, { recursive: true, force: true });
  }

  private pathOf(sha256: string): string {
    return join(this.dir, sha256);
  }

  private touch(sha256: string, e: Entry): void {
    e.handedOutAt = Date.now();
    this.entries.delete(sha256);
    this.entries.set(sha256, e);
  }

  private async fetch(sha256: string): Promise<string> {
    this.downloads++;
    const partial = join(this.dir, 'partial', `${sha256}-${randomBytes(6).toString('hex')}`);
    try {
      await this.download(sha256, partial);
      const { size } = await stat(partial);
      await this.evict(size);
      await rename(partial, this.pathOf(sha256));
      const e = { bytes: size, handedOutAt: Date.now() };
      this.entries.set(sha256, e);
      this.total += size;
      return this.pathOf(sha256);
    } catch (err) {
      await rm(partial, { force: true });
      throw err;
    }
  }

  /** Makes room for `incoming` bytes: least recently used first, never a file handed out just now. */
  private async evict(incoming: number): Promise<void> {
    const now = Date.now();
    for (const [sha, e] of [...this.entries]) {
      if (this.total + incoming <= this.maxBytes) return;
      if (now - e.handedOutAt < this.handedOutGraceMs) continue;
      this.entries.delete(sha);
      this.total -= e.bytes;
      await rm(this.pathOf(sha), { force: true });
    }
  }
}

/** Removes cache folders of processes that no longer run (a crash leaves its folder behind). */
export async function removeStaleCacheDirs(base: string): Promise<void> {
  for (const name of await readdir(base).catch(() => [] as string[])) {
    const pid = Number(/^(\d+)-/.exec(name)?.[1]);
    if (!pid || pid === process.pid || isAlive(pid)) continue;
    await rm(join(base, name), { recursive: true, force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

type CacheRequest = { op: 'path'; id: string; sha256: string };
type CacheReply = { op: 'ack'; id: string } | { op: 'reply'; id: string; path?: string; error?: string };

/** Answers the worker threads' requests for cached files over a BroadcastChannel (main thread). */
export function serveCache(cache: ArtifactCache, channelName: string): { close(): void } {
  const channel = new BroadcastChannel(channelName);
  channel.unref();
  channel.onmessage = (event) => {
    const m = (event as { data: CacheRequest | CacheReply }).data;
    if (m?.op !== 'path') return;
    channel.postMessage({ op: 'ack', id: m.id } satisfies CacheReply);
    cache.path(m.sha256).then(
      (path) => channel.postMessage({ op: 'reply', id: m.id, path } satisfies CacheReply),
      (err: unknown) => channel.postMessage({ op: 'reply', id: m.id, error: err instanceof Error ? err.message : String(err) } satisfies CacheReply),
    );
  };
  return { close: () => channel.close() };
}

/** How long a worker thread waits for the main thread to acknowledge a request (not the download). */
const ACK_TIMEOUT_MS = 15_000;

/**
 * A worker thread's handle on its process's cache: asks the main thread, which downloads once for
 * every thread, and answers with the file's path.
 */
export class CacheClient {
  private readonly channel: BroadcastChannel;
  private readonly pending = new Map<string, { resolve: (path: string) => void; reject: (err: Error) => void; timer: NodeJS.Timeout }>();
  private next = 0;

  constructor(channelName: string) {
    this.channel = new BroadcastChannel(channelName);
    this.channel.unref();
    this.channel.onmessage = (event) => {
      const m = (event as { data: CacheRequest | CacheReply }).data;
      const p = m && m.op !== 'path' ? this.pending.get(m.id) : undefined;
      if (!p || m.op === 'path') return;
      clearTimeout(p.timer);
      if (m.op === 'ack') return;
      this.pending.delete(m.id);
      if (this.pending.size === 0) this.channel.unref();
      if (m.path) p.resolve(m.path);
      else p.reject(new Error(`artifact cache: ${m.error}`));
    };
  }

  path(sha256: string): Promise<string> {
    const id = `${threadId}:${this.next++}`;
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error('artifact cache: the main thread did not answer (it owns the cache of object-storage artifacts)'));
      }, ACK_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      this.channel.ref();
      this.channel.postMessage({ op: 'path', id, sha256 } satisfies CacheRequest);
    });
  }

  close(): void {
    this.channel.close();
  }
}
