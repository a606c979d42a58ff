import { createHash, timingSafeEqual } from 'node:crypto';
import type { ApiKey } from '../config/config.js';
import { ProblemException } from './problem.js';

export const READ_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** What a `worker` key may do: the task protocol, and download the models and masks tasks name. */
const WORKER_WRITES = /^\/tasks\/(lease|[0-9a-f-]{36}\/(heartbeat|result|fail))\/?$/i;
/** The downloads a task names (the guard then checks that a leased task names this very model or mask). */
export const WORKER_DOWNLOAD = /^\/(models|masks)\/([0-9a-f-]{36})\/safetensors\/?$/i;

/** Whether a `worker` key may use `method` on `path` (by route; the downloads are checked further by the guard). */
export function workerMay(method: string, path: string): boolean {
  if (method === 'POST') return WORKER_WRITES.test(path);
  if (method === 'GET' || method === 'HEAD') return WORKER_DOWNLOAD.test(path);
  return false;
}

const digest = (key: string) => createHash('sha256').update(key, 'utf8').digest();

/**
 * The configured API keys, looked up in constant time: the presented key and every configured key
 * are compared as SHA-256 digests with timingSafeEqual (equal lengths whatever the key), and every
 * key is compared, so the time taken says nothing about how much of a key was right or which one.
 */
export class ApiKeys {
  private readonly digests: { key: ApiKey; digest: Buffer }[];

  constructor(keys: ApiKey[]) {
    this.digests = keys.map((key) => ({ key, digest: digest(key.key) }));
  }

  get enabled(): boolean {
    return this.digests.length > 0;
  }

  find(presented: string): ApiKey | undefined {
    const d = digest(presented);
    let found: ApiKey | undefined;
    for (const entry of this.digests) {
      if (timingSafeEqual(entry.digest, d) && !found) found = entry.key;
    }
    return found;
  }

  /**
   * The key an `Authorization` header names, allowed to use `method` on `path`; throws the 401/403
   * problem otherwise.
   */
  authorize(authorization: string | undefined, method: string, path: string): ApiKey {
    const match = /^Bearer\s+(\S+)$/i.exec(authorization ?? '');
    if (!match) throw new ProblemException(401, 'this route needs an API key: send Authorization: Bearer <key>');
    const key = this.find(match[1]);
    if (!key) throw new ProblemException(401, 'the API key is not valid');
    if (key.scope === 'read' && !READ_METHODS.has(method)) {
      throw new ProblemException(403, `the key "${key.name}" has scope read and cannot ${method} ${path}`);
    }
    if (key.scope === 'worker' && !workerMay(method, path)) {
      throw new ProblemException(403, `the key "${key.name}" has scope worker: it may lease tasks, send their heartbeats, results and failures, and download the models and masks they name; not ${method} ${path}`);
    }
    return key;
  }
}
