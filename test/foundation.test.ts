import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ArtifactsService } from '../src/artifacts/artifacts.service.js';
import type { FsArtifactStore } from '../src/storage/fs-artifact-store.js';
import { startTestApp, type TestApp } from './support/app.js';

const PROBLEM = /application\/problem\+json/;

describe('service foundation over HTTP', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(() => t?.close());

  it('GET /health reports the database, the artifact folder and the backend', async () => {
    const res = await request(t.http).get('/health').expect(200);
    expect(res.body).toMatchObject({
      status: 'ok',
      database: { ok: true, driver: process.env.DATABASE_URL ? 'postgres' : 'pglite' },
      artifacts: { ok: true },
      backend: { ok: true },
      workers: { ok: true, overdue: 0, timedOut: 0 },
    });
    expect(['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu']).toContain(res.body.backend.name);
    expect(res.headers['x-request-id']).toBeTruthy();
  });

  it('answers 503 when the artifact folder is not writable', async () => {
    const { rmSync, writeFileSync, mkdirSync } = await import('node:fs');
    const tmp = (t.app.get(ArtifactsService).store as FsArtifactStore).tmpDir;
    rmSync(tmp, { recursive: true, force: true });
    writeFileSync(tmp, 'a file where the temporary folder should be');
    try {
      const res = await request(t.http).get('/health').expect(503);
      expect(res.body).toMatchObject({ status: 'unavailable', artifacts: { ok: false }, database: { ok: true } });
    } finally {
      rmSync(tmp, { force: true });
      mkdirSync(tmp, { recursive: true });
    }
    await request(t.http).get('/health').expect(200);
  });

  it('echoes a client request id', async () => {
    const res = await request(t.http).get('/health').set('x-request-id', 'abc-123').expect(200);
    expect(res.headers['x-request-id']).toBe('abc-123');
  });

  it('answers an unknown route with a 404 problem', async () => {
    const res = await request(t.http).get('/no/such/route').expect(404);
    expect(res.headers['content-type']).toMatch(PROBLEM);
    expect(res.body).toMatchObject({ status: 404, title: 'Not Found', type: expect.stringContaining('not-found') });
  });

  it('answers a body that fails validation with a 400 problem listing each field', async () => {
    const res = await request(t.http).post('/artifacts/gc').send({ graceSeconds: -5, extra: 1 }).expect(400);
    expect(res.headers['content-type']).toMatch(PROBLEM);
    const fields = res.body.errors.map((e: { field: string }) => e.field).sort();
    expect(fields).toEqual(['extra', 'graceSeconds']);
    expect(res.body.detail).toContain('graceSeconds');
  });

  it('answers malformed JSON with a 400 problem', async () => {
    const res = await request(t.http).post('/artifacts/gc').set('content-type', 'application/json').send('{"graceSeconds": ').expect(400);
    expect(res.headers['content-type']).toMatch(PROBLEM);
  });

  it('refuses a deeply nested JSON body with a 400 problem before parsing it', async () => {
    const body = `{"graceSeconds":${'['.repeat(1024 * 1024 - 40)}${']'.repeat(10)}}`;
    const res = await request(t.http).post('/artifacts/gc').set('content-type', 'application/json').send(body.slice(0, 1000 * 1000)).expect(400);
    expect(res.headers['content-type']).toMatch(PROBLEM);
    expect(res.body).toMatchObject({ type: expect.stringContaining('json-too-deep'), status: 400 });
    const ok = `{"graceSeconds":${'['.repeat(31)}${']'.repeat(31)}}`;
    const shallow = await request(t.http).post('/artifacts/gc').set('content-type', 'application/json').send(ok).expect(400);
    expect(shallow.body.type).toContain('validation');
  });

  it('refuses a JSON body over 1 MiB with a 413 problem', async () => {
    const res = await request(t.http).post('/artifacts/gc').set('content-type', 'application/json').send(`{"x":"${'a'.repeat(2 * 1024 * 1024)}"}`).expect(413);
    expect(res.headers['content-type']).toMatch(PROBLEM);
  });

  it('refuses a JSON body in another charset than UTF-8 (415 problem)', async () => {
    const res = await request(t.http).post('/artifacts/gc').set('content-type', 'application/json; charset=utf-16le')
      .send(Buffer.from('{}', 'utf16le')).expect(415);
    expect(res.headers['content-type']).toMatch(PROBLEM);
  });

  it('answers a bad paging query with a 400 problem', async () => {
    const res = await request(t.http).get('/artifacts?limit=0').expect(400);
    expect(res.body.errors[0].field).toBe('limit');
  });

  it('collects garbage: unreferenced artifact rows and files go, within the grace period nothing does', async () => {
    const svc = t.app.get(ArtifactsService);
    const stored = await svc.store.put(new TextEncoder().encode('orphan'));
    await t.dataSource.transaction((m) => svc.record(m, stored, 'text/plain'));
    const list = await request(t.http).get('/artifacts').expect(200);
    expect(list.body.items.map((i: { sha256: string }) => i.sha256)).toContain(stored.sha256);
    await request(t.http).post('/artifacts/gc').send({}).expect(200);
    expect(await svc.store.has(stored.sha256)).toBe(true);
    const res = await request(t.http).post('/artifacts/gc').send({ graceSeconds: 0 }).expect(200);
    expect(res.body.rowsDeleted).toBe(1);
    expect(await svc.store.has(stored.sha256)).toBe(false);
  });
});

describe('auth with API_KEYS', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ API_KEYS: 'ci:write-key:write,dash:read-key:read' });
  });
  afterAll(() => t?.close());

  it('leaves /health open', async () => {
    await request(t.http).get('/health').expect(200);
  });

  it('answers 401 problem without a key or with a wrong one', async () => {
    const a = await request(t.http).get('/artifacts').expect(401);
    expect(a.headers['content-type']).toMatch(PROBLEM);
    expect(a.headers['www-authenticate']).toBe('Bearer');
    await request(t.http).get('/artifacts').set('authorization', 'Bearer nope').expect(401);
  });

  it('lets a read key read but not write (403 problem)', async () => {
    await request(t.http).get('/artifacts').set('authorization', 'Bearer read-key').expect(200);
    const res = await request(t.http).post('/artifacts/gc').set('authorization', 'Bearer read-key').send({}).expect(403);
    expect(res.headers['content-type']).toMatch(PROBLEM);
    expect(res.body.detail).toContain('read');
  });

  it('checks the key before reading a body: malformed or deeply nested JSON without a key is a 401', async () => {
    const res = await request(t.http).post('/artifacts/gc').set('content-type', 'application/json').send('{"graceSeconds": ').expect(401);
    expect(res.headers['content-type']).toMatch(PROBLEM);
    await request(t.http).post('/artifacts/gc').set('content-type', 'application/json').send('['.repeat(900_000)).expect(401);
    await request(t.http).post('/no/such/route').set('content-type', 'application/json').send('{').expect(401);
    const read = await request(t.http).post('/artifacts/gc').set('authorization', 'Bearer read-key').set('content-type', 'application/json').send('{"graceSeconds": ').expect(403);
    expect(read.headers['content-type']).toMatch(PROBLEM);
    // With a valid key the body is parsed and its fault named.
    await request(t.http).post('/artifacts/gc').set('authorization', 'Bearer write-key').set('content-type', 'application/json').send('{"graceSeconds": ').expect(400);
  });

  it('lets a write key write', async () => {
    await request(t.http).post('/artifacts/gc').set('authorization', 'Bearer write-key').send({}).expect(200);
  });
});
