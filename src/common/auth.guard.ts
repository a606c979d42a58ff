import { type CanActivate, type ExecutionContext, Inject, Injectable, SetMetadata } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { InjectDataSource } from '@nestjs/typeorm';
import type { NextFunction, Request, Response } from 'express';
import type { DataSource } from 'typeorm';
import type { ApiKey, AppConfig } from '../config/config.js';
import { APP_CONFIG } from '../config/config.module.js';
import { ApiKeys, READ_METHODS, WORKER_DOWNLOAD } from './api-keys.js';
import { ProblemException } from './problem.js';

const PUBLIC = 'sparsoup:public';
/** Marks a route that needs no key (health, docs). */
export const Public = () => SetMetadata(PUBLIC, true);

/**
 * With API_KEYS set, every route but the public ones needs `Authorization: Bearer <key>`;
 * a `read` key may only read. With no keys configured the service is open.
 */
@Injectable()
export class AuthGuard implements CanActivate {
  private readonly keys: ApiKeys;

  constructor(
    @Inject(APP_CONFIG) config: AppConfig,
    private readonly reflector: Reflector,
    @InjectDataSource() private readonly dataSource: DataSource,
  ) {
    this.keys = new ApiKeys(config.apiKeys);
  }

  async canActivate(context: ExecutionContext): Promise<boolean> {
    if (!this.keys.enabled) return true;
    if (this.reflector.getAllAndOverride<boolean>(PUBLIC, [context.getHandler(), context.getClass()])) return true;
    const req = context.switchToHttp().getRequest<Request & { apiKey?: ApiKey }>();
    req.apiKey = this.keys.authorize(req.headers.authorization, req.method, req.path);
    if (req.apiKey.scope === 'worker') {
      // A worker key downloads only what a task it could hold names: a model or mask of a leased task.
      const m = WORKER_DOWNLOAD.exec(req.path);
      if (m) {
        // A model: the task's input, or one of the candidates whose ensemble it may evaluate.
        const where = m[1].toLowerCase() === 'models' ? `(model_id = $1 OR ensemble_model_ids @> jsonb_build_array($1::text))` : 'mask_id = $1';
        const rows: unknown[] = await this.dataSource.query(`SELECT 1 FROM task WHERE ${where} AND status = 'leased' LIMIT 1`, [m[2].toLowerCase()]);
        if (!rows.length) throw new ProblemException(403, `the key "${req.apiKey.name}" has scope worker: it may download only the models and masks of leased tasks, and no leased task names ${m[1].slice(0, -1)} ${m[2]}`);
      }
    }
    return true;
  }
}

/**
 * Express middleware that runs before any body is read: with API_KEYS set, a request that may carry
 * a body (every method but GET/HEAD/OPTIONS, and every public route is a GET) is refused with its
 * 401/403 before a byte of it is parsed. The guard still decides per route (public routes, reads).
 */
export function authBeforeBody(config: AppConfig, problem: (res: Response, err: unknown, req: Request) => void) {
  const keys = new ApiKeys(config.apiKeys);
  return (req: Request, res: Response, next: NextFunction): void => {
    if (!keys.enabled || READ_METHODS.has(req.method)) {
      next();
      return;
    }
    try {
      keys.authorize(req.headers.authorization, req.method, req.path);
    } catch (err) {
      problem(res, err, req);
      return;
    }
    next();
  };
}
