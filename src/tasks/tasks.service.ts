import { PassThrough, type Readable } from 'node:stream';
import { Inject, Injectable, Logger, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import busboy from 'busboy';
import type { Request } from 'express';
import { type DataSource, In } from 'typeorm';
import { ArtifactsService } from '../artifacts/artifacts.service.js';
import { notFound, ProblemException } from '../common/problem.js';
import type { AppConfig } from '../config/config.js';
import { APP_CONFIG } from '../config/config.module.js';
import { openSafetensors } from '../core/checkpoint/safetensors.js';
import { CoreInputError } from '../core/errors.js';
import { countRevived } from '../core/masks/index.js';
import { DatasetEntity } from '../datasets/dataset.entity.js';
import { JobName } from '../jobs/jobs.js';
import { JobsService } from '../jobs/jobs.service.js';
import { MaskEntity } from '../masks/mask.entity.js';
import { MasksService } from '../masks/masks.service.js';
import type { ModelEntity } from '../models/model.entity.js';
import { type IngestedCheckpoint, ingestSafetensors } from '../models/model-upload.js';
import { ModelsService } from '../models/models.service.js';
import { type CandidateProgress, RunCandidateEntity, RunEntity, RunPhaseEntity } from '../runs/run.entity.js';
import { RunLifecycle } from '../runs/run-lifecycle.js';
import { RunsProcessor } from '../runs/runs.processor.js';
import { SoupEntity } from '../soups/soup.entity.js';
import type { StoredArtifact } from '../storage/artifact-store.js';
import { BN_STATISTIC } from './bn.js';
import { ExternalGreedyService } from './external-greedy.js';
import { SETTLED_TASK, TaskEntity, type TaskKind, taskNotifier } from './task.entity.js';
import { parseTaskMetrics } from './task-metrics.js';
import { type HeartbeatResultDto, type LeaseTaskDto, MAX_LEASE_WAIT_SECONDS, type TaskDto, type TaskMetrics, type TaskPageDto, type TaskProgressDto, type TaskQueryDto } from './tasks.dto.js';


/** The longest a lease request sleeps between looks at the table (other processes' new tasks). */
const POLL_MS = 500;
const SWEEP_MS = 2000;
const MODEL_PART = 'model.safetensors';

const refused = (detail: string, extensions: Record<string, unknown> = {}) => new ProblemException(422, detail, { slug: 'invalid-task-result', extensions });

/**
 * The task protocol for external trainers: lease (long poll), heartbeat, result, fail. A result is
 * checked before it counts (names, shapes, dtypes as the input; all finite; pruned weights exactly
 * zero; a recalibration changes batch-norm statistics only); a refused one keeps nothing and costs
 * the task an attempt. Train results land as the candidate's model, once.
 */
@Injectable()
export class TasksService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger(TasksService.name);
  private sweeper: NodeJS.Timeout | null = null;

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @InjectDataSource() private readonly dataSource: DataSource,
    private readonly lifecycle: RunLifecycle,
    private readonly processor: RunsProcessor,
    private readonly models: ModelsService,
    private readonly masks: MasksService,
    private readonly artifacts: ArtifactsService,
    private readonly jobs: JobsService,
  ) {}

  onApplicationBootstrap(): void {
    this.sweeper = setInterval(() => this.sweep().catch((err) => this.logger.warn({ err }, 'task lease sweep failed')), SWEEP_MS);
    this.sweeper.unref();
  }

  onApplicationShutdown(): void {
    if (this.sweeper) clearInterval(this.sweeper);
  }

  // ── Leasing ───────────────────────────────────────────────────────────────────────────────────

  /** POST /tasks/lease: the oldest queued task of the kinds asked, or null when none came in time. */
  async lease(dto: LeaseTaskDto, gone?: AbortSignal): Promise<TaskDto | null> {
    const deadline = Date.now() + Math.min(dto.waitSeconds ?? 0, MAX_LEASE_WAIT_SECONDS) * 1000;
    for (;;) {
      // A trainer that hung up while it waited gets nothing: a task leased to it would sit out a whole lease.
      if (gone?.aborted) return null;
      await this.sweep();
      const id = await this.tryLease(dto.workerId, [...new Set(dto.kinds)]);
      if (id) return this.get(id);
      const left = deadline - Date.now();
      if (left <= 0) return null;
      await taskNotifier.wait(Math.min(left, POLL_MS));
    }
  }

  /** One atomic claim: the row is locked and skipped by concurrent claims (FOR UPDATE SKIP LOCKED). */
  private async tryLease(workerId: string, kinds: TaskKind[]): Promise<string | null> {
    return this.dataSource.transaction(async (tx) => {
      const placeholders = kinds.map((_, i) => `$${i + 3}`).join(', ');
      const rows: { id: string; run_id: string | null; candidate_id: string | null; attempts: number }[] = await tx.query(
        `WITH c AS (
           UPDATE task SET status = 'leased', attempts = attempts + 1, worker_id = $1,
                  lease_expires_at = now() + ($2 || ' milliseconds')::interval
            WHERE id = (SELECT t.id FROM task t WHERE t.status = 'queued' AND t.kind IN (${placeholders})
                           AND NOT EXISTS (SELECT 1 FROM run r WHERE r.id = t.run_id AND r.status IN ('failed', 'cancelled'))
                           AND NOT EXISTS (SELECT 1 FROM soup s WHERE s.id = t.soup_id AND s.status IN ('failed', 'cancelled'))
                         ORDER BY t.created_at, t.id LIMIT 1 FOR UPDATE OF t SKIP LOCKED)
        RETURNING id, run_id, candidate_id, attempts) SELECT * FROM c`,
        [workerId, String(this.config.taskLeaseMs), ...kinds],
      );
      const row = rows[0];
      if (!row) return null;
      // A soup's own scoring (POST /soups) has no run to start or to tell.
      if (!row.run_id) return row.id;
      await this.lifecycle.start(tx, row.run_id);
      if (row.candidate_id) {
        const c = await tx.findOneByOrFail(RunCandidateEntity, { id: row.candidate_id });
        await tx.update(RunCandidateEntity, { id: c.id }, { status: 'running', attempts: row.attempts, startedAt: new Date(), error: null });
        await this.lifecycle.event(tx, row.run_id, 'candidate-started', { phase: c.phase, index: c.index, attempt: row.attempts, taskId: row.id, trainer: workerId }, c.id);
      } else {
        await this.lifecycle.event(tx, row.run_id, 'task-leased', { taskId: row.id, attempt: row.attempts, trainer: workerId });
      }
      return row.id;
    });
  }

  /** Leases that lapsed (the trainer stopped answering): back to the queue, or failed after the last attempt. */
  async sweep(): Promise<void> {
    const lapsed: { id: string }[] = await this.dataSource.query(`SELECT id FROM task WHERE status = 'leased' AND lease_expires_at < now()`);
    for (const { id } of lapsed) await this.endAttempt(id, 'leased', `the lease lapsed (no heartbeat for ${this.config.taskLeaseMs / 1000} s)`, { lapsed: true });
  }

  /**
   * Ends the current attempt of a leased task that did not succeed: requeued, or failed for good
   * after its last attempt (then its candidate fails, or its run). Only the caller that still finds
   * the task leased (and, with `lapsed`, its lease expired) does it.
   */
  private async endAttempt(id: string, expect: 'leased', reason: string, opts: { lapsed?: boolean; final?: boolean } = {}): Promise<void> {
    let requeued = false;
    await this.dataSource.transaction(async (tx) => {
      // The run's row first, then the task's (the order of a landing and of a cancel), so that the
      // phase's next step can commit with the candidate's end: a kill between the two can no longer
      // leave a phase whose candidates all ended with nothing to advance it. A task's run never changes.
      const runId = (await tx.findOne(TaskEntity, { where: { id }, select: { id: true, runId: true } }))?.runId ?? null;
      if (runId) await tx.findOne(RunEntity, { where: { id: runId }, lock: { mode: 'pessimistic_write' } });
      const task = await tx.findOne(TaskEntity, { where: { id }, lock: { mode: 'pessimistic_write' } });
      if (!task || task.status !== expect) return;
      if (opts.lapsed && !(task.leaseExpiresAt && task.leaseExpiresAt.getTime() < Date.now())) return;
      const last = opts.final || task.attempts >= task.maxAttempts;
      const candidate = task.candidateId ? await tx.findOneBy(RunCandidateEntity, { id: task.candidateId }) : null;
      if (!last) {
        await tx.update(TaskEntity, { id }, { status: 'queued', workerId: null, leaseExpiresAt: null, error: reason });
        if (candidate) await tx.update(RunCandidateEntity, { id: candidate.id }, { status: 'queued', error: reason, progress: null });
        if (task.runId) await this.lifecycle.event(tx, task.runId, candidate ? 'candidate-requeued' : 'task-requeued', { taskId: id, kind: task.kind, reason, attempts: task.attempts, ...(candidate ? { phase: candidate.phase, index: candidate.index } : {}) }, candidate?.id ?? null);
        requeued = true;
        return;
      }
      const error = `${task.kind} task failed after ${task.attempts} attempt${task.attempts === 1 ? '' : 's'}: ${reason}`;
      await tx.update(TaskEntity, { id }, { status: 'failed', workerId: null, leaseExpiresAt: null, error, finishedAt: new Date() });
      if (candidate) await this.lifecycle.finishCandidate(tx, candidate, 'failed', error);
      else if (!task.runId) await ExternalGreedyService.failSoup(tx, task.soupId!, `set {${(task.members ?? []).join(', ')}}: ${error}`);
      else {
        if (task.soupId) await ExternalGreedyService.failSoup(tx, task.soupId, error);
        // An evaluation or recalibration of a phase result: the phase, and with it the run, fails.
        await tx.update(RunPhaseEntity, { runId: task.runId, index: task.phase, status: In(['queued', 'pruned', 'training', 'merging']) }, { status: 'failed', finishedAt: new Date() });
        await this.lifecycle.finish(tx, task.runId, 'failed', `phase ${task.phase}: ${error}`);
      }
      // A candidate that failed for good: the phase's next step (or the run's end) commits with it.
      if (candidate && task.runId) await this.processor.settleRun(task.runId, task.phase, tx);
    });
    if (requeued) taskNotifier.wake();
  }

  // ── Heartbeat, fail ───────────────────────────────────────────────────────────────────────────

  async heartbeat(id: string, progress: TaskProgressDto | undefined): Promise<HeartbeatResultDto> {
    await this.sweep();
    const task = await this.entity(id);
    const run = task.runId ? await this.dataSource.getRepository(RunEntity).findOneByOrFail({ id: task.runId }) : null;
    const soup = !run && task.soupId ? await this.dataSource.getRepository(SoupEntity).findOneBy({ id: task.soupId }) : null;
    const owner = run ?? soup;
    // A cancelled run (or one that failed meanwhile: its other work is moot) stops its trainers.
    if (task.status === 'cancelled' || owner?.status === 'cancelled' || owner?.status === 'failed') return { leaseExpiresAt: null, cancelled: true };
    if (task.status !== 'leased') throw this.notLeased(task);
    const rows: { lease_expires_at: Date }[] = await this.dataSource.query(
      `WITH c AS (UPDATE task SET lease_expires_at = now() + ($2 || ' milliseconds')::interval WHERE id = $1 AND status = 'leased' RETURNING lease_expires_at) SELECT * FROM c`,
      [id, String(this.config.taskLeaseMs)],
    );
    if (!rows.length) throw this.notLeased(await this.entity(id));
    if (progress) {
      const p: CandidateProgress = { epoch: progress.epoch, step: progress.step, steps: progress.steps, loss: progress.loss, learningRate: progress.learningRate, samplesPerSecond: progress.samplesPerSecond };
      await this.dataSource.transaction(async (tx) => {
        if (task.candidateId) {
          const c = await tx.findOneByOrFail(RunCandidateEntity, { id: task.candidateId });
          await tx.update(RunCandidateEntity, { id: c.id, status: 'running' }, { progress: p });
          // The same event built-in training writes: the SSE stream, the CLI and the dashboard show it alike.
          await this.lifecycle.event(tx, task.runId!, 'progress', { phase: c.phase, index: c.index, ...p }, c.id);
        } else if (task.runId) {
          await this.lifecycle.event(tx, task.runId, 'task-progress', { taskId: id, kind: task.kind, phase: task.phase, ...p });
        }
      });
    }
    return { leaseExpiresAt: new Date(rows[0].lease_expires_at), cancelled: false };
  }

  /** POST /tasks/{id}/fail: the trainer gives the attempt up (it counts; the task goes back or fails). */
  async fail(id: string, error: string): Promise<TaskDto> {
    await this.sweep();
    const task = await this.entity(id);
    if (task.status !== 'leased') throw this.notLeased(task);
    await this.endAttempt(id, 'leased', `the trainer reported: ${error}`);
    return this.get(id);
  }

  private notLeased(task: TaskEntity): ProblemException {
    const why =
      task.status === 'queued'
        ? `its lease lapsed and it went back to the queue${task.error ? ` (${task.error})` : ''}`
        : task.status === 'cancelled'
          ? 'its run was cancelled'
          : `it has already ${task.status}`;
    return new ProblemException(409, `task ${task.id} is not leased: ${why}`, { slug: 'task-not-leased', extensions: { taskStatus: task.status } });
  }

  // ── Results ───────────────────────────────────────────────────────────────────────────────────

  /**
   * POST /tasks/{id}/result: multipart, a `metrics` JSON part and (train, recalibrate) a
   * `model.safetensors` part, streamed into the artifact store while it is hashed and parsed.
   */
  async result(id: string, req: Request): Promise<TaskDto> {
    await this.sweep();
    const task = await this.entity(id);
    if (task.status !== 'leased') {
      req.resume();
      throw this.notLeased(task);
    }
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > this.config.maxUploadBytes) {
      req.resume();
      throw new ProblemException(413, `the body is ${declared} bytes; the limit (MAX_UPLOAD_BYTES) is ${this.config.maxUploadBytes}`);
    }
    let received: { metrics: unknown; model: IngestedCheckpoint | null };
    try {
      received = await this.receive(req);
    } catch (err) {
      if (err instanceof CoreInputError && err.status === 413) throw err;
      // A body that cannot be read is a refused result like any other: the attempt ends.
      if (err instanceof CoreInputError) await this.refuse(task, err.message);
      if (err instanceof ProblemException && err.getStatus() === 422) await this.refuse(task, String(err.problem.detail));
      throw err;
    }
    const stored = received.model?.weights ?? null;
    let landed = false;
    try {
      const metrics = parseTaskMetrics(task.kind, received.metrics);
      const input = await this.models.entity(task.modelId);
      if (task.kind === 'evaluate') {
        if (received.model) throw refused('an evaluate task sends its metrics only, no model part');
      } else {
        if (!received.model) throw refused(`a ${task.kind} task sends the trained model as a "${MODEL_PART}" part`);
        await this.checkModel(task, input, received.model);
      }
      landed = await this.land(task, input, received.model, metrics);
      if (!landed) throw this.notLeased(await this.entity(id));
    } catch (err) {
      if (err instanceof ProblemException && err.getStatus() === 422) await this.refuse(task, String(err.problem.detail));
      throw err;
    } finally {
      if (!landed && stored) await this.artifacts.discard(stored);
    }
    return this.get(id);
  }

  /** A refused result: the attempt ends (requeued, or the task fails after its last). */
  private async refuse(task: TaskEntity, reason: string): Promise<void> {
    await this.endAttempt(task.id, 'leased', `result refused: ${reason}`);
  }

  /** Reads the multipart body: the metrics JSON and the model, streamed into the store. */
  private receive(req: Request): Promise<{ metrics: unknown; model: IngestedCheckpoint | null }> {
    const max = this.config.maxUploadBytes;
    return new Promise((resolve, reject) => {
      const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
      if (type !== 'multipart/form-data') {
        req.resume();
        reject(refused(`send the result as multipart/form-data with a "metrics" JSON part${''} and a "${MODEL_PART}" part; got "${type || 'no content type'}"`));
        return;
      }
      let bb: busboy.Busboy;
      try {
        bb = busboy({ headers: req.headers, limits: { fileSize: max + 1, files: 2, fields: 2, fieldSize: 1024 * 1024 } });
      } catch (err) {
        reject(refused(`not a multipart body: ${(err as Error).message}`));
        return;
      }
      let metricsText: string | null = null;
      let model: Promise<IngestedCheckpoint> | null = null;
      let failure: unknown = null;
      const fail = (err: unknown) => {
        if (!failure) failure = err;
      };
      bb.on('field', (name, value) => {
        if (name === 'metrics') metricsText = value;
        else fail(refused(`unexpected part "${name}": send "metrics" and "${MODEL_PART}"`));
      });
      bb.on('file', (name, stream: Readable, info) => {
        if (name === 'metrics') {
          const chunks: Buffer[] = [];
          stream.on('data', (c: Buffer) => chunks.push(c));
          stream.on('end', () => {
            metricsText = Buffer.concat(chunks).toString('utf8');
          });
          return;
        }
        if ((name !== MODEL_PART && info.filename !== MODEL_PART) || model) {
          fail(refused(model ? `a second model part "${name}": send one "${MODEL_PART}"` : `unexpected part "${name}": send "metrics" and "${MODEL_PART}"`));
          stream.resume();
          return;
        }
        // Through a PassThrough: a refused header ends the ingest, and the rest of the part is drained
        // (the part stream itself stays whole, so busboy reaches the end of the body and answers).
        const through = new PassThrough();
        stream.pipe(through);
        model = ingestSafetensors(through, this.artifacts.store, max);
        model.catch(() => {
          stream.unpipe(through);
          stream.resume();
        });
      });
      bb.on('error', (err) => fail(refused(`the multipart body is not valid: ${(err as Error).message}`)));
      bb.on('close', async () => {
        const ingested = model ? await (model as Promise<IngestedCheckpoint>).catch((err: unknown) => {
          fail(err instanceof CoreInputError && err.status !== 413 ? refused(`${MODEL_PART}: ${err.message}`) : err);
          return null;
        }) : null;
        if (failure) {
          if (ingested) await this.artifacts.discard(ingested.weights);
          reject(failure);
          return;
        }
        let metrics: unknown = null;
        if (metricsText !== null) {
          try {
            metrics = JSON.parse(metricsText);
          } catch {
            if (ingested) await this.artifacts.discard(ingested.weights);
            reject(refused('the "metrics" part is not valid JSON'));
            return;
          }
        }
        resolve({ metrics, model: ingested });
      });
      req.pipe(bb);
    });
  }

  /**
   * The result model against the input: the same tensor names, shapes and dtypes; all finite; every
   * pruned weight exactly zero; a recalibration changes batch-norm statistics only. Reads the stored
   * result one tensor at a time.
   */
  private async checkModel(task: TaskEntity, input: ModelEntity, got: IngestedCheckpoint): Promise<void> {
    const want = new Map(input.tensors.map((t) => [t.name, t]));
    const have = new Map(got.entries.map((t) => [t.name, t]));
    const missing = [...want.keys()].filter((n) => !have.has(n));
    const extra = [...have.keys()].filter((n) => !want.has(n));
    const mismatches: { tensor: string; expected: string; actual: string }[] = [];
    for (const [name, w] of want) {
      const h = have.get(name);
      if (!h) continue;
      if (h.dtype !== w.dtype) mismatches.push({ tensor: name, expected: w.dtype, actual: h.dtype });
      else if (h.shape.join(',') !== w.shape.join(',')) mismatches.push({ tensor: name, expected: `[${w.shape.join(', ')}]`, actual: `[${h.shape.join(', ')}]` });
    }
    if (missing.length || extra.length || mismatches.length) {
      const parts = [
        missing.length ? `missing tensors ${list(missing)}` : '',
        extra.length ? `tensors not in the input model ${list(extra)}` : '',
        ...mismatches.slice(0, 5).map((x) => `${x.tensor} is ${x.actual}, the input has ${x.expected}`),
      ].filter(Boolean);
      throw refused(`the model does not match the input model: ${parts.join('; ')}`, { missing, extra, mismatches });
    }
    const nonFinite = got.stats.filter((s) => s.nonFinite > 0);
    if (nonFinite.length) {
      throw refused(`the model has non-finite values (NaN or ±Infinity) in ${list(nonFinite.map((s) => `${s.name} (${s.nonFinite})`))}`, { nonFinite: nonFinite.map((s) => ({ tensor: s.name, count: s.nonFinite })) });
    }
    const reader = await openSafetensors(await this.artifacts.store.localPath(got.weights.sha256));
    try {
      if (task.maskId) {
        const mask = await this.masks.load(await this.masks.entity(task.maskId));
        const revived: { tensor: string; count: number }[] = [];
        for (const tm of mask.tensors) {
          if (!have.has(tm.name)) continue;
          const n = countRevived(await reader.readFloat32(tm.name), tm);
          if (n > 0) revived.push({ tensor: tm.name, count: n });
        }
        if (revived.length) {
          const total = revived.reduce((a, r) => a + r.count, 0);
          throw refused(`${total} pruned weight${total === 1 ? ' is' : 's are'} not zero (the mask keeps them at exactly 0): ${list(revived.map((r) => `${r.tensor} (${r.count})`))}`, { revived });
        }
      }
      if (task.kind === 'recalibrate') {
        const original = await this.models.openModel(input);
        try {
          const changed: string[] = [];
          for (const t of input.tensors) {
            if (BN_STATISTIC.test(t.name)) continue;
            const a = await original.readRaw(t.name);
            const b = await reader.readRaw(t.name);
            if (!Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))) changed.push(t.name);
          }
          if (changed.length) throw refused(`a recalibration changes batch-norm running statistics only; these tensors changed: ${list(changed)}`, { changed });
        }  finally {
          await original.close();
        }
      }
    } finally {
      await reader.close();
    }
  }

  /** The accepted result, once: the task is claimed (still leased) in the transaction that stores what it made. */
  private async land(task: TaskEntity, input: ModelEntity, got: IngestedCheckpoint | null, metrics: TaskMetrics | null): Promise<boolean> {
    const landed = await this.dataSource.transaction(async (tx) => {
      // The run's row first (as a cancel and a built-in landing take it): the settle below locks it.
      const run = task.runId ? await tx.findOne(RunEntity, { where: { id: task.runId }, lock: { mode: 'pessimistic_write' } }) : null;
      if (task.runId && !run) throw new Error(`run ${task.runId} of task ${task.id} is gone`);
      const claim = await tx.update(TaskEntity, { id: task.id, status: 'leased' }, { status: 'succeeded', leaseExpiresAt: null, finishedAt: new Date(), error: null });
      if (!claim.affected) return false;
      let resultModelId: string | null = null;
      if (got) {
        const candidate = task.candidateId ? await tx.findOneByOrFail(RunCandidateEntity, { id: task.candidateId }) : null;
        const set = task.members ? `-set-${task.members.join('.')}` : '';
        const name = run
          ? candidate
            ? `${run.kind}-${run.id.slice(0, 8)}-c${candidate.phase}.${candidate.index}`
            : `${run.kind}-${run.id.slice(0, 8)}-p${task.phase}${set}-recalibrated`
          : `soup-${task.soupId!.slice(0, 8)}${set}-recalibrated`;
        const model = await this.models.create(
          {
            name,
            format: 'safetensors',
            weights: got.weights,
            topology: null,
            entries: got.entries,
            stats: got.stats,
            metadata: got.metadata,
            impliedMaskHash: got.impliedMaskHash,
            origin:
              candidate && run
                ? { kind: 'retrain', runId: run.id, candidateId: candidate.id, config: candidate.config, datasetId: run.datasetId, trainer: 'external', taskId: task.id }
                : { kind: 'train', recalibration: true, runId: run?.id ?? null, soupId: task.soupId, datasetId: task.datasetId, trainer: 'external', taskId: task.id },
            parentIds: [input.id],
            maskId: task.maskId,
            shards: null,
          },
          tx,
        );
        resultModelId = model.id;
      }
      await tx.update(TaskEntity, { id: task.id }, { resultModelId, result: { metrics, resultModelId } as never });
      if (!run) {
        // A soup's own scoring task: its job replays the greedy algorithm with this score.
        await this.jobs.send(JobName.BuildSoup, { soupId: task.soupId! }, { manager: tx });
      } else if (task.candidateId) {
        const c = await tx.findOneByOrFail(RunCandidateEntity, { id: task.candidateId });
        await tx.update(
          RunCandidateEntity,
          { id: c.id },
          {
            status: 'succeeded',
            resultModelId,
            valAccuracy: metrics?.valAccuracy ?? null,
            testAccuracy: metrics?.testAccuracy ?? null,
            metrics: { external: metrics, trainer: task.workerId } as never,
            finishedAt: new Date(),
          },
        );
        await this.lifecycle.event(tx, run.id, 'candidate-succeeded', { phase: c.phase, index: c.index, resultModelId, valAccuracy: metrics?.valAccuracy ?? null, testAccuracy: metrics?.testAccuracy ?? null }, c.id);
        // The phase's next step (or the run's end) commits with the candidate's end.
        await this.processor.settleRun(run.id, task.phase, tx);
      } else {
        await this.lifecycle.event(tx, run.id, `task-succeeded`, { taskId: task.id, kind: task.kind, phase: task.phase, resultModelId, ...(metrics ? { valAccuracy: metrics.valAccuracy, testAccuracy: metrics.testAccuracy } : {}) });
        // The phase's state machine continues with the evaluated (or recalibrated) result.
        await this.jobs.send(JobName.AdvanceRun, { runId: run.id }, { manager: tx });
      }
      return true;
    });
    return landed;
  }

  // ── Read ──────────────────────────────────────────────────────────────────────────────

  async list(q: TaskQueryDto): Promise<TaskPageDto> {
    const limit = q.limit ?? 50;
    const offset = q.offset ?? 0;
    const where = { ...(q.status ? { status: q.status } : {}), ...(q.kind ? { kind: q.kind } : {}), ...(q.runId ? { runId: q.runId } : {}) };
    const [rows, total] = await this.dataSource.getRepository(TaskEntity).findAndCount({ where, order: { createdAt: 'ASC', id: 'ASC' }, take: limit, skip: offset });
    return { items: await this.map(rows), total, limit, offset };
  }

  async get(id: string): Promise<TaskDto> {
    return (await this.map([await this.entity(id)]))[0];
  }

  async entity(id: string): Promise<TaskEntity> {
    const t = await this.dataSource.getRepository(TaskEntity).findOneBy({ id });
    if (!t) throw notFound('task', id);
    return t;
  }

  private async map(rows: TaskEntity[]): Promise<TaskDto[]> {
    const maskIds = [...new Set(rows.map((r) => r.maskId).filter((x): x is string => !!x))];
    const masks = maskIds.length ? await this.dataSource.getRepository(MaskEntity).findBy({ id: In(maskIds) }) : [];
    const datasetIds = [...new Set(rows.map((r) => r.datasetId))];
    const datasets = datasetIds.length ? await this.dataSource.getRepository(DatasetEntity).findBy({ id: In(datasetIds) }) : [];
    return rows.map((t) => {
      const mask = t.maskId ? masks.find((m) => m.id === t.maskId) : undefined;
      return {
        id: t.id,
        kind: t.kind,
        status: t.status,
        attempts: t.attempts,
        maxAttempts: t.maxAttempts,
        leaseExpiresAt: t.leaseExpiresAt,
        workerId: t.workerId,
        runId: t.runId,
        soupId: t.soupId,
        members: t.members,
        ensemble: t.ensembleModelIds ? t.ensembleModelIds.map((id) => ({ id, url: `/models/${id}/safetensors` })) : null,
        candidateId: t.candidateId,
        phase: t.phase,
        model: { id: t.modelId, url: `/models/${t.modelId}/safetensors` },
        mask: mask ? { id: mask.id, hash: mask.hash, url: `/masks/${mask.id}/safetensors` } : null,
        training: t.training,
        dataset: { id: t.datasetId, name: datasets.find((d) => d.id === t.datasetId)?.name ?? t.datasetId },
        split: t.split,
        result: t.result,
        error: t.error,
        createdAt: t.createdAt,
        finishedAt: t.finishedAt,
      };
    });
  }

  /** Whether a task is settled (for callers that only read). */
  static settled(t: TaskEntity): boolean {
    return SETTLED_TASK.includes(t.status);
  }
}

function list(names: string[]): string {
  return names.length > 5 ? `${names.slice(0, 5).join(', ')} and ${names.length - 5} more` : names.join(', ');
}

export type { StoredArtifact };
