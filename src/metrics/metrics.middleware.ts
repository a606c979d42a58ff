import { Injectable, type NestMiddleware } from '@nestjs/common';
import type { NextFunction, Request, Response } from 'express';
import { type IngestKind, MetricsService } from './metrics.service.js';

/** Upload routes whose accepted bodies count as ingested bytes. */
const INGEST_ROUTES: Record<string, IngestKind> = { '/models': 'model', '/datasets': 'dataset' };

/**
 * Counts every request once its response has finished, labelled with the route template
 * (`/runs/:id`, not the id) so the series stay few; requests no route matched share `unmatched`.
 */
@Injectable()
export class MetricsMiddleware implements NestMiddleware {
  constructor(private readonly metrics: MetricsService) {}

  use(req: Request, res: Response, next: NextFunction): void {
    const start = process.hrtime.bigint();
    const socketStart = req.socket?.bytesRead ?? 0;
    // Express sets req.route to this middleware's own catch-all layer; a matched handler replaces it.
    const own = routeLayer(req);
    res.once('finish', () => {
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      const route = routeLayer(req) === own ? 'unmatched' : routeOf(req);
      this.metrics.observeRequest(req.method, route, res.statusCode, seconds);
      const kind = req.method === 'POST' && res.statusCode < 300 ? INGEST_ROUTES[route] : undefined;
      if (kind) {
        // The declared length when there is one; chunked uploads: what the socket read meanwhile.
        const declared = Number(req.headers['content-length']);
        this.metrics.addIngestedBytes(Number.isFinite(declared) && declared > 0 ? declared : (req.socket?.bytesRead ?? 0) - socketStart, kind);
      }
    });
    next();
  }
}

function routeLayer(req: Request): { path?: unknown } | undefined {
  return (req as Request & { route?: { path?: unknown } }).route;
}

export function routeOf(req: Request): string {
  const path = routeLayer(req)?.path;
  if (typeof path !== 'string') return 'unmatched';
  const full = `${req.baseUrl ?? ''}${path}`;
  return full.length > 1 && full.endsWith('/') ? full.slice(0, -1) : full || '/';
}
