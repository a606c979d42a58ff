/**
 * A small plain-`fetch` client for the runs API, shared by `npm run demo` (scripts/demo.ts) and
 * `npm run bench:sms` (bench/sms.ts): JSON requests whose errors carry the problem+json `detail`,
 * and a server-sent-events reader for `GET /runs/{id}/events`.
 */

/** An API error: the problem+json body's title and detail (and field errors, when the body lists them). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Record<string, unknown> | null,
    what: string,
  ) {
    const detail = typeof problem?.detail === 'string' ? problem.detail : '(no problem detail in the answer)';
    super(`${what} → ${status}${typeof problem?.title === 'string' ? ` ${problem.title}` : ''}: ${detail}`);
  }
}

export interface Client {
  url: string;
  json<T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<T>;
  text(path: string): Promise<string>;
  /** Follows a run's event stream until `run-finished`, reconnecting with Last-Event-ID if it drops. */
  events(runId: string, onEvent: (e: RunEvent) => void, signal?: AbortSignal): Promise<void>;
}

export interface RunEvent {
  id: number;
  type: string;
  data: Record<string, unknown> & { candidateId?: string | null; at?: string };
}

export function client(url: string, apiKey = process.env.SPARSOUP_API_KEY): Client {
  const base = url.replace(/\/+$/, '');
  const auth: Record<string, string> = apiKey ? { authorization: `Bearer ${apiKey}` } : {};
  const send = async (method: string, path: string, body?: unknown, accept = 'application/json') => {
    let res: Response;
    try {
      res = await fetch(base + path, {
        method,
        headers: { accept, ...auth, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new Error(`${method} ${base}${path}: cannot reach the service (${cause?.code ?? cause?.message ?? (err as Error).message}); is it running?`);
    }
    if (!res.ok) {
      const raw = await res.text();
      let problem: Record<string, unknown> | null = null;
      try {
        problem = JSON.parse(raw) as Record<string, unknown>;
      } catch {
        problem = { detail: raw.slice(0, 300) || res.statusText };
      }
      throw new ApiError(res.status, problem, `${method} ${path}`);
    }
    return res;
  };
  return {
    url: base,
    json: async <T>(method: string, path: string, body?: unknown) => (await (await send(method, path, body)).json()) as T,
    text: async (path: string) => (await send('GET', path, undefined, '*/*')).text(),
    events: async (runId, onEvent, signal) => {
      let last = 0;
      for (let attempt = 0; ; attempt++) {
        let finished = false;
        try {
          const res = await fetch(`${base}/runs/${runId}/events`, { headers: { accept: 'text/event-stream', ...auth, ...(last ? { 'last-event-id': String(last) } : {}) }, signal });
          if (!res.ok || !res.body) throw new ApiError(res.status, (await res.json().catch(() => null)) as Record<string, unknown> | null, `GET /runs/${runId}/events`);
          finished = await readSse(res.body, (e) => {
            last = e.id || last;
            onEvent(e);
          });
        } catch (err) {
          if (signal?.aborted || err instanceof ApiError) throw err;
          if (attempt >= 20) throw err;
        }
        if (finished) return;
        // The stream ended without run-finished (the service restarted, or a proxy cut it): resume.
        await sleep(1000);
      }
    },
  };
}

/** Parses `event:` / `id:` / `data:` lines; resolves true once a `run-finished` event arrived. */
async function readSse(body: ReadableStream<Uint8Array>, onEvent: (e: RunEvent) => void): Promise<boolean> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let finished = false;
  let type = 'message';
  let id = 0;
  let data: string[] = [];
  const dispatch = () => {
    if (data.length) {
      let parsed: RunEvent['data'];
      try {
        parsed = JSON.parse(data.join('\n')) as RunEvent['data'];
      } catch {
        parsed = { text: data.join('\n') };
      }
      onEvent({ id, type, data: parsed });
      if (type === 'run-finished') finished = true;
    }
    type = 'message';
    data = [];
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let nl = buffer.indexOf('\n');
    while (nl >= 0) {
      const line = buffer.slice(0, nl).replace(/\r$/, '');
      buffer = buffer.slice(nl + 1);
      if (line === '') dispatch();
      else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') type = val;
        else if (field === 'data') data.push(val);
        else if (field === 'id') id = Number(val) || id;
      }
      nl = buffer.indexOf('\n');
    }
  }
  dispatch();
  return finished;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The parts of a run the scripts read (see RunDto). */
export interface Run {
  id: string;
  kind: string;
  status: string;
  error: string | null;
  backend: string | null;
  startedAt: string | null;
  finishedAt: string | null;
  createdAt: string;
  phases: { index: number; sparsity: number; status: string; candidateIds: string[]; resultModelId: string | null }[];
  candidates: {
    id: string;
    phase: number;
    index: number;
    status: string;
    config: { seed: number; epochs: number } & Record<string, unknown>;
    progress: { epoch: number; step: number; steps: number } | null;
    resultModelId: string | null;
    valAccuracy: number | null;
    testAccuracy: number | null;
    startedAt: string | null;
    finishedAt: string | null;
    metrics: { train?: { samplesPerSecond?: number; durationMs?: number; samples?: number; epochCurve?: { epoch: number; valAccuracy: number | null; testAccuracy: number | null }[] } } | null;
  }[];
}

export interface RunReport {
  id: string;
  kind: string;
  status: string;
  label: string;
  phases: {
    index: number;
    sparsity: number;
    actualSparsity: number;
    status: string;
    candidates: { index: number; seed: number | null; valAccuracy: number | null; testAccuracy: number | null }[];
    candidateMean: { valAccuracy: number | null; testAccuracy: number | null };
    candidateBest: { valAccuracy: number | null; testAccuracy: number | null };
    result: { modelId: string; valAccuracy: number | null; testAccuracy: number | null; ece: number | null; meanCorruptionAccuracy: number | null } | null;
    soup: { method: string; weights: number[] } | null;
    ensembleTestAccuracy: number | null;
    meanL2Distance: number | null;
    meanAngleDegrees: number | null;
  }[];
}

export interface RunCompare {
  runs: { id: string; kind: string; label: string; status: string }[];
  rows: { phase: number; sparsity: number | null; cells: { runId: string; testAccuracy: number | null; bestCandidateTestAccuracy: number | null }[] }[];
}

export const FINISHED = ['succeeded', 'failed', 'cancelled'];

/** Polls GET /runs/{id} until the run is finished. */
export async function waitForRun(api: Client, id: string, everyMs = 2000): Promise<Run> {
  for (;;) {
    const run = await api.json<Run>('GET', `/runs/${id}`);
    if (FINISHED.includes(run.status)) return run;
    await sleep(everyMs);
  }
}

export const pct = (x: number | null | undefined, digits = 2) => (x == null || !Number.isFinite(x) ? 'n/a' : `${(x * 100).toFixed(digits)} %`);

export { freePort } from '../src/common/free-port.js';
