import { type CanActivate, type ExecutionContext, Inject, Injectable, SetMetadata } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import type { Request } from 'express';
import type { ApiKey, AppConfig } from '../config/config.js';
import { APP_CONFIG } from '../config/config.module.js';
import { ProblemException } from './problem.js';

const PUBLIC = 'sparsoup:public';
/** Marks a route that needs no key (health, docs). */
export const Public = () => SetMetadata(PUBLIC, true);

const READ_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * With API_KEYS set, every route but the public ones needs `Authorization: Bearer <key>`;
 * a `read` key may only read. With no keys configured the service is open.
 */
@Injectable()
export class AuthGuard implements CanActivate {
  private readonly keys: Map<string, ApiKey>;

  constructor(
    @Inject(APP_CONFIG) config: AppConfig,
    private readonly reflector: Reflector,
  ) {
    this.keys = new Map(config.apiKeys.map((k) => [k.key, k]));
  }

  canActivate(context: ExecutionContext): boolean {
    if (this.keys.size === 0) return true;
    if (this.reflector.getAllAndOverride<boolean>(PUBLIC, [context.getHandler(), context.getClass()])) return true;
    const req = context.switchToHttp().getRequest<Request & { apiKey?: ApiKey }>();
    const header = req.headers.authorization ?? '';
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    if (!match) throw new ProblemException(401, 'this route needs an API key: send Authorization: Bearer <key>');
    const key = this.keys.get(match[1]);
    if (!key) throw new ProblemException(401, 'the API key is not valid');
    if (key.scope === 'read' && !READ_METHODS.has(req.method)) {
      throw new ProblemException(403, `the key "${key.name}" has scope read and cannot ${req.method} ${req.path}`);
    }
    req.apiKey = key;
    return true;
  }
}
