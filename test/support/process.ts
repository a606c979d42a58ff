import { type ChildProcess, spawn } from 'node:child_process';
import { cpSync, existsSync } from 'node:fs';
import { join } from 'node:path';

/** The built service as a child process, the way `npm start` runs it. */
export interface ServiceProcess {
  url: string;
  child: ChildProcess;
  output: () => string;
  kill: (signal?: NodeJS.Signals) => Promise<void>;
}

export function prepareDataDir(dataDir: string): void {
  const template = process.env.SPARSOUP_PGLITE_TEMPLATE;
  if (!process.env.DATABASE_URL && template && !existsSync(join(dataDir, 'pglite'))) cpSync(template, join(dataDir, 'pglite'), { recursive: true });
}

export { freePort } from '../../src/common/free-port.js';

export async function startService(env: Record<string, string>, port: number): Promise<ServiceProcess> {
  const child = spawn(process.execPath, ['dist/src/main.js'], {
    env: { ...process.env, LOG_LEVEL: 'warn', PORT: String(port), HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (c) => (out += c));
  child.stderr?.on('data', (c) => (out += c));
  const url = `http://127.0.0.1:${port}`;
  // The service says when it listens; only then is /health asked (on a shared machine another
  // program may hold the port, and its answer must not be taken for ours).
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the service did not listen in 90 s:\n${out}`)), 90_000);
    const check = () => {
      if (out.includes(`sparsoup listening on http://127.0.0.1:${port}`)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on('data', check);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the service exited (${code}):\n${out}`));
    });
  });
  const health = await fetch(`${url}/health`);
  if (!health.ok) throw new Error(`the service started but /health answered ${health.status}: ${await health.text()}`);
  return {
    url,
    child,
    output: () => out,
    kill: killer(child),
  };
}

export async function json<T = Record<string, unknown>>(url: string, init?: RequestInit & { body?: string }): Promise<T> {
  const res = await fetch(url, { ...init, headers: { 'content-type': 'application/json', ...(init?.headers ?? {}) } });
  const body = await res.json();
  if (!res.ok) throw new Error(`${init?.method ?? 'GET'} ${url}: ${res.status} ${JSON.stringify(body)}`);
  return body as T;
}

/** The first `n` MNIST training images as a dataset uploaded to a running service (real data, seconds to train on). */
export async function uploadMnistSliceHttp(url: string, n = 1400): Promise<string> {
  const { mnistSliceIdx } = await import('./datasets.js');
  const { images, labels } = mnistSliceIdx(n);
  const form = new FormData();
  form.append('images', new Blob([images]), 'images');
  form.append('labels', new Blob([labels]), 'labels');
  const res = await fetch(`${url}/datasets?name=slice`, { method: 'POST', body: form });
  const body = (await res.json()) as { id: string };
  if (res.status !== 201) throw new Error(`dataset upload: ${res.status} ${JSON.stringify(body)}`);
  return body.id;
}

/** A `npm run worker` process (no HTTP); resolves once it says it started. */
export async function startWorkerProcess(env: Record<string, string>): Promise<Omit<ServiceProcess, 'url'>> {
  const child = spawn(process.execPath, ['dist/src/worker.js'], { env: { ...process.env, LOG_LEVEL: 'info', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the worker did not start in 60 s:\n${out}`)), 60_000);
    const onData = (c: Buffer) => {
      out += c;
      if (out.includes('sparsoup worker started')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (c) => (out += c));
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the worker exited (${code}):\n${out}`));
    });
  });
  return {
    child,
    output: () => out,
    kill: killer(child),
  };
}

export interface RunEvent {
  id: number;
  type: string;
  data: Record<string, unknown>;
}

/**
 * The first event of a run after `afterId` that `match` accepts, read from its server-sent events
 * (GET /runs/{id}/events with Last-Event-ID). Rejects after `timeoutMs` or when the stream ends.
 */
export async function nextRunEvent(url: string, runId: string, match: (e: RunEvent) => boolean, afterId = 0, timeoutMs = 120_000): Promise<RunEvent> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(new Error(`no matching event of run ${runId} after #${afterId} in ${timeoutMs} ms`)), timeoutMs);
  try {
    const res = await fetch(`${url}/runs/${runId}/events`, { headers: { 'last-event-id': String(afterId) }, signal: abort.signal });
    if (!res.ok || !res.body) throw new Error(`GET /runs/${runId}/events: ${res.status}`);
    const decoder = new TextDecoder();
    let buffer = '';
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true });
      for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const field = (name: string) => block.split('\n').find((l) => l.startsWith(`${name}:`))?.slice(name.length + 1).trim();
        const e: RunEvent = { id: Number(field('id')), type: field('event') ?? 'message', data: JSON.parse(field('data') ?? '{}') };
        if (match(e)) return e; // leaving the loop cancels the stream
      }
    }
    throw new Error(`the event stream of run ${runId} ended without a matching event after #${afterId}`);
  } catch (err) {
    if (abort.signal.aborted && abort.signal.reason instanceof Error) throw abort.signal.reason;
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** Sends `signal` to the child and resolves when it has exited (at once if it already has). */
function killer(child: ChildProcess): (signal?: NodeJS.Signals) => Promise<void> {
  return (signal = 'SIGTERM') =>
    new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill(signal);
    });
}
