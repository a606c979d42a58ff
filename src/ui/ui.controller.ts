import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Controller, Get, Header, Param, Res } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import type { Response } from 'express';
import { Public } from '../common/auth.guard.js';
import { notFound } from '../common/problem.js';
import { PROJECT_ROOT } from '../paths.js';

const TYPES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
};

/** Beside the compiled controller when the build copied them (npm run build), else in the sources. */
function staticDir(): string {
  const here = join(dirname(fileURLToPath(import.meta.url)), 'static');
  return existsSync(join(here, 'index.html')) ? here : join(PROJECT_ROOT, 'src', 'ui', 'static');
}

/**
 * The dashboard: three static files, read once. Public, because they hold no data: the page asks the
 * API for everything with the key the user types in (kept in the browser's localStorage).
 */
@ApiExcludeController()
@Public()
@Controller('ui')
export class UiController {
  private readonly files = new Map<string, Buffer>();

  constructor() {
    const dir = staticDir();
    for (const name of Object.keys(TYPES)) this.files.set(name, readFileSync(join(dir, name)));
  }

  @Get()
  @Header('content-security-policy', "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
  getDashboard(@Res() res: Response): void {
    this.send(res, 'index.html');
  }

  @Get(':file')
  getDashboardFile(@Param('file') file: string, @Res() res: Response): void {
    if (file === 'index.html' || !this.files.has(file)) throw notFound('dashboard file', file);
    this.send(res, file);
  }

  private send(res: Response, name: string): void {
    res.setHeader('content-type', TYPES[name]);
    res.setHeader('cache-control', 'no-cache');
    res.setHeader('x-content-type-options', 'nosniff');
    res.end(this.files.get(name));
  }
}
