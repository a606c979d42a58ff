import request from 'supertest';
import type { TestApp } from './app.js';

/** Polls a run until it finishes (succeeded, failed or cancelled). */
export async function waitForRun(t: TestApp, id: string, timeoutMs = 120_000) {
  const start = Date.now();
  for (;;) {
    const run = (await request(t.http).get(`/runs/${id}`).expect(200)).body;
    if (['succeeded', 'failed', 'cancelled'].includes(run.status)) return run;
    if (Date.now() - start > timeoutMs) throw new Error(`run ${id} still ${run.status} after ${timeoutMs} ms: ${JSON.stringify(run.candidates.map((c: { status: string }) => c.status))}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
