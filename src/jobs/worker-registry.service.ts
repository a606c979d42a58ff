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

  async register(): Promise<void> {
    if (this.timer) return;
    const now = new Date();
    await this.dataSource.getRepository(WorkerProcessEntity).insert({ id: this.id, hostname: hostname(), pid: process.pid, threads: this.config.workers, startedAt: now, heartbeatAt: now });
    this.timer = setInterval(() => {
      this.dataSource
        .getRepository(WorkerProcessEntity)
        .update({ id: this.id }, { heartbeatAt: new Date() })
        .catch((err) => this.logger.warn({ err }, 'heartbeat failed'));
    }, HEARTBEAT_MS);
    this.timer.unref();
  }

  /**
   * Workers that are not alive. With the embedded database only this process can exist, so every
   * other row is dead the moment we start; on Postgres a worker is dead when its heartbeat is stale.
   */
  async deadWorkerIds(): Promise<string[]> {
    const rows: { id: string }[] = this.database.embedded
      ? await this.dataSource.query('SELECT id FROM worker_process WHERE id <> $1', [this.id])
      : await this.dataSource.query(`SELECT id FROM worker_process WHERE id <> $1 AND heartbeat_at < now() - ($2 || ' milliseconds')::interval`, [this.id, String(DEAD_AFTER_MS)]);
    return rows.map((r) => r.id);
  }

  async forget(ids: string[]): Promise<void> {
    if (ids.length) await this.dataSource.query('DELETE FROM worker_process WHERE id = ANY($1::uuid[])', [ids]);
  }

  async beforeApplicationShutdown(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.dataSource.getRepository(WorkerProcessEntity).delete({ id: this.id }).catch(() => {});
  }
}
