import { BadRequestException, Logger } from '@nestjs/common';
import { describe, expect, it, vi } from 'vitest';
import { ProblemFilter } from './problem.filter.js';
import { ProblemException } from './problem.js';

function fakeHost() {
  const res = {
    statusCode: 0,
    headers: {} as Record<string, string>,
    body: '',
    contentType: '',
    headersSent: false,
    status(code: number) { this.statusCode = code; return this; },
    type(t: string) { this.contentType = t; return this; },
    setHeader(k: string, v: string) { this.headers[k] = v; },
    send(b: string) { this.body = b; },
  };
  const req = { id: 'req-42', originalUrl: '/models/x', url: '/models/x' };
  const host = { switchToHttp: () => ({ getRequest: () => req, getResponse: () => res }) };
  // biome-ignore lint/suspicious/noExplicitAny: a minimal ArgumentsHost.
  return { host: host as any, res };
}

describe('ProblemFilter', () => {
  it('answers unknown errors with a 500 that hides internals and logs them with the request id', () => {
    const spy = vi.spyOn(Logger.prototype, 'error').mockImplementation(() => {});
    const { host, res } = fakeHost();
    new ProblemFilter().catch(new Error('password=hunter2 at db.ts:12'), host);
    expect(res.statusCode).toBe(500);
    expect(res.contentType).toBe('application/problem+json');
    const body = JSON.parse(res.body);
    expect(body).toMatchObject({ status: 500, title: 'Internal Server Error', requestId: 'req-42' });
    expect(res.body).not.toContain('hunter2');
    expect(spy).toHaveBeenCalledWith(expect.objectContaining({ requestId: 'req-42' }), 'unhandled error');
    spy.mockRestore();
  });

  it('keeps the type and extensions of a ProblemException', () => {
    const { host, res } = fakeHost();
    new ProblemFilter().catch(new ProblemException(422, 'masks differ', { slug: 'mask-mismatch', extensions: { mismatches: [1] } }), host);
    expect(JSON.parse(res.body)).toMatchObject({
      type: 'https://sparsoup.dev/problems/mask-mismatch',
      status: 422,
      detail: 'masks differ',
      mismatches: [1],
      instance: '/models/x',
    });
  });

  it('turns framework HttpExceptions into problems', () => {
    const { host, res } = fakeHost();
    new ProblemFilter().catch(new BadRequestException('nope'), host);
    expect(JSON.parse(res.body)).toMatchObject({ status: 400, title: 'Bad Request', detail: 'nope' });
  });
});
