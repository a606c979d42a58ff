import { createHmac, randomUUID } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebhookDeliveryEntity } from '../src/webhooks/webhook-delivery.entity.js';
import { WebhooksService } from '../src/webhooks/webhooks.service.js';
import { startTestApp, type TestApp } from './support/app.js';
import { safetensorsBytes, seededWeights } from './support/checkpoints.js';

const SECRET = 'whsec-test-0123456789';

interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  raw: string;
  answered: number;
}

/** A callback receiver on 127.0.0.1 that answers each path with the statuses given, in turn (then 200). */
async function startReceiver(script: Record<string, number[]>): Promise<{ url: string; received: Received[]; held: (() => void)[]; release: () => void; close: () => Promise<void> }> {
  const received: Received[] = [];
  // Requests to /hold wait for release().
  const held: (() => void)[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      if (path === '/hold' && !held.length) {
        held.push(() => res.writeHead(200).end('ok'));
        return;
      }
      const answered = script[path]?.shift() ?? 200;
      received.push({ path, headers: req.headers, raw: Buffer.concat(chunks).toString('utf8'), answered });
      res.writeHead(answered, { 'content-type': 'text/plain' }).end(answered < 300 ? 'ok' : 'try again');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const release = () => {
    for (const answer of held.splice(0)) answer();
  };
  return { url: `http://127.0.0.1:${port}`, received, held, release, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

async function until<T>(what: string, f: () => Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The receiver's side, written from the README's description rather than with the service's code. */
function independentlyVerified(secret: string, r: Received): boolean {
  const timestamp = r.headers['x-sparsoup-timestamp'] as string;
  const expected = `sha256=${createHmac('sha256', secret).update(`${timestamp}.${r.raw}`).digest('hex')}`;
  return r.headers['x-sparsoup-signature'] === expected && Math.abs(Date.now() / 1000 - Number(timestamp)) < 300;
}

describe('webhooks', () => {
  let t: TestApp;
  let webhooks: WebhooksService;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;

  beforeAll(async () => {
    receiver = await startReceiver({ '/flaky': [500], '/always-500': [500, 500, 500, 500, 500, 500, 500, 500, 500, 500] });
    t = await startTestApp({ WEBHOOK_SECRET: SECRET });
    webhooks = t.app.get(WebhooksService);
  });
  afterAll(async () => {
    await t?.close();
    await receiver?.close();
  });

  it('delivers a signed run.finished event, retrying after the receiver answers 500 once', async () => {
    const runId = randomUUID();
    const data = { kind: 'retrain', resultModelIds: [randomUUID()], error: null };
    const deliveryId = await webhooks.notify({ resource: 'run', id: runId, status: 'succeeded', callbackUrl: `${receiver.url}/flaky`, data });
    expect(deliveryId).toMatch(/^[0-9a-f-]{36}$/);

    const delivered = await until('the delivery', async () => {
      const d = (await request(t.http).get(`/webhooks/deliveries/${deliveryId}`).expect(200)).body;
      return d.state === 'delivered' && d;
    });
    expect(delivered).toMatchObject({ resource: 'run', resourceId: runId, event: 'run.finished', resourceStatus: 'succeeded', attempts: 2, lastStatusCode: 200, lastError: null });
    expect(delivered.deliveredAt).toBeTruthy();

    const attempts = receiver.received.filter((r) => r.path === '/flaky');
    expect(attempts.map((r) => r.answered)).toEqual([500, 200]);
    for (const r of attempts) {
      expect(r.headers['content-type']).toBe('application/json');
      expect(r.headers['x-sparsoup-event']).toBe('run.finished');
      expect(r.headers['x-sparsoup-delivery']).toBe(deliveryId);
      expect(r.headers['x-sparsoup-signature']).toMatch(/^sha256=[0-9a-f]{64}$/);
      expect(independentlyVerified(SECRET, r)).toBe(true);
      expect(independentlyVerified('another-secret', r)).toBe(false);
      const body = JSON.parse(r.raw);
      expect(body).toEqual({ type: 'run.finished', id: runId, status: 'succeeded', data, deliveredAt: expect.any(String) });
      expect(Number.isNaN(Date.parse(body.deliveredAt))).toBe(false);
    }
    // A body altered in transit (or replayed under a fresh timestamp) no longer matches the signature.
    const last = attempts[1];
    expect(independentlyVerified(SECRET, { ...last, raw: last.raw.replace('succeeded', 'failed') })).toBe(false);
    expect(independentlyVerified(SECRET, { ...last, headers: { ...last.headers, 'x-sparsoup-timestamp': String(Number(last.headers['x-sparsoup-timestamp']) + 60) } })).toBe(false);
  });

  it('never waits for the receiver: notify returns while the receiver holds the request', async () => {
    const runId = randomUUID();
    const deliveryId = await webhooks.notify({ resource: 'run', id: runId, status: 'cancelled', callbackUrl: `${receiver.url}/hold` });
    await until('the held request', async () => receiver.held.length > 0);
    // The attempt is in flight: nothing is recorded until the receiver answers.
    expect((await request(t.http).get(`/webhooks/deliveries/${deliveryId}`).expect(200)).body).toMatchObject({ state: 'pending', attempts: 0 });
    receiver.release();
    await until('the held delivery', async () => (await request(t.http).get(`/webhooks/deliveries/${deliveryId}`)).body.state === 'delivered');
  });

  it('records an event once per resource, and nothing without a callback URL', async () => {
    const soupId = randomUUID();
    const first = await webhooks.notify({ resource: 'soup', id: soupId, status: 'failed', callbackUrl: `${receiver.url}/soup`, data: { error: 'mask mismatch' } });
    expect(first).toBeTruthy();
    expect(await webhooks.notify({ resource: 'soup', id: soupId, status: 'failed', callbackUrl: `${receiver.url}/soup` })).toBeNull();
    expect(await webhooks.notify({ resource: 'soup', id: randomUUID(), status: 'succeeded', callbackUrl: null })).toBeNull();
    const page = (await request(t.http).get(`/webhooks/deliveries?resourceId=${soupId}`).expect(200)).body;
    expect(page.total).toBe(1);
    const r = await until('the soup event', async () => receiver.received.find((x) => x.path === '/soup'));
    expect(JSON.parse(r.raw)).toMatchObject({ type: 'soup.finished', id: soupId, status: 'failed', data: { error: 'mask mismatch' } });
  });

  it('notify inside a transaction: no event when the transaction rolls back', async () => {
    const runId = randomUUID();
    await expect(
      t.dataSource.transaction(async (manager) => {
        await webhooks.notify({ resource: 'run', id: runId, status: 'failed', callbackUrl: `${receiver.url}/rolled-back` }, { manager });
        throw new Error('the caller fails after notify');
      }),
    ).rejects.toThrow('the caller fails');
    expect((await request(t.http).get(`/webhooks/deliveries?resourceId=${runId}`).expect(200)).body.total).toBe(0);
  });

  it('records each failed attempt, and gives up as failed when the retries are spent', async () => {
    // Rows made without a job, so that only the attempts made here run.
    const repo = t.dataSource.getRepository(WebhookDeliveryEntity);
    const row = (url: string) => repo.save(repo.create({ resource: 'run', resourceId: randomUUID(), event: 'run.finished', resourceStatus: 'failed', url, data: {}, state: 'pending' }));
    const refused = await row('http://127.0.0.1:9/closed-port');
    await expect(webhooks.deliver(refused.id, { retryCount: 0 })).rejects.toThrow(/closed-port/);
    expect(await repo.findOneByOrFail({ id: refused.id })).toMatchObject({ state: 'pending', attempts: 1, lastStatusCode: null, lastError: expect.stringMatching(/ECONNREFUSED|fetch failed/) });

    const rejecting = await row(`${receiver.url}/always-500`);
    await expect(webhooks.deliver(rejecting.id, { retryCount: 7 })).rejects.toThrow(/500/);
    expect(await repo.findOneByOrFail({ id: rejecting.id })).toMatchObject({ state: 'pending', attempts: 1, lastStatusCode: 500 });
    await expect(webhooks.deliver(rejecting.id, { retryCount: 8 })).rejects.toThrow(/500/);
    expect(await repo.findOneByOrFail({ id: rejecting.id })).toMatchObject({ state: 'failed', attempts: 2, lastStatusCode: 500, lastError: 'the receiver answered 500' });
    // A failed or delivered event is not sent again by a stray job.
    expect(await webhooks.deliver(rejecting.id, { retryCount: 0 })).toBe('skipped');
    expect((await request(t.http).get('/webhooks/deliveries?state=failed').expect(200)).body.items.map((d: { id: string }) => d.id)).toContain(rejecting.id);
  });

  it('a run and a soup with a callbackUrl each announce their end through the API', async () => {
    const template = (await request(t.http).post('/models/templates').send({ architecture: 'lenet-300-100', datasetId: 'mnist', seed: 5 }).expect(201)).body;
    const training = { epochs: 0.02, batchSize: 64, learningRate: 0.05, schedule: 'constant' };
    const run = (await request(t.http).post('/runs').send({ kind: 'train', modelId: template.id, datasetId: 'mnist', training, callbackUrl: `${receiver.url}/runs` }).expect(202)).body;
    const runHook = await until('the run webhook', async () => receiver.received.find((r) => r.path === '/runs'), 120_000);
    expect(independentlyVerified(SECRET, runHook)).toBe(true);
    expect(JSON.parse(runHook.raw)).toMatchObject({ type: 'run.finished', id: run.id, status: 'succeeded', data: { kind: 'train' } });

    const upload = async (seed: number) => {
      const body = await safetensorsBytes([{ name: 'fc/kernel', shape: [8, 4], data: seededWeights(32, seed) }]);
      return (await request(t.http).post(`/models?name=w${seed}`).set('content-type', 'application/octet-stream').send(body).expect(201)).body;
    };
    const [a, b] = [await upload(1), await upload(2)];
    const soup = (await request(t.http).post('/soups').send({ modelIds: [a.id, b.id], method: 'uniform', callbackUrl: `${receiver.url}/soups` }).expect(201)).body;
    const soupHook = await until('the soup webhook', async () => receiver.received.find((r) => r.path === '/soups'));
    expect(independentlyVerified(SECRET, soupHook)).toBe(true);
    expect(JSON.parse(soupHook.raw)).toMatchObject({ type: 'soup.finished', id: soup.id, status: 'succeeded', data: { resultModelId: soup.resultModelId } });
  });

  it('answers bad queries and unknown ids with problem+json', async () => {
    const bad = await request(t.http).get('/webhooks/deliveries?state=lost').expect(400);
    expect(bad.headers['content-type']).toMatch(/application\/problem\+json/);
    await request(t.http).get(`/webhooks/deliveries/${randomUUID()}`).expect(404);
  });
});
