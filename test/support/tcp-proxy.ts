import { createServer, type Server, type Socket, connect } from 'node:net';

/**
 * A TCP proxy in front of the database, for outage tests: `cut()` closes every connection and
 * refuses new ones (the port stops listening, as when the server is down); `restore()` listens again
 * on the same port. The real server is never touched.
 */
export interface TcpProxy {
  port: number;
  /** `whileRefusing` runs after the port stops listening and before the open connections are closed. */
  cut: (whileRefusing?: () => Promise<void>) => Promise<void>;
  restore: () => Promise<void>;
  close: () => Promise<void>;
}

export async function startTcpProxy(targetHost: string, targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  let server: Server | null = null;
  let port = 0;
  const listen = () =>
    new Promise<void>((resolve, reject) => {
      const s = createServer((client) => {
        const upstream = connect(targetPort, targetHost);
        sockets.add(client);
        sockets.add(upstream);
        const drop = () => {
          client.destroy();
          upstream.destroy();
          sockets.delete(client);
          sockets.delete(upstream);
        };
        client.on('error', drop).on('close', drop);
        upstream.on('error', drop).on('close', drop);
        client.pipe(upstream);
        upstream.pipe(client);
      });
      s.once('error', reject);
      s.listen(port, '127.0.0.1', () => {
        port = (s.address() as { port: number }).port;
        server = s;
        resolve();
      });
    });
  const stop = async (whileRefusing?: () => Promise<void>) => {
    const s = server;
    server = null;
    const closed = new Promise<void>((resolve) => (s ? s.close(() => resolve()) : resolve()));
    await whileRefusing?.();
    for (const sock of sockets) sock.destroy();
    sockets.clear();
    await closed;
  };
  await listen();
  return { port, cut: stop, restore: listen, close: () => stop() };
}
