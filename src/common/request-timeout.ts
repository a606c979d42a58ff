import type { Server } from 'node:http';
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
