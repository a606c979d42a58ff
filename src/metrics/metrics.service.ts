import { Injectable, Logger } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { DataSource } from 'typeorm';
import { JobName } from '../jobs/jobs.js';
import { WorkerPoolService } from '../workers/worker-pool.service.js';

/** pg-boss 10's job states: created and retry are waiting, active is running. */
export const JOB_STATES = ['created', 'retry', 'active', 'completed', 'cancelled', 'failed'] as const;
const RESOURCE_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type IngestKind = 'model' | 'dataset';

/**
 * The service's Prometheus series. Counters move as things happen (requests, ingested bytes, training
 * samples); gauges for jobs, runs, soups and the worker pool are read from the database and the pool at
 * scrape time, so every process reports the same picture of the shared queue. One registry per app
 * (not prom-client's global one), so two apps in one process never share counters.
 */
@Injectable()
export class MetricsService {
  private readonly logger = new Logger(MetricsService.name);
  readonly registry = new Registry();

  private readonly httpRequests = new Counter({
    name: 'sparsoup_http_requests_total',
    help: 'HTTP requests answered, by method, route template and status code',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [this.registry],
  });
  private readonly httpDuration = new Histogram({
    name: 'sparsoup_http_request_duration_seconds',
    help: 'HTTP request latency until the response is finished, by method, route template and status code',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  private readonly ingested = new Counter({
    name: 'sparsoup_ingested_bytes_total',
    help: 'bytes of accepted uploads (checkpoints and datasets), as stored',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  private readonly trainingSamples = new Counter({
    name: 'sparsoup_training_samples_total',
    help: 'training samples processed by this process (forward and backward pass)',
    registers: [this.registry],
  });
  private readonly trainingSeconds = new Counter({
    name: 'sparsoup_training_seconds_total',
    help: 'seconds spent training in this process; rate(samples)/rate(seconds) is the per-thread throughput',
    registers: [this.registry],
  });
  private readonly trainingRate = new Gauge({
    name: 'sparsoup_training_samples_per_second',
    help: 'sum of the latest reported throughput of every running candidate (all processes, from the database)',
    registers: [this.registry],
  });
  private readonly jobs = new Gauge({
    name: 'sparsoup_jobs',
    help: 'jobs in the queue by kind (queue) and pg-boss state: created/retry = waiting, active = running',
    labelNames: ['queue', 'state'] as const,
    registers: [this.registry],
  });
  private readonly runs = new Gauge({
    name: 'sparsoup_runs',
    help: 'runs by status',
    labelNames: ['status'] as const,
    registers: [this.registry],
  });
  private readonly soups = new Gauge({
    name: 'sparsoup_soups',
    help: 'soups by status',
    labelNames: ['status'] as const,
    registers: [this.registry],
  });
  private readonly poolThreads = new Gauge({ name: 'sparsoup_worker_pool_threads', help: 'worker threads this process may run', registers: [this.registry] });
  private readonly poolBusy = new Gauge({ name: 'sparsoup_worker_pool_busy', help: 'tasks running in the worker pool', registers: [this.registry] });
  private readonly poolQueued = new Gauge({ name: 'sparsoup_worker_pool_queued', help: 'tasks waiting for a worker thread', registers: [this.registry] });
  private readonly poolUtilization = new Gauge({
    name: 'sparsoup_worker_pool_utilization',
    help: 'piscina utilisation: time spent running tasks over the capacity since the pool started (0..1)',
    registers: [this.registry],
  });
  private readonly poolTasks = new Gauge({
    name: 'sparsoup_worker_pool_tasks',
    help: 'tasks the worker pool has finished since it started, by result',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  constructor(
    @InjectDataSource() private readonly dataSource: DataSource,
    private readonly workers: WorkerPoolService,
  ) {
    collectDefaultMetrics({ register: this.registry });
  }

  /** Called by the HTTP middleware once a response has finished. */
  observeRequest(method: string, route: string, status: number, seconds: number): void {
    const labels = { method, route, status: String(status) };
    this.httpRequests.inc(labels);
    this.httpDuration.observe(labels, seconds);
  }

  /** Bytes of an accepted upload, as stored (the models and datasets services call it once an upload is committed). */
  addIngestedBytes(n: number, kind: IngestKind = 'model'): void {
    if (Number.isFinite(n) && n > 0) this.ingested.inc({ kind }, n);
  }

  /** Training work done in this process: `samples` examples in `seconds` of training time. */
  observeTraining(samples: number, seconds: number): void {
    if (Number.isFinite(samples) && samples > 0) this.trainingSamples.inc(samples);
    if (Number.isFinite(seconds) && seconds > 0) this.trainingSeconds.inc(seconds);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text, with the scrape-time gauges refreshed first. */
  async scrape(): Promise<string> {
    await Promise.all([this.collectJobs(), this.collectStatuses(), this.collectTraining()]);
    this.collectPool();
    return this.registry.metrics();
  }

  private async collectJobs(): Promise<void> {
    const counts = new Map<string, number>();
    try {
      // The pgboss schema appears when the queue first starts; until then every queue is empty.
      const [{ exists }] = await this.dataSource.query(`SELECT to_regclass('pgboss.job') IS NOT NULL AS exists`);
      if (exists) {
        const rows: { name: string; state: string; n: number }[] = await this.dataSource.query('SELECT name, state::text AS state, count(*)::int AS n FROM pgboss.job GROUP BY name, state');
        for (const r of rows) counts.set(`${r.name}\u0000${r.state}`, Number(r.n));
      }
    } catch (err) {
      this.logger.warn({ err }, 'could not read the job queue for /metrics');
      return;
    }
    this.jobs.reset();
    const queues = new Set<string>(Object.values(JobName));
    for (const key of counts.keys()) queues.add(key.split('\u0000')[0]);
    for (const queue of queues) for (const state of JOB_STATES) this.jobs.set({ queue, state }, counts.get(`${queue}\u0000${state}`) ?? 0);
  }

  private async collectStatuses(): Promise<void> {
    for (const [table, gauge] of [['run', this.runs], ['soup', this.soups]] as const) {
      try {
        const rows: { status: string; n: number }[] = await this.dataSource.query(`SELECT status, count(*)::int AS n FROM ${table} GROUP BY status`);
        gauge.reset();
        for (const status of RESOURCE_STATUSES) gauge.set({ status }, 0);
        for (const r of rows) gauge.set({ status: r.status }, Number(r.n));
      } catch (err) {
        this.logger.warn({ err, table }, 'could not count statuses for /metrics');
      }
    }
  }

  private async collectTraining(): Promise<void> {
    try {
      const [row] = await this.dataSource.query(
        `SELECT coalesce(sum((progress->>'samplesPerSecond')::double precision), 0) AS rate FROM run_candidate WHERE status = 'running' AND progress ? 'samplesPerSecond'`,
      );
      this.trainingRate.set(Number(row?.rate ?? 0));
    } catch (err) {
      this.logger.warn({ err }, 'could not read training throughput for /metrics');
    }
  }

  private collectPool(): void {
    try {
      // The pool is lazy and starts no thread until a task arrives (minThreads 0): asking is cheap.
      const s = this.workers.get().stats();
      this.poolThreads.set(s.threads);
      this.poolBusy.set(s.busy);
      this.poolQueued.set(s.queued);
      this.poolUtilization.set(Number.isFinite(s.utilization) ? s.utilization : 0);
      this.poolTasks.set({ result: 'completed' }, s.completed);
      this.poolTasks.set({ result: 'failed' }, s.failed);
    } catch (err) {
      this.logger.warn({ err }, 'could not read the worker pool for /metrics');
    }
  }
}
