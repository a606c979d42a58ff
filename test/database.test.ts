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

  it('RunPlanColumn moves a stored run\'s plan from its request into the plan column, and back when reverted', async () => {
    const ds = await emptyDatabase();
    await ds.initialize();
    try {
      const ran = await ds.runMigrations();
      const at = ran.findIndex((m) => m.name === 'RunPlanColumn1796191096244');
      expect(at).toBeGreaterThan(0);
      for (let i = ran.length - 1; i >= at; i--) await ds.undoLastMigration();
      // Rows written the old way: the plan inside the request (and one run with none at all).
      const plan = { mask: { kind: 'stored', sha256: 'ab'.repeat(32) }, allr: { referenceModelId: '00000000-0000-4000-8000-000000000002', pruneRate: 0.5, retrainToPretrainRatio: 0.25 } };
      const old = { kind: 'retrain', modelId: '00000000-0000-4000-8000-000000000001', datasetId: 'mnist', m: 2, plan };
      const ids = ['00000000-0000-4000-8000-00000000000a', '00000000-0000-4000-8000-00000000000b'];
      // The model and dataset rows the foreign keys name are not what this checks.
      await ds.query('SET session_replication_role = replica');
      await ds.query("INSERT INTO run (id, kind, status, request, model_id, dataset_id) VALUES ($1, 'retrain', 'queued', $2, $3, 'mnist')", [ids[0], JSON.stringify(old), old.modelId]);
      await ds.query("INSERT INTO run (id, kind, status, request, model_id, dataset_id) VALUES ($1, 'train', 'queued', $2, $3, 'mnist')", [ids[1], JSON.stringify({ kind: 'train' }), old.modelId]);
      await ds.query('SET session_replication_role = DEFAULT');
      await ds.runMigrations();
      const [moved, none] = (await ds.query('SELECT request, plan FROM run ORDER BY id')) as { request: unknown; plan: unknown }[];
      expect(moved.plan).toEqual(plan);
      expect(moved.request).toEqual({ kind: 'retrain', modelId: old.modelId, datasetId: 'mnist', m: 2 });
      expect(none.plan).toEqual({ mask: { kind: 'none' } });
      expect(none.request).toEqual({ kind: 'train' });
      for (let i = ran.length - 1; i >= at; i--) await ds.undoLastMigration();
      const [back] = (await ds.query('SELECT request FROM run ORDER BY id')) as { request: unknown }[];
      expect(back.request).toEqual(old);
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
