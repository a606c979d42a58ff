import { Injectable, type NestMiddleware } from '@nestjs/common';
import type { NextFunction, Request, Response } from 'express';
import { MetricsService } from './metrics.service.js';

/**
 * Counts every request once its response has finished, labelled with the route template
 * (`/runs/:id`, not the id) so the series stay few; requests no route matched share `unmatched`.
 */
@Injectable()
export class MetricsMiddleware implements NestMiddleware {
  constructor(private readonly metrics: MetricsService) {}

  use(req: Request, res: Response, next: NextFunction): void {
    const start = process.hrtime.bigint();
    // Express sets req.route to this middleware's own catch-all layer; a matched handler replaces it.
    const own = routeLayer(req);
    res.once('finish', () => {
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      const route = routeLayer(req) === own ? 'unmatched' : routeOf(req);
      this.metrics.observeRequest(req.method, route, res.statusCode, seconds);
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
