import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Column, Entity, PrimaryColumn } from 'typeorm';
import { afterAll, describe, expect, it } from 'vitest';
import { createDataSource, databaseOptions } from '../src/database/data-source.js';
import { schemaDrift } from '../src/database/drift.js';
import { ENTITIES } from '../src/database/entities.js';
import { createScratchDatabase } from '../src/database/scratch.js';

@Entity('drift_probe')
class DriftProbe {
  @PrimaryColumn() id: string;
  @Column() note: string;
}

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function emptyDatabase(entities: unknown[] = ENTITIES) {
  const base = process.env.DATABASE_URL;
  if (base) {
    const scratch = await createScratchDatabase(base, 'sparsoup_mig');
    cleanups.push(scratch.drop);
    // biome-ignore lint/suspicious/noExplicitAny: entity classes
    return createDataSource(databaseOptions({ databaseUrl: scratch.url, dataDir: '' }, { migrationsRun: false, entities: entities as any }));
  }
  const dir = mkdtempSync(join(tmpdir(), 'sparsoup-mig-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  // biome-ignore lint/suspicious/noExplicitAny: entity classes
  return createDataSource(databaseOptions({ databaseUrl: null, dataDir: dir }, { migrationsRun: false, entities: entities as any }));
}

describe(`migrations on ${process.env.DATABASE_URL ? 'Postgres' : 'PGlite'}`, () => {
  it('run on an empty database, leave no drift, and revert cleanly', async () => {
    const ds = await emptyDatabase();
    await ds.initialize();
    try {
      const ran = await ds.runMigrations();
      expect(ran.length).toBeGreaterThan(0);
      const tables: { table_name: string }[] = await ds.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
      );
      expect(tables.map((t) => t.table_name)).toContain('artifact');
      expect(await schemaDrift(ds)).toEqual({ up: [], down: [] });
      for (let i = 0; i < ran.length; i++) await ds.undoLastMigration();
      const after: unknown[] = await ds.query("SELECT 1 FROM information_schema.tables WHERE table_name = 'artifact'");
      expect(after).toEqual([]);
    } finally {
      await ds.destroy();
    }
  });

  it('the drift check reports an entity that no migration creates', async () => {
    const ds = await emptyDatabase([...ENTITIES, DriftProbe]);
    await ds.initialize();
    try {
      await ds.runMigrations();
      const drift = await schemaDrift(ds);
      expect(drift.up.join('\n')).toMatch(/CREATE TABLE "drift_probe"/);
    } finally {
      await ds.destroy();
    }
  });
});
