import { Inject, Injectable, Logger, type OnApplicationBootstrap } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import { type DataSource, type EntityManager, In } from 'typeorm';
import { ArtifactsService } from '../artifacts/artifacts.service.js';
import type { AppConfig } from '../config/config.js';
import { APP_CONFIG } from '../config/config.module.js';
import { CoreInputError } from '../core/errors.js';
import type { TrainingConfig } from '../core/tf/train.js';
import { DatasetsService } from '../datasets/datasets.service.js';
import { JobName, QUEUE_POLICIES } from '../jobs/jobs.js';
import { JobsService } from '../jobs/jobs.service.js';
import { WorkerRegistryService } from '../jobs/worker-registry.service.js';
import { MaskEntity } from '../masks/mask.entity.js';
import { MetricsService } from '../metrics/metrics.service.js';
import { modelRef } from '../models/model-ref.js';
import { ModelsService } from '../models/models.service.js';
import type { ProgressMessage, TrainTaskResult } from '../workers/tasks.js';
import { WorkerPoolService } from '../workers/worker-pool.service.js';
import { ProgressWriter } from './progress-writer.js';
import { type CandidateProgress, FINISHED, RunCandidateEntity, RunEntity, RunPhaseEntity, type RunStatus } from './run.entity.js';
import { RunLifecycle } from './run-lifecycle.js';
import { phasePruneRate } from './run-plan.js';
import { RunsService } from './runs.service.js';

/** How often a training candidate reads its run's status, for cancels made by another process (this process's own reach it at once). */
const CANCEL_POLL_MS = 5000;
const SUPERVISE_MS = 5000;

/**
 * Works the candidate jobs of this process (WORKERS at a time): each candidate trains in a worker
 * thread; its result lands in one transaction that is a no-op if another attempt already landed
 * one. A supervisor requeues the candidates of workers that died.
 */
@Injectable()
export class RunsProcessor implements OnApplicationBootstrap {
  private readonly logger = new Logger(RunsProcessor.name);
  private supervisor: NodeJS.Timeout | null = null;

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @InjectDataSource() private readonly dataSource: DataSource,
    private readonly runs: RunsService,
    private readonly lifecycle: RunLifecycle,
    private readonly models: ModelsService,
    private readonly datasets: DatasetsService,
    private readonly jobs: JobsService,
    private readonly registry: WorkerRegistryService,
    private readonly pool: WorkerPoolService,
    private readonly artifacts: ArtifactsService,
    private readonly metrics: MetricsService,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    await this.registry.register();
    await this.recover();
    await this.jobs.work(JobName.TrainCandidate, this.config.workers, (payload, job) => this.trainCandidate(payload.candidateId, job));
    this.supervisor = setInterval(() => this.recover().catch((err) => this.logger.warn({ err }, 'recovery sweep failed')), SUPERVISE_MS);
    this.supervisor.unref();
  }

  onApplicationShutdown(): void {
    if (this.supervisor) clearInterval(this.supervisor);
  }

  /** Candidates left running by a dead worker go back to the queue (their job fails into a retry). */
  async recover(): Promise<void> {
    const dead = await this.registry.deadWorkerIds();
    if (!dead.length) return;
    const orphans = await this.dataSource.getRepository(RunCandidateEntity).findBy({ status: 'running', workerId: In(dead) });
    for (const c of orphans) {
      await this.dataSource.transaction(async (tx) => {
        // Still the dead worker's: the job-hold sweep may have handed its job on, and a live worker
        // may already have claimed the candidate again (then it is not ours to requeue).
        const requeued = await tx.update(RunCandidateEntity, { id: c.id, status: 'running', workerId: c.workerId! }, { status: 'queued', workerId: null, progress: null });
        if (requeued.affected) await this.lifecycle.event(tx, c.runId, 'candidate-requeued', { reason: 'its worker stopped answering', attempts: c.attempts }, c.id);
      });
      // Its train-candidate job is handed back to the queue by the job-hold sweep (JobsService).
      this.logger.warn({ candidate: c.id, run: c.runId }, 'requeued the candidate of a dead worker');
    }
    await this.registry.forget(dead);
  }

  async trainCandidate(candidateId: string, job: { id: string; retryCount: number }): Promise<void> {
    const candidate = await this.dataSource.getRepository(RunCandidateEntity).findOneBy({ id: candidateId });
    if (!candidate || FINISHED.includes(candidate.status)) return; // idempotent: already done (or gone)
    const run = await this.runs.entity(candidate.runId);
    if (run.status === 'cancelled') {
      await this.finishCandidate(candidate, 'cancelled', null);
      return;
    }
    const started = await this.dataSource.transaction(async (tx) => {
      const claimed = await tx.update(
        RunCandidateEntity,
        { id: candidate.id, status: In(['queued', 'running']) },
        { status: 'running', attempts: () => 'attempts + 1', workerId: this.registry.id, jobId: job.id, startedAt: new Date(), error: null },
      );
      if (!claimed.affected) return false;
      await this.lifecycle.start(tx, run.id);
      await this.lifecycle.event(tx, run.id, 'candidate-started', { phase: candidate.phase, index: candidate.index, attempt: candidate.attempts + 1 }, candidate.id);
      return true;
    });
    if (!started) return;

    const { model, mask, allr, maskId } = await this.candidateInputs(run, candidate);
    const abort = new AbortController();
    const cancelled = () => abort.abort(new Error('the run was cancelled'));
    const stopListening = this.runs.onCancel(run.id, cancelled);
    const cancelWatch = setInterval(async () => {
      if ((await this.runs.status(run.id).catch(() => null)) === 'cancelled') cancelled();
    }, CANCEL_POLL_MS);
    const progressWriter = new ProgressWriter<CandidateProgress>(
      this.config.progressWriteMs,
      (progress) => this.lifecycle.progress(this.dataSource.manager, run.id, candidate.id, progress, { phase: candidate.phase, index: candidate.index, ...progress }),
      (err) => this.logger.warn({ err }, 'progress write failed'),
    );
    const onProgress = (m: ProgressMessage) => {
      progressWriter.report({ epoch: m.epoch, step: m.step, steps: m.steps, loss: m.loss, learningRate: m.learningRate, samplesPerSecond: m.samplesPerSecond } as CandidateProgress);
    };
    const endWatch = async () => {
      clearInterval(cancelWatch);
      stopListening();
      // The last report is recorded before the candidate's end (a cancelled one takes none).
      if (abort.signal.aborted) progressWriter.stop();
      await progressWriter.flush();
    };

    let result: TrainTaskResult;
    try {
      result = await this.pool.run(
        {
          type: 'train',
          model: modelRef(model),
          dataset: await this.datasets.ref(run.datasetId),
          config: candidate.config as unknown as TrainingConfig,
          mask,
          allr,
          recalibrate: true,
          evaluate: ['val', 'test'],
        },
        { onProgress, signal: abort.signal },
      );
    } catch (err) {
      await endWatch();
      if (abort.signal.aborted) {
        await this.finishCandidate(candidate, 'cancelled', null);
        return;
      }
      const message = err instanceof Error ? err.message : String(err);
      const last = err instanceof CoreInputError || job.retryCount >= QUEUE_POLICIES[JobName.TrainCandidate].retryLimit;
      if (last) {
        await this.finishCandidate(candidate, 'failed', message);
        return;
      }
      await this.dataSource.transaction(async (tx) => {
        await tx.update(RunCandidateEntity, { id: candidate.id, status: 'running' }, { status: 'queued', error: message, workerId: null });
        await this.lifecycle.event(tx, run.id, 'candidate-retry', { phase: candidate.phase, index: candidate.index, error: message }, candidate.id);
      });
      throw err; // pg-boss retries with back-off
    }
    await endWatch();
    this.metrics.observeTraining(result.train.samples, result.train.durationMs / 1000);
    await this.landResult(run, candidate, result, model.id, maskId);
  }

  /**
   * The result model and the candidate's success, together, once: a second attempt finds it done. A
   * run cancelled while the candidate trained takes no result: the candidate ends cancelled.
   */
  private async landResult(run: RunEntity, candidate: RunCandidateEntity, result: TrainTaskResult, parentId: string, maskId: string | null): Promise<void> {
    const { stored } = result;
    let landed = false;
    let cancelled = false;
    try {
      landed = await this.dataSource.transaction(async (tx) => {
        // The run's row lock orders this landing against a cancel (which updates that row first).
        const current = await tx.findOne(RunEntity, { where: { id: run.id }, lock: { mode: 'pessimistic_write' } });
        if (current?.status === 'cancelled') {
          cancelled = true;
          return false;
        }
        const claim = await tx.update(RunCandidateEntity, { id: candidate.id, status: 'running', workerId: this.registry.id }, { status: 'succeeded' });
        if (!claim.affected) return false;
        const model = await this.models.createLayersModel(
          stored,
          {
            name: `${run.kind}-${run.id.slice(0, 8)}-c${candidate.phase}.${candidate.index}`,
            origin: { kind: run.kind === 'train' || candidate.phase === 0 ? 'train' : 'retrain', runId: run.id, candidateId: candidate.id, config: candidate.config, datasetId: run.datasetId },
            parentIds: [parentId],
            maskId,
          },
          tx,
        );
        const metrics = { ...result.metrics, train: result.train, backend: result.backend };
        await tx.update(
          RunCandidateEntity,
          { id: candidate.id },
          {
            resultModelId: model.id,
            valAccuracy: result.metrics.val?.accuracy ?? null,
            testAccuracy: result.metrics.test?.accuracy ?? null,
            metrics: metrics as never,
            progress: { epoch: result.train.epochs, step: result.train.steps, steps: result.train.steps },
            finishedAt: new Date(),
          },
        );
        if (!run.backend) await tx.update(RunEntity, { id: run.id }, { backend: result.backend });
        await this.lifecycle.event(tx, run.id, 'candidate-succeeded', { phase: candidate.phase, index: candidate.index, resultModelId: model.id, valAccuracy: result.metrics.val?.accuracy ?? null, testAccuracy: result.metrics.test?.accuracy ?? null }, candidate.id);
        // What the candidate's end enables (the phase's next step, or the run's end) commits with it:
        // a process killed right after the landing must not leave a finished phase nobody advances.
        await this.settleRun(run.id, candidate.phase, tx);
        return true;
      });
    } finally {
      if (!landed) {
        await this.artifacts.discard(stored.model.weights);
        await this.artifacts.discard(stored.topology);
      }
    }
    if (cancelled) await this.finishCandidate(candidate, 'cancelled', null);
  }

  private async finishCandidate(candidate: RunCandidateEntity, status: RunStatus, error: string | null): Promise<void> {
    await this.dataSource.transaction(async (tx) => {
      await this.lifecycle.finishCandidate(tx, candidate, status, error);
      await this.settleRun(candidate.runId, candidate.phase, tx);
    });
  }

  /**
   * What a candidate trains: the run's model and mask, or for IMP / SMS its phase's pruned model and
   * mask (ALLR's reference is the model the phase pruned).
   */
  private async candidateInputs(run: RunEntity, candidate: RunCandidateEntity) {
    const plan = run.plan;
    if (!plan.phases || candidate.phase === 0) {
      // Train / retrain runs, and the dense pretraining of an IMP / SMS run (phase 0).
      if (plan.phases) return { model: await this.models.entity(run.modelId), mask: { kind: 'none' as const }, allr: undefined, maskId: null };
      const model = await this.models.entity(run.modelId);
      const a = plan.allr;
      const measured = a?.relativeDistance !== undefined ? { relativeDistance: a.relativeDistance } : undefined;
      const allr = a ? { pruneRate: a.pruneRate, retrainToPretrainRatio: a.retrainToPretrainRatio, ...(measured ?? { reference: modelRef(await this.models.entity(a.referenceModelId)) }) } : undefined;
      return { model, mask: plan.mask, allr, maskId: run.maskId };
    }
    const phase = await this.dataSource.getRepository(RunPhaseEntity).findOneByOrFail({ runId: run.id, index: candidate.phase });
    const model = await this.models.entity(phase.prunedModelId!);
    const mask = await this.dataSource.getRepository(MaskEntity).findOneByOrFail({ id: phase.maskId! });
    const allr = plan.phases.retrainToPretrainRatio
      ? { reference: modelRef(await this.models.entity(phase.inputModelId!)), pruneRate: phasePruneRate(plan.phases, candidate.phase, phase.sparsity), retrainToPretrainRatio: plan.phases.retrainToPretrainRatio }
      : undefined;
    return { model, mask: { kind: 'stored' as const, sha256: mask.artifactSha256 }, allr, maskId: mask.id };
  }

  /**
   * A run is finished when every candidate is: succeeded if all succeeded, failed if any failed. Once.
   * For IMP / SMS a finished phase hands over to the state machine instead. With `manager`, inside
   * that transaction (the one that ended the candidate).
   */
  async settleRun(runId: string, phase = 0, manager?: EntityManager): Promise<void> {
    const settle = async (tx: EntityManager) => {
      // The row lock serialises candidates that finish at the same moment.
      const run = await tx.findOne(RunEntity, { where: { id: runId }, lock: { mode: 'pessimistic_write' } });
      if (!run) return;
      const candidates = await tx.findBy(RunCandidateEntity, { runId });
      if ((run.kind === 'imp' || run.kind === 'sms') && run.status !== 'cancelled') {
        if (candidates.filter((c) => c.phase === phase).every((c) => FINISHED.includes(c.status))) {
          await this.jobs.send(JobName.AdvanceRun, { runId }, { manager: tx, singletonKey: `${runId}:${phase}` });
        }
        return;
      }
      if (!candidates.every((c) => FINISHED.includes(c.status))) return;
      const failed = candidates.filter((c) => c.status === 'failed');
      const status: RunStatus = run.status === 'cancelled' ? 'cancelled' : failed.length ? 'failed' : 'succeeded';
      const error = failed.length ? `${failed.length} of ${candidates.length} candidates failed: ${failed[0].error}` : null;
      await this.lifecycle.finish(tx, runId, status, error);
    };
    await (manager ? settle(manager) : this.dataSource.transaction(settle));
  }
}
