import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';

/**
 * PGlite pays initdb (5–8 s) at every fresh start. Tests share one initialised, migrated data
 * folder, made once per set of migrations and copied by each test file that needs a database.
 */
export default async function setup() {
  // Worker threads run the compiled JavaScript (as in production): build it first (incremental).
  // Type errors are the type check's business (npm run typecheck); tsc still emits, so tests run.
  try {
    execFileSync(process.execPath, [resolve('node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { stdio: 'pipe' });
  } catch (err) {
    console.warn(`tsc reported errors while building dist/ for the worker threads:\n${(err as { stdout?: Buffer }).stdout?.toString().slice(0, 2000)}`);
  }
  if (process.env.DATABASE_URL) return;
  const root = resolve('.tmp');
  const migrations = resolve('migrations');
  const hash = createHash('sha256');
  for (const f of readdirSync(migrations).sort()) hash.update(f).update(readFileSync(join(migrations, f)));
  const template = join(root, `pglite-template-${hash.digest('hex').slice(0, 12)}`);
  process.env.SPARSOUP_PGLITE_TEMPLATE = template;
  if (existsSync(join(template, 'PG_VERSION'))) return;
  mkdirSync(root, { recursive: true });
  const building = `${template}.building-${process.pid}`;
  rmSync(building, { recursive: true, force: true });
  const { databaseOptions, createDataSource } = await import('../../src/database/data-source.js');
  const handle = databaseOptions({ databaseUrl: null, dataDir: building });
  const ds = createDataSource(handle);
  await ds.initialize();
  await ds.destroy();
  renameSync(join(building, 'pglite'), template);
  rmSync(building, { recursive: true, force: true });
}
