import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { type BeforeApplicationShutdown, Inject, Injectable, Logger } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import type { DataSource } from 'typeorm';
import type { AppConfig } from '../config/config.js';
import { APP_CONFIG } from '../config/config.module.js';
import type { DatabaseHandle } from '../database/data-source.js';
import { DATABASE_HANDLE } from '../database/database.module.js';
import { WorkerProcessEntity } from '../runs/run.entity.js';

export const HEARTBEAT_MS = 5_000;
/** A process silent this long is dead: its jobs are handed to the living. */
export const DEAD_AFTER_MS = 20_000;

/**
 * This process as a worker: a row with a heartbeat. Other processes (and this one after a restart)
 * use the heartbeats to find work whose worker died.
 */
@Injectable()
export class WorkerRegistryService implements BeforeApplicationShutdown {
  private readonly logger = new Logger(WorkerRegistryService.name);
  readonly id = randomUUID();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @Inject(DATABASE_HANDLE) private readonly database: DatabaseHandle,
    @InjectDataSource() private readonly dataSource: DataSource,
  ) {}

  private registering: Promise<void> | null = null;
  /** When this process's heartbeats started succeeding again after a failure; 0 = never failed. */
  private healthySince = 0;

  /** Inserts this process's row and starts its heartbeat (once, however often it is called). */
  register(): Promise<void> {
    this.registering ??= (async () => {
      await this.beat();
      this.timer = setInterval(() => {
        this.beat().catch((err) => {
          if (this.healthySince !== -1) this.logger.warn({ err }, 'heartbeat failed');
          this.healthySince = -1;
        });
      }, HEARTBEAT_MS);
      this.timer.unref();
    })().catch((err) => {
      this.registering = null;
      throw err;
    });
    return this.registering;
  }

  /** An upsert: a row another process removed while we could not heartbeat (an outage) comes back. */
  private async beat(): Promise<void> {
    await this.dataSource.query(
      `INSERT INTO worker_process (id, hostname, pid, threads, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, now(), now())
       ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()`,
      [this.id, hostname().slice(0, 200), process.pid, this.config.workers],
    );
    if (this.healthySince === -1) this.healthySince = Date.now();
  }

  /**
   * Whether this process may judge others dead now. After its own heartbeats failed (the database
   * was away), every other process's heartbeat is stale too, though they are alive: it waits until
   * they have had DEAD_AFTER_MS of database to heartbeat again.
   */
  private canJudge(): boolean {
    if (this.database.embedded) return true;
    return this.healthySince === 0 || (this.healthySince > 0 && Date.now() - this.healthySince >= DEAD_AFTER_MS);
  }

  /** SQL for "worker `col` is not alive", with $1 = this process, $2 = DEAD_AFTER_MS. */
  private notAlive(col: string): string {
    // With the embedded database only this process can exist, so every other id is dead the moment
    // we start; on Postgres a worker is dead when its heartbeat is stale or its row is gone.
    return this.database.embedded
      ? `${col} <> $1`
      : `${col} <> $1 AND NOT EXISTS (SELECT 1 FROM worker_process w WHERE w.id = ${col} AND w.heartbeat_at >= now() - ($2 || ' milliseconds')::interval)`;
  }

  /** Workers that are not alive (empty while this process cannot judge). */
  async deadWorkerIds(): Promise<string[]> {
    if (!this.canJudge()) return [];
    const params = this.database.embedded ? [this.id] : [this.id, String(DEAD_AFTER_MS)];
    const rows: { id: string }[] = await this.dataSource.query(`SELECT id FROM worker_process WHERE ${this.notAlive('id')}`, params);
    return rows.map((r) => r.id);
  }

  /** Whether the process `workerId` is known to be dead (false while this process cannot judge). */
  async isDead(workerId: string): Promise<boolean> {
    if (workerId === this.id || !this.canJudge()) return false;
    if (this.database.embedded) return true;
    const rows: unknown[] = await this.dataSource.query(`SELECT 1 FROM worker_process WHERE id = $1 AND heartbeat_at >= now() - ($2 || ' milliseconds')::interval`, [workerId, String(DEAD_AFTER_MS)]);
    return rows.length === 0;
  }

  /** pg-boss jobs that a process which is no longer alive had taken (see JobHoldEntity). */
  async orphanedHolds(): Promise<{ jobId: string; queue: string; workerId: string }[]> {
    if (!this.canJudge()) return [];
    const params = this.database.embedded ? [this.id] : [this.id, String(DEAD_AFTER_MS)];
    const rows: { job_id: string; queue: string; worker_id: string }[] = await this.dataSource.query(
      `SELECT job_id, queue, worker_id FROM job_hold WHERE ${this.notAlive('worker_id')}`,
      params,
    );
    return rows.map((r) => ({ jobId: r.job_id, queue: r.queue, workerId: r.worker_id }));
  }

  /**
   * `active` jobs of `queues` that no hold names and that started DEAD_AFTER_MS ago or more: taken by
   * a process that died before it held them (empty while this process cannot judge). A process of
   * this version takes a job and holds it in one transaction, so a live one never has such a job.
   */
  async unheldActiveJobs(queues: string[]): Promise<{ jobId: string; queue: string }[]> {
    if (!this.canJudge() || !queues.length) return [];
    const rows: { id: string; name: string }[] = await this.dataSource.query(
      `SELECT j.id, j.name FROM pgboss.job j
        WHERE j.name = ANY($1::text[]) AND j.state = 'active' AND j.started_on < now() - ($2 || ' milliseconds')::interval
          AND NOT EXISTS (SELECT 1 FROM job_hold h WHERE h.job_id = j.id)`,
      [queues, String(DEAD_AFTER_MS)],
    );
    return rows.map((r) => ({ jobId: r.id, queue: r.name }));
  }

  async forget(ids: string[]): Promise<void> {
    if (ids.length) await this.dataSource.query('DELETE FROM worker_process WHERE id = ANY($1::uuid[])', [ids]);
  }

  async beforeApplicationShutdown(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.registering = null;
    await this.dataSource.getRepository(WorkerProcessEntity).delete({ id: this.id }).catch(() => {});
  }
}
