import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { PGlite, types } from '@electric-sql/pglite';

/**
 * Creates a new PGlite database in `dataDir` in a throwaway worker thread. On an empty directory
 * PGlite runs initdb in a second wasm instance inside the opening one, and that leaves ~500 MB of
 * wasm memory and buffers that V8 collects only at some later garbage collection (an idle service
 * stayed at ~870 MB RSS after start, against ~320 MB when it reopens an existing database). A thread
 * that exits gives all of it back at once; the service then opens the initialised directory itself.
 */
/** The buffer pool of the embedded database (Postgres's `shared_buffers`). */
export const PGLITE_SHARED_BUFFERS = '16MB';

async function initdbInThread(dataDir: string): Promise<void> {
  const code = `const { workerData, parentPort } = require('node:worker_threads');
const { PGlite } = require(workerData.module);
(async () => {
  const db = await PGlite.create(workerData.dataDir);
  await db.close();
  parentPort.postMessage('ok');
})();`;
  // The package's CommonJS build by absolute path (createRequire, not import.meta.resolve: the tests'
  // module runner has no import.meta.resolve, and an eval'd thread resolves from the working directory).
  const module = createRequire(import.meta.url).resolve('@electric-sql/pglite');
  const worker = new Worker(code, { eval: true, workerData: { module, dataDir } });
  await new Promise<void>((resolve, reject) => {
    let ok = false;
    worker.once('message', () => {
      ok = true;
    });
    worker.once('error', reject);
    worker.once('exit', (code) => (ok ? resolve() : reject(new Error(`initialising the PGlite database in ${dataDir} failed (thread exit ${code})`))));
  });
}

/**
 * PGlite is one connection. TypeORM and pg-boss both expect a pool where a transaction owns its
 * connection, so this pool hands the single connection to one holder at a time (a FIFO lock):
 * a transaction's statements are never interleaved with another caller's.
 */
export class EmbeddedPglite {
  private db: PGlite | null = null;
  private opening: Promise<PGlite> | null = null;
  private queue: (() => void)[] = [];
  private held = false;

  constructor(readonly dataDir: string | null) {}

  async open(): Promise<PGlite> {
    if (this.db) return this.db;
    this.opening ??= (async () => {
      if (this.dataDir) {
        mkdirSync(this.dataDir, { recursive: true });
        if (!existsSync(join(this.dataDir, 'PG_VERSION'))) await initdbInThread(this.dataDir);
      }
      const db = await PGlite.create(this.dataDir ?? undefined, {
        // Behave like node-postgres where TypeORM depends on it.
        serializers: { [types.BOOL]: (v: unknown) => (v === true || v === 'true' || v === 1 ? 'TRUE' : 'FALSE') },
        parsers: { [types.INT8]: (v: string) => Number(v) },
        // Postgres's default 128 MB buffer pool is most of PGlite's resident memory (~285 MiB RSS
        // for an open database, ~175 with 16 MB); the service's tables are small, and the files
        // under DATA_DIR are still cached by the OS.
        startParams: [...PGlite.defaultStartParams, '-c', `shared_buffers=${PGLITE_SHARED_BUFFERS}`],
      });
      this.db = db;
      return db;
    })();
    return this.opening;
  }

  async close(): Promise<void> {
    const db = this.db ?? (this.opening ? await this.opening.catch(() => null) : null);
    this.db = null;
    this.opening = null;
    if (db && !db.closed) await db.close();
  }

  /** Waits for the connection; the returned function releases it. */
  async acquire(): Promise<() => void> {
    await this.open();
    if (this.held) await new Promise<void>((resolve) => this.queue.push(resolve));
    this.held = true;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.queue.shift();
      if (next) next();
      else this.held = false;
    };
  }

  /** Runs SQL on the raw connection; the caller must hold it. */
  async run(sql: string, params?: unknown[]) {
    const db = await this.open();
    if (params && params.length > 0) return db.query(sql, params as unknown[]);
    // Parameterless SQL may hold several statements (migrations, pg-boss schema): exec runs them all.
    const results = await db.exec(sql);
    return results[results.length - 1] ?? { rows: [], fields: [], rowCount: 0, command: undefined };
  }

  /** For callers outside TypeORM (pg-boss): one statement batch under the lock. */
  async executeSql(sql: string, params?: unknown[]): Promise<{ rows: unknown[]; rowCount: number }> {
    const release = await this.acquire();
    try {
      const r = await this.run(sql, params);
      return { rows: r.rows, rowCount: r.rowCount ?? r.affectedRows ?? r.rows.length };
    } finally {
      release();
    }
  }

  /** A node-postgres `Pool` look-alike for TypeORM's postgres driver. */
  driver(): { Pool: new () => EventEmitter } {
    const embedded = this;
    class Connection extends EventEmitter {
      query(sql: string, params?: unknown[] | ((...a: unknown[]) => void), cb?: (...a: unknown[]) => void) {
        const callback = typeof params === 'function' ? params : cb;
        const values = typeof params === 'function' ? undefined : params;
        const p = embedded.run(sql, values).then((r) => ({
          rows: r.rows,
          fields: r.fields,
          command: r.command,
          rowCount: r.rowCount ?? r.affectedRows ?? r.rows.length,
        }));
        if (callback) p.then((r) => callback(null, r), (e) => callback(e));
        return p;
      }
    }
    const connection = new Connection();
    class Pool extends EventEmitter {
      connect(cb: (err: unknown, client: Connection | null, release: (err?: unknown) => void) => void) {
        embedded.acquire().then(
          (release) => cb(null, connection, () => release()),
          (err) => cb(err, null, () => {}),
        );
      }
      query(sql: string, params?: unknown[]) {
        return embedded.executeSql(sql, params);
      }
      end(cb?: (err?: unknown) => void) {
        const p = embedded.close();
        if (cb) p.then(() => cb(), cb);
        return p;
      }
    }
    return { Pool };
  }
}
