import { createServer } from 'node:net';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { constraintViolation, describeViolation, isDatabaseUnavailable } from './errors.js';

/** A port that refuses connections: one we listened on and closed. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

describe('database errors', () => {
  it('a refused connection from the real driver is "unavailable", directly and wrapped as TypeORM wraps it', async () => {
    const client = new pg.Client({ host: '127.0.0.1', port: await closedPort(), user: 'x', database: 'x' });
    const err = await client.connect().then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeTruthy();
    expect(isDatabaseUnavailable(err)).toBe(true);
    expect(isDatabaseUnavailable({ message: 'query failed', driverError: err })).toBe(true);
  });

  it('a server going down (57P01), a connect timeout and a cut session are "unavailable"; query faults and client hang-ups are not', () => {
    expect(isDatabaseUnavailable({ code: '57P01', message: 'terminating connection due to administrator command' })).toBe(true);
    expect(isDatabaseUnavailable(new Error('timeout exceeded when trying to connect'))).toBe(true);
    expect(isDatabaseUnavailable(new Error('Connection terminated unexpectedly'))).toBe(true);
    expect(isDatabaseUnavailable({ code: '42601', message: 'syntax error at or near "SELEC"' })).toBe(false);
    expect(isDatabaseUnavailable({ code: '23503', message: 'insert or update violates foreign key constraint' })).toBe(false);
    expect(isDatabaseUnavailable(Object.assign(new Error('aborted'), { code: 'ECONNRESET' }))).toBe(false);
    expect(isDatabaseUnavailable(null)).toBe(false);
  });

  it('names the resource of a foreign-key violation either way round', () => {
    const missing = constraintViolation({ driverError: { code: '23503', table: 'soup_ingredient', detail: 'Key (model_id)=(m-1) is not present in table "model".' } });
    expect(missing?.kind).toBe('foreign-key');
    expect(describeViolation(missing!)).toEqual({ resource: 'model', detail: expect.stringContaining('model m-1 was deleted') });
    const used = constraintViolation({ code: '23503', table: 'model', detail: 'Key (id)=(m-2) is still referenced from table "soup_ingredient".' });
    expect(describeViolation(used!)).toEqual({ resource: 'model', detail: expect.stringContaining('model m-2 is still used by soup ingredient') });
    expect(constraintViolation({ code: '22P02' })).toBeNull();
  });
});
