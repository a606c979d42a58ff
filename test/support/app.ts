import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { DataSource } from 'typeorm';
import { createApp } from '../../src/app.factory.js';
import { type AppConfig, loadConfig } from '../../src/config/config.js';
import { createScratchDatabase } from '../../src/database/scratch.js';

export interface TestApp {
  app: NestExpressApplication;
  /** The node http server, for supertest. */
  http: ReturnType<NestExpressApplication['getHttpServer']>;
  config: AppConfig;
  dataSource: DataSource;
  /** Base URL when started with `listen: true`. */
  url: string;
  close: () => Promise<void>;
}

/**
 * A fresh service for one test file: its own DATA_DIR, and its own database — a copy of the migrated
 * PGlite template, or a scratch database on the Postgres server when DATABASE_URL is set.
 */
export async function startTestApp(env: Record<string, string> = {}, opts: { listen?: boolean } = {}): Promise<TestApp> {
  const dataDir = mkdtempSync(join(tmpdir(), 'sparsoup-test-'));
  const baseUrl = process.env.DATABASE_URL;
  const scratch = baseUrl ? await createScratchDatabase(baseUrl, 'sparsoup_test') : null;
  const template = process.env.SPARSOUP_PGLITE_TEMPLATE;
  if (!scratch && template) cpSync(template, join(dataDir, 'pglite'), { recursive: true });
  const config = loadConfig({
    LOG_LEVEL: 'silent',
    WORKERS: '1',
    ...env,
    DATA_DIR: dataDir,
    ...(scratch ? { DATABASE_URL: scratch.url } : {}),
  });
  const app = await createApp(config);
  if (opts.listen) await app.listen(0, '127.0.0.1');
  else await app.init();
  const address = opts.listen ? app.getHttpServer().address() : null;
  const { getDataSourceToken } = await import('@nestjs/typeorm');
  return {
    app,
    http: app.getHttpServer(),
    config,
    dataSource: app.get<DataSource>(getDataSourceToken()),
    url: address && typeof address === 'object' ? `http://127.0.0.1:${address.port}` : '',
    close: async () => {
      await app.close();
      await scratch?.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
