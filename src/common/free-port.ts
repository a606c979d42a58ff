import { createServer } from 'node:net';

/**
 * A local TCP port nothing listens on now (the OS picks it), for a service started as a child
 * process by the tests, the benches and the fuzzer. Another process may take it before the child
 * binds it; the callers start one service at a time.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (address && typeof address === 'object' ? resolve(address.port) : reject(new Error('the OS gave no port'))));
    });
  });
}
