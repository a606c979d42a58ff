import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeIdx } from '../src/core/data/idx.js';
import { startTestApp, type TestApp } from './support/app.js';
import { artifactFiles } from './support/files.js';
import { chunked, multipart, openFds, rawRequest } from './support/raw-http.js';

const LIMIT = 64 * 1024;
const images = encodeIdx('uint8', [20, 4, 4], Array.from({ length: 320 }, (_, i) => i % 256));
const labels = encodeIdx('uint8', [20], Array.from({ length: 20 }, (_, i) => i % 2));

/** Dataset uploads that go wrong on the wire: a 4xx answer where a client can still read one, no row, no file, no descriptor. */
describe('dataset uploads cut, unterminated or over the limit', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ MAX_UPLOAD_BYTES: String(LIMIT) }, { listen: true });
  });
  afterAll(() => t?.close());

  // Descriptors of this process open on the artifact folder (the database opens its own files lazily).
  const artifactFds = () => openFds('self', `${t.config.dataDir}/artifacts`);
  const datasets = async () => (await request(t.http).get('/datasets')).body.total as number;
  const head = (contentType: string, framing: string) =>
    `POST /datasets?name=raw HTTP/1.1\r\nHost: x\r\nContent-Type: ${contentType}\r\n${framing}\r\n`;
  /** Runs `send`, then checks nothing was left behind (waiting briefly for the server's cleanup). */
  async function leavesNothing(send: () => Promise<void>) {
    const before = { rows: await datasets(), files: artifactFiles(t.config.dataDir), fds: artifactFds() };
    await send();
    await new Promise((r) => setTimeout(r, 300)); // the server's side of a cut connection lags the client's
    for (let i = 0; i < 50 && (artifactFiles(t.config.dataDir).length !== before.files.length || artifactFds() > before.fds); i++) await new Promise((r) => setTimeout(r, 100));
    expect(await datasets()).toBe(before.rows);
    expect(artifactFiles(t.config.dataDir)).toEqual(before.files);
    expect(artifactFds()).toBeLessThanOrEqual(before.fds);
  }

  it('a multipart body whose closing boundary never comes (correct Content-Length) is a 400 problem', async () => {
    const { body, contentType } = multipart([{ field: 'images', filename: 'i', data: images }, { field: 'labels', filename: 'l', data: labels }], { terminate: false });
    await leavesNothing(async () => {
      const res = await rawRequest(t.url, head(contentType, `Content-Length: ${body.length}\r\nConnection: close\r\n`), body);
      expect(res.status).toBe(400);
      expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
      expect(res.body).toMatch(/multipart/);
    });
    await request(t.http).get('/health').expect(200);
  });

  it('a multipart body cut inside a part (chunked, then the stream ends) is a 400 problem', async () => {
    const { body, contentType } = multipart([{ field: 'images', filename: 'i', data: images }, { field: 'labels', filename: 'l', data: labels }]);
    const cut = chunked(body.subarray(0, 200));
    await leavesNothing(async () => {
      const res = await rawRequest(t.url, head(contentType, 'Transfer-Encoding: chunked\r\nConnection: close\r\n'), cut);
      expect(res.status).toBe(400);
      expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
    });
  });

  it('a client that goes away mid-part leaves no file and no open descriptor', async () => {
    const { body, contentType } = multipart([{ field: 'images', filename: 'i', data: images }, { field: 'labels', filename: 'l', data: labels }]);
    await leavesNothing(async () => {
      await rawRequest(t.url, head(contentType, `Content-Length: ${body.length + 1000}\r\n`), body, { cutAfter: 250 });
    });
    const octet = Buffer.alloc(10_000, 7);
    await leavesNothing(async () => {
      await rawRequest(t.url, head('application/octet-stream', `Content-Length: ${octet.length}\r\n`), octet, { cutAfter: 5000 });
    });
    await request(t.http).get('/health').expect(200);
  });

  it('counts the whole chunked multipart body against MAX_UPLOAD_BYTES, not each part (413)', async () => {
    // Four parts each under the limit, together over it.
    const part = encodeIdx('uint8', [1000, 6, 6], new Array(36_000).fill(3));
    const lab = encodeIdx('uint8', [1000], new Array(1000).fill(1));
    const { body, contentType } = multipart([
      { field: 'images', filename: 'i', data: part },
      { field: 'labels', filename: 'l', data: lab },
      { field: 'testImages', filename: 'ti', data: part },
      { field: 'testLabels', filename: 'tl', data: lab },
    ]);
    expect(body.length).toBeGreaterThan(LIMIT);
    await leavesNothing(async () => {
      const res = await rawRequest(t.url, head(contentType, 'Transfer-Encoding: chunked\r\nConnection: close\r\n'), chunked(body));
      expect(res.status).toBe(413);
      expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
    });
  });

  it('counts a chunked octet-stream body against MAX_UPLOAD_BYTES (413)', async () => {
    const big = Buffer.alloc(LIMIT + 10, 1);
    await leavesNothing(async () => {
      const res = await rawRequest(t.url, head('application/octet-stream', 'Transfer-Encoding: chunked\r\nConnection: close\r\n'), chunked(big));
      expect(res.status).toBe(413);
    });
  });

  it('still takes a good multipart upload', async () => {
    const { body, contentType } = multipart([{ field: 'images', filename: 'i', data: images }, { field: 'labels', filename: 'l', data: labels }]);
    const res = await rawRequest(t.url, head(contentType, `Content-Length: ${body.length}\r\nConnection: close\r\n`), body);
    expect(res.status).toBe(201);
  });
});

describe('request time limits', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ MAX_UPLOAD_BYTES: String(LIMIT), REQUEST_TIMEOUT_SECONDS: '1' }, { listen: true });
  });
  afterAll(() => t?.close());

  it('answers an upload that does not arrive in time with a 408 problem and keeps nothing', async () => {
    const files = artifactFiles(t.config.dataDir);
    const body = Buffer.alloc(5000, 1);
    // Half the declared body, then silence: the server answers at its limit, not Node's bare 408.
    const res = await rawRequest(t.url, `POST /datasets?name=slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${body.length}\r\n\r\n`, body.subarray(0, 2500));
    expect(res.status).toBe(408);
    expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
    expect(res.body).toMatch(/REQUEST_TIMEOUT_SECONDS/);
    for (let i = 0; i < 30 && artifactFiles(t.config.dataDir).length !== files.length; i++) await new Promise((r) => setTimeout(r, 100));
    expect(artifactFiles(t.config.dataDir)).toEqual(files);
  });

  it('sets Node\'s limits from the configuration: the request limit behind ours, keep-alive past a balancer\'s 60 s', () => {
    const server = t.app.getHttpServer();
    expect(server.requestTimeout).toBe(1000 + 5000);
    expect(server.keepAliveTimeout).toBeGreaterThan(60_000);
    expect(server.headersTimeout).toBeGreaterThan(server.keepAliveTimeout);
  });

  it('derives the default request limit from MAX_UPLOAD_BYTES (1 MiB/s, at least 300 s)', async () => {
    const { loadConfig } = await import('../src/config/config.js');
    expect(loadConfig({}).requestTimeoutMs).toBe(8 * 1024 * 1000); // 8 GiB at 1 MiB/s
    expect(loadConfig({ MAX_UPLOAD_BYTES: '1048576' }).requestTimeoutMs).toBe(300_000);
  });
});
