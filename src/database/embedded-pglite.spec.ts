import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EmbeddedPglite, PGLITE_SHARED_BUFFERS } from './embedded-pglite.js';

const dir = mkdtempSync(join(tmpdir(), 'sparsoup-pglite-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('EmbeddedPglite', () => {
  it('initialises a new data directory (in a thread of its own), runs with the small buffer pool, and reopens what it wrote', async () => {
    const data = join(dir, 'pglite');
    const first = new EmbeddedPglite(data);
    await first.executeSql('CREATE TABLE t (v int); INSERT INTO t VALUES (7)');
    expect(existsSync(join(data, 'PG_VERSION'))).toBe(true);
    const { rows } = await first.executeSql("SELECT current_setting('shared_buffers') AS sb");
    expect(rows).toEqual([{ sb: PGLITE_SHARED_BUFFERS }]);
    await first.close();
    const again = new EmbeddedPglite(data);
    expect((await again.executeSql('SELECT v FROM t')).rows).toEqual([{ v: 7 }]);
    await again.close();
  }, 120_000);
});
