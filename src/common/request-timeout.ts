import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { NextFunction, Request, Response } from 'express';
import type { AppConfig } from '../config/config.js';
import { ProblemException } from './problem.js';

/** Longer than the 60 s idle timeout of common load balancers, so they never reuse a closed socket. */
export const KEEP_ALIVE_TIMEOUT_MS = 65_000;

/**
 * Node's own limits, set from the configuration: `requestTimeout` (default 300 s, which cuts any
 * upload slower than 28 MB/s at an 8 GiB limit) follows REQUEST_TIMEOUT_SECONDS, which by default
 * follows MAX_UPLOAD_BYTES. Node answers its timeout with a bare 408, so it is only a backstop a few
 * seconds behind `requestTimeLimit`, which answers first with a problem.
 */
export function configureServerTimeouts(server: Server, config: AppConfig): void {
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  server.headersTimeout = KEEP_ALIVE_TIMEOUT_MS + 1000;
  server.requestTimeout = config.requestTimeoutMs + 5000;
  closeConnectionsOnShutdown(server);
}

/** How long a shutting-down server lets requests in flight finish before it cuts them. */
export const SHUTDOWN_GRACE_MS = 10_000;

/**
 * A long keep-alive has a cost at shutdown: Node's `server.close()` waits for every open connection,
 * and a client's idle keep-alive socket stays open for the 65 s above (Node 20's own
 * `closeIdleConnections` does not see such a socket as idle). So the server counts the requests on
 * each connection itself; closing, it ends the idle connections at once and each other one as its
 * last response finishes, and cuts what still runs after SHUTDOWN_GRACE_MS (a followed SSE stream).
 */
export function closeConnectionsOnShutdown(server: Server, graceMs = SHUTDOWN_GRACE_MS): void {
  let closing = false;
  const active = new Map<Socket, number>();
  server.on('connection', (socket: Socket) => {
    active.set(socket, 0);
    socket.once('close', () => active.delete(socket));
  });
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    active.set(socket, (active.get(socket) ?? 0) + 1);
    if (closing) res.shouldKeepAlive = false;
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      const left = Math.max(0, (active.get(socket) ?? 1) - 1);
      if (active.has(socket)) active.set(socket, left);
      if (closing && left === 0) socket.end();
    };
    // 'finish' when the response went out ('close' alone comes late on a kept-alive socket), 'close' when it was cut.
    res.once('finish', end);
    res.once('close', end);
  });
  const close = server.close.bind(server);
  server.close = ((callback?: (err?: Error) => void) => {
    if (!closing) {
      closing = true;
      for (const [socket, requests] of active) if (requests === 0) socket.end();
      const cut = setTimeout(() => {
        for (const socket of active.keys()) socket.destroy();
      }, graceMs);
      cut.unref();
      server.once('close', () => clearTimeout(cut));
    }
    return close(callback);
  }) as Server['close'];
}

/**
 * A request whose body has not fully arrived within REQUEST_TIMEOUT_SECONDS is answered with a 408
 * problem and its connection closed, which ends the upload reading it (and so its cleanup runs).
 * Only the arrival is timed: a response that streams for long (SSE) is not cut.
 */
export function requestTimeLimit(config: AppConfig, send: (req: Request, res: Response, err: unknown) => void) {
  const ms = config.requestTimeoutMs;
  return (req: Request, res: Response, next: NextFunction): void => {
    const timer = setTimeout(() => {
      if (req.complete || res.headersSent) return;
      send(req, res, new ProblemException(408, `the request did not arrive in full within ${ms / 1000} s (REQUEST_TIMEOUT_SECONDS)`));
      res.once('finish', () => req.destroy());
    }, ms);
    timer.unref();
    const clear = () => clearTimeout(timer);
    req.once('end', clear);
    res.once('finish', clear);
    res.once('close', clear);
    next();
  };
}
