import { join } from 'node:path';
import pg from 'pg';
import { DataSource, type DataSourceOptions } from 'typeorm';
import { MIGRATIONS } from '../../migrations/index.js';
import type { AppConfig } from '../config/config.js';
import { EmbeddedPglite } from './embedded-pglite.js';
import { ENTITIES } from './entities.js';

// node-postgres returns int8 as a string; sizes and counts fit a double, so read them as numbers
// (the embedded driver does the same).
pg.types.setTypeParser(pg.types.builtins.INT8, (v: string) => Number(v));

export const DATABASE_CONNECT_TIMEOUT_MS = 10_000;

export interface DatabaseHandle {
  options: DataSourceOptions;
  /** Set when the database is the embedded PGlite; pg-boss talks to it through this. */
  embedded: EmbeddedPglite | null;
}

/**
 * One place decides which database we talk to: the Postgres server when DATABASE_URL is set,
 * otherwise PGlite persisted in DATA_DIR/pglite. Same entities, same migrations, never `synchronize`.
 */
export function databaseOptions(
  config: Pick<AppConfig, 'databaseUrl' | 'dataDir'>,
  opts: { migrationsRun?: boolean; inMemory?: boolean; entities?: DataSourceOptions['entities'] } = {},
): DatabaseHandle {
  const common = {
    type: 'postgres' as const,
    entities: opts.entities ?? ENTITIES,
    migrations: MIGRATIONS,
    migrationsRun: opts.migrationsRun ?? true,
    migrationsTableName: 'migrations',
    synchronize: false,
    // gen_random_uuid() is built in on Postgres 13+ and PGlite; uuid-ossp is absent from PGlite.
    installExtensions: false,
    uuidExtension: 'pgcrypto' as const,
    logging: false,
  };
  if (config.databaseUrl) {
    // A server that does not answer (a dropped network rather than a refused port) fails a
    // connection attempt after 10 s, so a request gets its 503 instead of hanging.
    return { options: { ...common, url: config.databaseUrl, poolSize: 10, connectTimeoutMS: DATABASE_CONNECT_TIMEOUT_MS }, embedded: null };
  }
  const embedded = new EmbeddedPglite(opts.inMemory ? null : join(config.dataDir, 'pglite'));
  // biome-ignore lint/suspicious/noExplicitAny: TypeORM types `driver` as any.
  return { options: { ...common, driver: embedded.driver() as any, poolSize: 1 }, embedded };
}

export function createDataSource(handle: DatabaseHandle): DataSource {
  return new DataSource(handle.options);
}
