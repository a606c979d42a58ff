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
/** The back-off unit of slots while the database is away. */
const POLL_MS = 500;

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
 * Idle slots are woken rather than polled: a job this process sends wakes its slots of that queue
 * (once the transaction that sent it commits), a slot that finished a job looks for the next at
 * once, and a job failed into a retry (or sent with a delay) wakes them when it falls due. Each idle
 * slot still looks every JOB_POLL_SECONDS for jobs sent by other processes (Postgres) or missed
 * otherwise; with the embedded database those polls (queries on the main thread) were most of the
 * main thread's work while the worker threads trained.
 */
@Injectable()
export class JobsService implements BeforeApplicationShutdown {
  private readonly logger = new Logger(JobsService.name);
  private boss: PgBoss | null = null;
  private starting: Promise<PgBoss> | null = null;
  private sweeper: NodeJS.Timeout | null = null;
  private sweeping: Promise<void> | null = null;
  private stopping = false;
  /** Takes (fetch + hold) in flight, awaited at shutdown. */
  private readonly taking = new Set<Promise<unknown>>();
  /** Jobs whose handlers run here now, by id: their queue. */
  private readonly running = new Map<string, JobName>();
  /** Takes that failed in a row (any slot), and until when every slot waits before the next. */
  private takeFailures = 0;
  private pausedUntil = 0;
  /** Idle slots' waits, cut short at shutdown. */
  private readonly wakers = new Set<() => void>();
  /** Wakes per queue so far: a slot whose take found nothing looks again at once if one came meanwhile. */
  private readonly wakes = new Map<string, number>();
  /** The same waits by queue, cut short by `wake`. */
  private readonly napping = new Map<string, Set<() => void>>();
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
      else if (opts.manager?.queryRunner?.isTransactionActive) {
        const runner = opts.manager.queryRunner;
        const queues = this.pendingWakes.get(runner) ?? new Set<string>();
        queues.add(name);
        this.pendingWakes.set(runner, queues);
      } else this.wake(name);
    }
    return id;
  }

  /** Has this process's idle slots of `name` look for a job now (a busy one looks as soon as its job ends). */
  wake(name: string): void {
    this.wakes.set(name, (this.wakes.get(name) ?? 0) + 1);
    for (const w of [...(this.napping.get(name) ?? [])]) w();
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

  /** After failing a job: wakes the queue's slots when its retry falls due (pg-boss draws the back-off). */
  private async wakeForRetry(name: string, jobId: string): Promise<void> {
    const job = await this.boss?.getJobById(name, jobId).catch(() => null);
    if (job?.state === 'retry') this.wakeLater(name, new Date(job.startAfter).getTime() - Date.now());
  }

  /**
   * Runs `handler` for jobs of `name`, up to `concurrency` at a time in this process. A throw retries.
   *
   * A job is `active` exactly while a hold names it: the fetch that takes a job and the hold commit
   * in one transaction, and the end of the job (or its hand-back by a sweep) removes the hold in the
   * transaction that settles it. (With pg-boss's own worker the hold was written after the fetch, so
   * a process killed between the two left an active job no hold named: nothing handed it back until
   * its expiry, hours for training, and its run stalled.)
   */
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
    for (let i = 0; i < concurrency; i++) this.poll(boss, name, handler).catch((err) => this.logger.error({ err, queue: name }, 'a job slot stopped'));
  }

  /** One slot of `work`: takes a job, runs it, settles it; waits POLL_MS when the queue is empty. */
  private async poll<N extends JobName>(boss: PgBoss, name: N, handler: JobHandler<N>): Promise<void> {
    while (!this.stopping) {
      const paused = this.pausedUntil - Date.now();
      if (paused > 0) {
        await this.nap(paused);
        continue;
      }
      let job: PgBoss.JobWithMetadata<JobPayloads[N]> | null;
      const wakesBefore = this.wakes.get(name) ?? 0;
      const taking = this.take<N>(boss, name);
      this.taking.add(taking);
      try {
        job = await taking;
        this.takeFailures = 0;
      } catch (err) {
        if (this.stopping) return;
        if (this.takeFailures++ === 0) {
          if (isDatabaseUnavailable(err)) this.logger.warn({ queue: name, reason: (err as Error).message }, 'job queue: database unavailable');
          else this.logger.error({ err, queue: name }, 'could not take a job');
        }
        // One back-off for every slot: while the database is away they do not each hold a pool
        // connection to find out (requests need those to answer their 503s quickly).
        this.pausedUntil = Date.now() + Math.min(10_000, POLL_MS * 2 ** this.takeFailures);
        continue;
      } finally {
        this.taking.delete(taking);
      }
      if (!job) {
        if ((this.wakes.get(name) ?? 0) !== wakesBefore) continue; // woken while it looked: look again
        await this.nap(this.config.jobPollSeconds * 1000, name);
        continue;
      }
      await this.runJob(boss, name, job, handler);
    }
  }

  /** Waits `ms`, or less if this process starts stopping meanwhile (or, with `queue`, a job of it is woken). */
  private nap(ms: number, queue?: string): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.wakers.delete(wake);
        if (queue) this.napping.get(queue)?.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.wakers.add(wake);
      if (queue) {
        const set = this.napping.get(queue) ?? new Set<() => void>();
        set.add(wake);
        this.napping.set(queue, set);
      }
    });
  }

  /** Takes the next job of `name` and holds it, in one transaction: either both are recorded or neither. */
  private async take<N extends JobName>(boss: PgBoss, name: N): Promise<PgBoss.JobWithMetadata<JobPayloads[N]> | null> {
    // An idle slot's poll is this one indexed read (pg-boss's job_i5), as pg-boss's own was one
    // statement; the transaction only when there is something to take (the embedded database is
    // one connection that every poll and request shares).
    const ready: unknown[] = await this.dataSource.query(`SELECT 1 FROM pgboss.job WHERE name = $1 AND state < 'active' AND start_after < now() LIMIT 1`, [name]);
    if (!ready.length) return null;
    return this.dataSource.transaction(async (tx) => {
      const [job] = await boss.fetch<JobPayloads[N]>(name, { batchSize: 1, includeMetadata: true, db: managerDb(tx) });
      if (!job) return null;
      await tx.query(
        `INSERT INTO job_hold (job_id, queue, worker_id, started_at) VALUES ($1, $2, $3, now())
         ON CONFLICT (job_id) DO UPDATE SET queue = excluded.queue, worker_id = excluded.worker_id, started_at = excluded.started_at`,
        [job.id, name, this.registry.id],
      );
      return job;
    });
  }

  private async runJob<N extends JobName>(boss: PgBoss, name: N, job: PgBoss.JobWithMetadata<JobPayloads[N]>, handler: JobHandler<N>): Promise<void> {
    this.running.set(job.id, name);
    let failure: Error | null = null;
    try {
      await handler(job.data, { id: job.id, retryCount: job.retryCount });
    } catch (err) {
      this.logger.warn({ err, job: job.id, queue: name, retry: job.retryCount }, 'job failed');
      failure = err instanceof Error ? err : new Error(String(err));
    }
    // A failure goes to pg-boss's retry (with back-off) as a throw would.
    await this.settleOwn(job.id, (db) => (failure ? boss.fail(name, job.id, { message: failure.message }, { db }) : boss.complete(name, job.id, NO_OUTPUT, { db })));
    this.running.delete(job.id);
    if (failure) await this.wakeForRetry(name, job.id);
  }

  /**
   * Records the end of a job that ran here, with the release of its hold, in one transaction, and
   * only while the hold is still this process's: a job that a sweep handed back meanwhile (this
   * process was taken for dead) may be running elsewhere now, and is theirs to settle. While the
   * database is unavailable the call is repeated (backing off) until it is back.
   */
  private async settleOwn(jobId: string, call: (db: PgBoss.Db) => Promise<unknown>): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        const settled = await this.dataSource.transaction(async (tx) => {
          if (!(await this.releaseIn(tx, jobId, this.registry.id))) return false;
          await call(managerDb(tx));
          return true;
        });
        if (!settled) this.logger.warn({ job: jobId }, 'the job was handed back to the queue while it ran here; its end is not recorded here');
        return;
      } catch (err) {
        if (!isDatabaseUnavailable(err) || this.stopping) {
          this.logger.warn({ err, job: jobId }, 'could not record the end of the job');
          return;
        }
        if (attempt === 0) this.logger.warn({ job: jobId }, 'the database is away; the end of the job is recorded when it is back');
        await sleep(Math.min(30_000, 500 * 2 ** attempt));
      }
    }
  }

  /** Deletes the hold of `workerId` on the job; answers whether there was one. */
  private async releaseIn(tx: EntityManager, jobId: string, workerId: string): Promise<boolean> {
    const rows: unknown[] = await tx.query('WITH d AS (DELETE FROM job_hold WHERE job_id = $1 AND worker_id = $2 RETURNING job_id) SELECT job_id FROM d', [jobId, workerId]);
    return rows.length > 0;
  }

  private async startSweeping(): Promise<void> {
    if (this.sweeper) return;
    this.sweeper = setInterval(() => this.sweep().catch((err) => this.logger.warn({ err }, 'job-hold sweep failed')), SWEEP_MS);
    this.sweeper.unref();
    await this.sweep();
  }

  /**
   * Fails the jobs of dead processes into pg-boss's retry (a job already finished is left as it is):
   * each hold is removed in the transaction that fails its job, and only if it still names the dead
   * process (a live one may have taken the job again meanwhile). Also an `active` job of this
   * service's queues that no hold names and that started DEAD_AFTER_MS ago or more (taken by a
   * process that died before it could hold it: possible with an earlier version, which wrote the
   * hold after the fetch) goes back to the queue.
   */
  sweep(): Promise<void> {
    this.sweeping ??= (async () => {
      try {
        const boss = await this.start();
        for (const h of await this.registry.orphanedHolds()) {
          const handed = await this.dataSource.transaction(async (tx) => {
            if (!(await this.releaseIn(tx, h.jobId, h.workerId))) return false;
            await boss.fail(h.queue, h.jobId, { reason: `process ${h.workerId} that held it died` }, { db: managerDb(tx) });
            return true;
          });
          if (handed) {
            this.logger.warn({ job: h.jobId, queue: h.queue, worker: h.workerId }, 'handed the job of a dead process back to the queue');
            await this.wakeForRetry(h.queue, h.jobId);
          }
        }
        for (const j of await this.registry.unheldActiveJobs(Object.keys(QUEUE_POLICIES))) {
          await boss.fail(j.queue, j.jobId, { reason: 'it was taken and never held: the process that took it died' });
          this.logger.warn({ job: j.jobId, queue: j.queue }, 'handed back a job that was taken and never held');
          await this.wakeForRetry(j.queue, j.jobId);
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

  /**
   * Stops taking jobs; the jobs still running here go back to the queue (their holds released with
   * them), as pg-boss's own non-graceful stop did: the next process takes them up at once.
   */
  async beforeApplicationShutdown(): Promise<void> {
    this.stopping = true;
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
    for (const t of this.wakeTimers) clearTimeout(t);
    this.wakeTimers.clear();
    for (const wake of [...this.wakers]) wake();
    await Promise.allSettled([...this.taking]);
    const boss = this.boss ?? (this.starting ? await this.starting.catch(() => null) : null);
    if (boss) {
      for (const [jobId, queue] of this.running) {
        await this.dataSource
          .transaction(async (tx) => {
            if (await this.releaseIn(tx, jobId, this.registry.id)) await boss.fail(queue, jobId, { reason: 'the process that ran it stopped' }, { db: managerDb(tx) });
          })
          .catch(() => {});
      }
      this.running.clear();
      await boss.stop({ graceful: false, wait: true, close: !this.database.embedded }).catch(() => {});
    }
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

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** pg-boss's complete() takes the output before the options; a job's end records none. */
const NO_OUTPUT = null as unknown as object;
