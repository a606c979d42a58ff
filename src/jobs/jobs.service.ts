import { type BeforeApplicationShutdown, Inject, Injectable, Logger } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import PgBoss from 'pg-boss';
import type { DataSource, EntityManager, EntitySubscriberInterface, QueryRunner, TransactionCommitEvent, TransactionRollbackEvent } from 'typeorm';
import type { AppConfig } from '../config/config.js';
import { APP_CONFIG } from '../config/config.module.js';
import { DATABASE_CONNECT_TIMEOUT_MS, type DatabaseHandle } from '../database/data-source.js';
import { DATABASE_HANDLE } from '../database/database.module.js';
import { isDatabaseUnavailable } from '../database/errors.js';
import { COMPUTE_QUEUES, type JobName, type JobPayloads, QUEUE_POLICIES } from './jobs.js';
import { WorkerRegistryService } from './worker-registry.service.js';

/** How often the holds of dead processes are looked for (and once as this process starts working). */
const SWEEP_MS = 5_000;

export type JobHandler<N extends JobName> = (payload: JobPayloads[N], job: { id: string; retryCount: number }) => Promise<unknown>;

/**
 * pg-boss on the service's own database: the Postgres server, or the embedded PGlite through its
 * single-connection lock. Jobs can be sent inside a TypeORM transaction so that a row and the job
 * that will process it are committed together.
 *
 * A job a process takes is *held*: a `job_hold` row names the job and the process (its id in
 * `worker_process`, kept alive by a heartbeat) while the handler runs. pg-boss alone would leave the
 * job of a killed process `active` until its expiry (hours for training); instead every process
 * sweeps the holds of processes that are not alive (no fresh heartbeat; with the embedded database,
 * any earlier life) and fails those jobs into pg-boss's retry, so after a restart the work is taken
 * up again within seconds. A live process's jobs are never touched: its heartbeat is fresh.
 *
 * Workers are woken rather than polled: a job this process sends wakes its workers of that queue
 * (once the transaction that sent it commits), a worker that finished a job looks for the next at
 * once, and a job failed into a retry (or sent with a delay) wakes them when it becomes due. Each
 * worker still polls every JOB_POLL_SECONDS for jobs sent by other processes (Postgres) or missed
 * otherwise; with the embedded database that poll (one pg-boss fetch, a query on the main thread)
 * was most of the main thread's work while the worker threads trained (issue 16).
 */
@Injectable()
export class JobsService implements BeforeApplicationShutdown {
  private readonly logger = new Logger(JobsService.name);
  private boss: PgBoss | null = null;
  private starting: Promise<PgBoss> | null = null;
  private sweeper: NodeJS.Timeout | null = null;
  private sweeping: Promise<void> | null = null;
  private stopping = false;
  /** This process's pg-boss workers, by queue. */
  private readonly workerIds = new Map<string, string[]>();
  /** Queues to wake when a transaction that sent jobs to them commits. */
  private readonly pendingWakes = new WeakMap<QueryRunner, Set<string>>();
  private readonly wakeTimers = new Set<NodeJS.Timeout>();

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @Inject(DATABASE_HANDLE) private readonly database: DatabaseHandle,
    @InjectDataSource() private readonly dataSource: DataSource,
    private readonly registry: WorkerRegistryService,
  ) {
    const pending = this.pendingWakes;
    const wake = (name: string) => this.wake(name);
    const subscriber: EntitySubscriberInterface = {
      afterTransactionCommit(event: TransactionCommitEvent) {
        // A savepoint's release is not the commit: wait for the outermost transaction.
        if (event.queryRunner.isTransactionActive) return;
        const queues = pending.get(event.queryRunner);
        if (!queues) return;
        pending.delete(event.queryRunner);
        for (const q of queues) wake(q);
      },
      afterTransactionRollback(event: TransactionRollbackEvent) {
        if (!event.queryRunner.isTransactionActive) pending.delete(event.queryRunner);
      },
    };
    dataSource.subscribers.push(subscriber);
  }

  start(): Promise<PgBoss> {
    this.starting ??= (async () => {
      const embedded = this.database.embedded;
      const boss = new PgBoss({
        ...(embedded ? { db: { executeSql: (text: string, values: unknown[]) => embedded.executeSql(text, values) } } : { connectionString: this.config.databaseUrl!, max: 4, connectionTimeoutMillis: DATABASE_CONNECT_TIMEOUT_MS }),
        schema: 'pgboss',
        // Our state machines own retries of domain work; pg-boss keeps finished jobs a week for audit.
        deleteAfterDays: 7,
        maintenanceIntervalSeconds: 120,
        monitorStateIntervalSeconds: 30,
      });
      boss.on('error', (err) => (isDatabaseUnavailable(err) ? this.logger.warn({ reason: (err as Error).message }, 'job queue: database unavailable') : this.logger.error({ err }, 'job queue error')));
      ignorePgBossSettlementRejections(this.logger);
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
    const id = await boss.send(name, payload as object, {
      ...(db ? { db } : {}),
      ...(opts.singletonKey ? { singletonKey: opts.singletonKey } : {}),
      ...(opts.startAfterSeconds ? { startAfter: opts.startAfterSeconds } : {}),
    });
    if (id) {
      if (opts.startAfterSeconds) this.wakeLater(name, opts.startAfterSeconds * 1000);
      else if (opts.manager) {
        const runner = opts.manager.queryRunner!;
        const queues = this.pendingWakes.get(runner) ?? new Set<string>();
        queues.add(name);
        this.pendingWakes.set(runner, queues);
      } else this.wake(name);
    }
    return id;
  }

  /** Has this process's workers of `name` look for a job now (a busy one looks as soon as its job ends). */
  wake(name: string): void {
    if (!this.boss) return;
    for (const id of this.workerIds.get(name) ?? []) this.boss.notifyWorker(id);
  }

  private wakeLater(name: string, ms: number): void {
    if (this.stopping) return;
    const timer = setTimeout(() => {
      this.wakeTimers.delete(timer);
      this.wake(name);
    }, Math.max(0, ms) + 50);
    timer.unref();
    this.wakeTimers.add(timer);
  }

  /** After failing a job: wakes the queue's workers when its retry becomes due (pg-boss draws the back-off at random). */
  private async wakeForRetry(name: string, jobId: string): Promise<void> {
    const job = await this.boss?.getJobById(name, jobId).catch(() => null);
    if (job?.state === 'retry') this.wakeLater(name, new Date(job.startAfter).getTime() - Date.now());
  }

  /** Runs `handler` for jobs of `name`, up to `concurrency` at a time in this process. A throw retries. */
  async work<N extends JobName>(name: N, concurrency: number, handler: JobHandler<N>): Promise<void> {
    const boss = await this.start();
    if (this.config.workers === 0 && COMPUTE_QUEUES.has(name)) {
      this.logger.log({ queue: name }, 'WORKERS=0: this process leaves the queue to worker processes');
      return;
    }
    // Holds name this process, so its row must exist before the first one (or a sweep elsewhere
    // would take the hold for a dead process's).
    await this.registry.register();
    await this.startSweeping();
    for (let i = 0; i < concurrency; i++) {
      let workerId: string | undefined;
      workerId = await boss.work<JobPayloads[N]>(name, { pollingIntervalSeconds: this.config.jobPollSeconds, batchSize: 1, includeMetadata: true }, async (jobs) => {
        for (const job of jobs) {
          let failure: Error | null = null;
          try {
            await this.hold(name, job.id);
            await handler(job.data, { id: job.id, retryCount: job.retryCount });
          } catch (err) {
            this.logger.warn({ err, job: job.id, queue: name, retry: job.retryCount }, 'job failed');
            failure = err instanceof Error ? err : new Error(String(err));
          }
          // A failure goes to pg-boss's retry (with back-off) as a throw would.
          await this.settleOwn(job.id, () => (failure ? boss.fail(name, job.id, { message: failure.message }) : boss.complete(name, job.id)));
          if (failure) await this.wakeForRetry(name, job.id);
        }
        // There may be more: this worker looks again at once, not after a poll interval.
        if (workerId) boss.notifyWorker(workerId);
      });
      this.workerIds.set(name, [...(this.workerIds.get(name) ?? []), workerId]);
    }
  }

  private async hold(queue: JobName, jobId: string): Promise<void> {
    await this.dataSource.query(
      `INSERT INTO job_hold (job_id, queue, worker_id, started_at) VALUES ($1, $2, $3, now())
       ON CONFLICT (job_id) DO UPDATE SET queue = excluded.queue, worker_id = excluded.worker_id, started_at = excluded.started_at`,
      [jobId, queue, this.registry.id],
    );
  }

  /**
   * Records the end of a job that ran here: pg-boss's own worker completes or fails a job without
   * awaiting the call, so with the database away its rejection goes unhandled (ending the process)
   * and the completion is lost (the job stays `active` until its expiry). So the handler settles
   * the job itself, repeating the call (backing off) while the database is unavailable, and drops
   * its hold once that is recorded; pg-boss's own call then finds the job no longer active.
   */
  private async settleOwn(jobId: string, call: () => Promise<unknown>): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await call();
        break;
      } catch (err) {
        if (!isDatabaseUnavailable(err) || this.stopping) {
          this.logger.warn({ err, job: jobId }, 'could not record the end of the job');
          break;
        }
        if (attempt === 0) this.logger.warn({ job: jobId }, 'the database is away; the end of the job is recorded when it is back');
        await new Promise((r) => setTimeout(r, Math.min(30_000, 500 * 2 ** attempt)));
      }
    }
    await this.release(jobId);
  }

  /** Drops this process's hold. If the database is away, the hold stays; a later sweep finds the
   * job finished (a no-op) or, if this process died meanwhile, retries it. */
  private async release(jobId: string): Promise<void> {
    await this.dataSource.query('DELETE FROM job_hold WHERE job_id = $1 AND worker_id = $2', [jobId, this.registry.id]).catch(() => {});
  }

  private async startSweeping(): Promise<void> {
    if (this.sweeper) return;
    this.sweeper = setInterval(() => this.sweep().catch((err) => this.logger.warn({ err }, 'job-hold sweep failed')), SWEEP_MS);
    this.sweeper.unref();
    await this.sweep();
  }

  /** Fails the jobs of dead processes into pg-boss's retry (a job already finished is left as it is). */
  sweep(): Promise<void> {
    this.sweeping ??= (async () => {
      try {
        const boss = await this.start();
        for (const h of await this.registry.orphanedHolds()) {
          await boss.fail(h.queue, h.jobId, { reason: `process ${h.workerId} that held it died` });
          await this.dataSource.query('DELETE FROM job_hold WHERE job_id = $1 AND worker_id = $2', [h.jobId, h.workerId]);
          await this.wakeForRetry(h.queue, h.jobId);
          this.logger.warn({ job: h.jobId, queue: h.queue, worker: h.workerId }, 'handed the job of a dead process back to the queue');
        }
      } finally {
        this.sweeping = null;
      }
    })();
    return this.sweeping;
  }

  async cancel(name: JobName, id: string): Promise<void> {
    const boss = await this.start();
    await boss.cancel(name, id).catch(() => {});
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.stopping = true;
    for (const t of this.wakeTimers) clearTimeout(t);
    this.wakeTimers.clear();
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
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

let settlementGuard = false;

/**
 * pg-boss's worker follows each handler with a `complete` it does not await. The handler has
 * already settled the job (JobsService.settleOwn), so that call only matters when it fails because
 * the database went away in between: such a rejection (from pg-boss's manager, database
 * unavailable) is logged instead of ending the process. Any other unhandled rejection still does.
 */
function ignorePgBossSettlementRejections(logger: Logger): void {
  if (settlementGuard) return;
  settlementGuard = true;
  process.on('unhandledRejection', (reason) => {
    const stack = reason instanceof Error ? (reason.stack ?? '') : '';
    if (isDatabaseUnavailable(reason) && /pg-boss[\\/]src[\\/]manager\.js/.test(stack)) {
      logger.warn({ reason: (reason as Error).message }, 'job queue: a settlement call failed while the database was away');
      return;
    }
    throw reason;
  });
}
