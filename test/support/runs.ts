import { request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import request from 'supertest';
import type { TestApp } from './app.js';

/** One event of `GET /runs/{id}/events`. */
export interface RunEvent {
  id: number;
  type: string;
  data: Record<string, unknown> & { candidateId?: string | null };
}

/** The app's HTTP server, listening on a loopback port (supertest's apps are not). */
async function baseUrl(t: TestApp): Promise<string> {
  if (t.url) return t.url;
  const server = t.http as Server;
  if (!server.listening) await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/**
 * Follows the run's server-sent events until one satisfies `match`, and answers it: the one way
 * tests wait for something a run does (no polling, no sleeps). Rejects when the stream ends
 * (after `run-finished`) or `timeoutMs` passes without a match, naming the events it saw.
 */
export async function waitForRunEvent(t: TestApp, runId: string, match: (e: RunEvent) => boolean, timeoutMs = 120_000): Promise<RunEvent> {
  const url = `${await baseUrl(t)}/runs/${runId}/events`;
  const seen: string[] = [];
  return new Promise<RunEvent>((resolve, reject) => {
    let res: IncomingMessage | null = null;
    const done = (err: Error | null, event?: RunEvent) => {
      clearTimeout(timer);
      res?.destroy();
      req.destroy();
      if (err) reject(err);
      else resolve(event!);
    };
    const timer = setTimeout(() => done(new Error(`run ${runId}: no matching event within ${timeoutMs} ms; saw ${seen.join(', ') || 'none'}`)), timeoutMs);
    const req = httpRequest(url, { headers: { accept: 'text/event-stream', ...(t.config.apiKeys?.[0] ? { authorization: `Bearer ${t.config.apiKeys[0].key}` } : {}) } }, (r) => {
      res = r;
      if (r.statusCode !== 200) return done(new Error(`GET /runs/${runId}/events answered ${r.statusCode}`));
      let buffer = '';
      r.setEncoding('utf8');
      r.on('data', (chunk: string) => {
        buffer += chunk;
        for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const field = (name: string) => block.split('\n').find((l) => l.startsWith(`${name}: `))?.slice(name.length + 2);
          const type = field('event');
          if (!type) continue;
          const event: RunEvent = { id: Number(field('id')), type, data: JSON.parse(field('data') ?? '{}') };
          seen.push(type);
          if (match(event)) return done(null, event);
        }
      });
      r.on('end', () => done(new Error(`run ${runId}: the event stream ended without a matching event; saw ${seen.join(', ') || 'none'}`)));
      r.on('error', (err) => done(err));
    });
    req.on('error', (err) => done(err));
    req.end();
  });
}

/** Waits for the run's `run-finished` event and answers the finished run (succeeded, failed or cancelled). */
export async function waitForRun(t: TestApp, id: string, timeoutMs = 120_000) {
  try {
    await waitForRunEvent(t, id, (e) => e.type === 'run-finished', timeoutMs);
  } catch (err) {
    const run = (await request(t.http).get(`/runs/${id}`)).body;
    throw new Error(`${(err as Error).message}; the run is ${run.status}: ${JSON.stringify(run.candidates?.map((c: { status: string }) => c.status))}`);
  }
  return (await request(t.http).get(`/runs/${id}`).expect(200)).body;
}

/**
 * Waits for a queued soup (greedy, or one with BN recalibration) to end. Soups have no event stream,
 * so this one polls `GET /soups/{id}` (600 times, 250 ms apart).
 */
export async function waitForSoup(t: TestApp, id: string) {
  for (let i = 0; i < 600; i++) {
    const s = (await request(t.http).get(`/soups/${id}`).expect(200)).body;
    if (['succeeded', 'failed'].includes(s.status)) return s;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`soup ${id} did not finish`);
}
