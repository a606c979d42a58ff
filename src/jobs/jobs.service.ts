import { type BeforeApplicationShutdown, Inject, Injectable, Logger } from '@nestjs/common';
import PgBoss from 'pg-boss';
import type { EntityManager } from 'typeorm';
import type { AppConfig } from '../config/config.js';
import { APP_CONFIG } from '../config/config.module.js';
import type { DatabaseHandle } from '../database/data-source.js';
import { DATABASE_HANDLE } from '../database/database.module.js';
import { COMPUTE_QUEUES, type JobName, type JobPayloads, QUEUE_POLICIES } from './jobs.js';

export type JobHandler<N extends JobName> = (payload: JobPayloads[N], job: { id: string; retryCount: number }) => Promise<unknown>;

/**
 * pg-boss on the service's own database: the Postgres server, or the embedded PGlite through its
 * single-connection lock. Jobs can be sent inside a TypeORM transaction so that a row and the job
 * that will process it are committed together.
 */
@Injectable()
export class JobsService implements BeforeApplicationShutdown {
  private readonly logger = new Logger(JobsService.name);
  private boss: PgBoss | null = null;
  private starting: Promise<PgBoss> | null = null;

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @Inject(DATABASE_HANDLE) private readonly database: DatabaseHandle,
  ) {}

  start(): Promise<PgBoss> {
    this.starting ??= (async () => {
      const embedded = this.database.embedded;
      const boss = new PgBoss({
        ...(embedded ? { db: { executeSql: (text: string, values: unknown[]) => embedded.executeSql(text, values) } } : { connectionString: this.config.databaseUrl!, max: 4 }),
        schema: 'pgboss',
        // Our state machines own retries of domain work; pg-boss keeps finished jobs a week for audit.
        deleteAfterDays: 7,
        maintenanceIntervalSeconds: 120,
        monitorStateIntervalSeconds: 30,
      });
      boss.on('error', (err) => this.logger.error({ err }, 'job queue error'));
      await boss.start();
      for (const [name, policy] of Object.entries(QUEUE_POLICIES)) {
        if (!(await boss.getQueue(name))) await boss.createQueue(name, { name, ...policy });
      }
      this.boss = boss;
      return boss;
    })();
    return this.starting;
  }

  /** Enqueues a job; with `manager`, inside that transaction (committed with it or not at all). */
  async send<N extends JobName>(name: N, payload: JobPayloads[N], opts: { manager?: EntityManager; singletonKey?: string; startAfterSeconds?: number } = {}): Promise<string | null> {
    const boss = await this.start();
    const db = opts.manager ? managerDb(opts.manager) : undefined;
    return boss.send(name, payload as object, {
      ...(db ? { db } : {}),
      ...(opts.singletonKey ? { singletonKey: opts.singletonKey } : {}),
      ...(opts.startAfterSeconds ? { startAfter: opts.startAfterSeconds } : {}),
    });
  }

  /** Runs `handler` for jobs of `name`, up to `concurrency` at a time in this process. A throw retries. */
  async work<N extends JobName>(name: N, concurrency: number, handler: JobHandler<N>): Promise<void> {
    const boss = await this.start();
    if (this.config.workers === 0 && COMPUTE_QUEUES.has(name)) {
      this.logger.log({ queue: name }, 'WORKERS=0: this process leaves the queue to worker processes');
      return;
    }
    for (let i = 0; i < concurrency; i++) {
      await boss.work<JobPayloads[N]>(name, { pollingIntervalSeconds: 0.5, batchSize: 1, includeMetadata: true }, async (jobs) => {
        for (const job of jobs) {
          try {
            await handler(job.data, { id: job.id, retryCount: job.retryCount });
          } catch (err) {
            this.logger.warn({ err, job: job.id, queue: name, retry: job.retryCount }, 'job failed');
            throw err;
          }
        }
      });
    }
  }

  /** Fails an active job (its worker died); pg-boss retries it while retries remain. */
  async fail(name: JobName, id: string, reason: string): Promise<void> {
    const boss = await this.start();
    await boss.fail(name, id, { reason });
  }

  async cancel(name: JobName, id: string): Promise<void> {
    const boss = await this.start();
    await boss.cancel(name, id).catch(() => {});
  }

  async beforeApplicationShutdown(): Promise<void> {
    const boss = this.boss ?? (this.starting ? await this.starting.catch(() => null) : null);
    if (boss) await boss.stop({ graceful: false, wait: true, close: !this.database.embedded }).catch(() => {});
    this.boss = null;
    this.starting = null;
  }
}

/** pg-boss's `db` interface over a TypeORM transaction. */
function managerDb(manager: EntityManager) {
  return {
    executeSql: async (text: string, values: unknown[]) => {
      const result = await manager.queryRunner!.query(text, values, true);
      return { rows: result.records as unknown[] };
    },
  };
}
