import { Inject, Injectable, type OnApplicationBootstrap } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import { type DataSource, In, Not } from 'typeorm';
import type { AppConfig } from '../config/config.js';
import { APP_CONFIG } from '../config/config.module.js';
import { CoreInputError } from '../core/errors.js';
import type { DatabaseHandle } from '../database/data-source.js';
import { DATABASE_HANDLE } from '../database/database.module.js';
import { DatasetsService } from '../datasets/datasets.service.js';
import { EvaluationsService } from '../evaluations/evaluations.service.js';
import { JobName, QUEUE_POLICIES } from '../jobs/jobs.js';
import { JobsService } from '../jobs/jobs.service.js';
import { WorkerRegistryService } from '../jobs/worker-registry.service.js';
import { MasksService } from '../masks/masks.service.js';
import { modelRef } from '../models/model-ref.js';
import { ModelsService } from '../models/models.service.js';
import { SoupsService } from '../soups/soups.service.js';
import { BN_STATISTIC } from '../tasks/bn.js';
import { ExternalGreedyService, type ExternalPhaseScore, ensembleTestAccuracy } from '../tasks/external-greedy.js';
import { enqueueTask, TaskEntity } from '../tasks/task.entity.js';
import { WorkerPoolService } from '../workers/worker-pool.service.js';
import { FINISHED, RunCandidateEntity, RunEntity, RunPhaseEntity } from './run.entity.js';
import { RunLifecycle } from './run-lifecycle.js';
import type { RunPlan } from './run-plan.js';
import { RunsService } from './runs.service.js';

/** A holder renews its lease every quarter of this; a dead holder's lease lapses within it. */
const LEASE_MS = 60_000;

const PHASE_CORRUPTIONS = [
  { name: 'gaussian-noise', severity: 3 },
  { name: 'rotation', severity: 3 },
  { name: 'contrast', severity: 3 },
];

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);

/**
 * The IMP / SMS state machine. Each AdvanceRun job moves the current phase one step — prune, fan
 * out the m retrains, merge (SMS: soup; IMP: the single candidate), evaluate — recording each
 * step's output before the next. A crash repeats at most the step in flight; candidates finishing
 * enqueue the next advance.
 */
@Injectable()
export class RunPhasesService implements OnApplicationBootstrap {

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @InjectDataSource() private readonly dataSource: DataSource,
    private readonly runs: RunsService,
    private readonly lifecycle: RunLifecycle,
    private readonly models: ModelsService,
    private readonly masks: MasksService,
    private readonly soups: SoupsService,
    private readonly evaluations: EvaluationsService,
    private readonly jobs: JobsService,
    private readonly pool: WorkerPoolService,
    @Inject(DATABASE_HANDLE) private readonly database: DatabaseHandle,
    private readonly datasets: DatasetsService,
    private readonly registry: WorkerRegistryService,
    private readonly externalGreedy: ExternalGreedyService,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    // The embedded database is one process: a lease left in it belongs to a previous, dead life.
    if (this.database.embedded) await this.dataSource.query('UPDATE run SET advance_lease_until = NULL WHERE advance_lease_until IS NOT NULL');
    await this.jobs.work(JobName.AdvanceRun, 1, ({ runId }, job) => this.advance(runId, job));
  }

  /**
   * Advances a run as far as it can go now. One process at a time: the run's lease is claimed first
   * (it expires, so a crashed holder does not block the run); a job that finds it taken comes back
   * a few seconds later instead of being lost.
   */
  async advance(runId: string, job?: { retryCount: number }): Promise<void> {
    if (this.advancing.has(runId) || !(await this.claim(runId))) {
      await this.jobs.send(JobName.AdvanceRun, { runId }, { startAfterSeconds: 5 });
      return;
    }
    this.advancing.add(runId);
    // Renewed while this process works, so it outlives long steps but not a dead holder.
    const renew = setInterval(() => this.renew(runId).catch(() => {}), LEASE_MS / 4);
    try {
      await this.advanceClaimed(runId);
    } catch (err) {
      // A run never stays running after a step failed for good: a client error (it will fail the
      // same way again) or the last retry ends the phase and the run `failed`, with the error.
      const last = err instanceof CoreInputError || (job?.retryCount ?? 0) >= QUEUE_POLICIES[JobName.AdvanceRun].retryLimit;
      if (!last) throw err;
      await this.failStep(runId, err as Error);
    } finally {
      clearInterval(renew);
      this.advancing.delete(runId);
      await this.dataSource.query('UPDATE run SET advance_lease_until = NULL, advance_lease_holder = NULL WHERE id = $1 AND advance_lease_holder = $2', [runId, this.registry.id]);
    }
  }

  /** Runs this process is advancing now; a lease of this process on any other run is a leftover. */
  private readonly advancing = new Set<string>();

  /** Takes the lease; false when another live process holds it (a dead holder's is taken over). */
  private async claim(runId: string): Promise<boolean> {
    const take = async (condition: string, extra: unknown[] = []) => {
      const rows: unknown[] = await this.dataSource.query(
        `WITH c AS (UPDATE run SET advance_lease_until = now() + ($2 || ' milliseconds')::interval, advance_lease_holder = $3
                    WHERE id = $1 AND (${condition}) RETURNING id) SELECT id FROM c`,
        [runId, String(LEASE_MS), this.registry.id, ...extra],
      );
      return rows.length > 0;
    };
    if (await take('advance_lease_until IS NULL OR advance_lease_until < now()')) return true;
    const [row]: { holder: string | null }[] = await this.dataSource.query('SELECT advance_lease_holder AS holder FROM run WHERE id = $1', [runId]);
    if (!row?.holder) return false;
    // Our own lease, though this process is not advancing the run: an earlier step's release failed
    // (the database went away as it ended). Waiting out its 60 s would stall the run for nothing.
    if (row.holder === this.registry.id) return take('advance_lease_holder = $4', [row.holder]);
    return (await this.registry.isDead(row.holder)) && take('advance_lease_holder = $4', [row.holder]);
  }

  private async renew(runId: string): Promise<void> {
    await this.dataSource.query(`UPDATE run SET advance_lease_until = now() + ($2 || ' milliseconds')::interval WHERE id = $1 AND advance_lease_holder = $3`, [runId, String(LEASE_MS), this.registry.id]);
  }

  private async advanceClaimed(runId: string): Promise<void> {
    for (;;) {
      const run = await this.runs.entity(runId);
      if (FINISHED.includes(run.status) && run.status !== 'cancelled') return;
      const plan = run.plan.phases!;
      const phases = await this.dataSource.getRepository(RunPhaseEntity).find({ where: { runId }, order: { index: 'ASC' } });
      const phase = phases.find((p) => p.status !== 'succeeded');
      if (run.status === 'cancelled') {
        if (phase && !FINISHED.includes(phase.status as never)) await this.dataSource.getRepository(RunPhaseEntity).update({ runId, index: phase.index }, { status: 'cancelled', finishedAt: new Date() });
        return;
      }
      if (run.status === 'queued') await this.lifecycle.start(this.dataSource.manager, runId);
      if (plan.pretrain && !(await this.pretrained(run, plan.pretrain))) return;
      if (!phase) return this.finish(run, 'succeeded', null);
      const moved = await this.step(run, plan, phase, phases);
      if (!moved) return; // waiting for candidates
    }
  }

  /** One step of the phase; false when the phase waits for its candidates. */
  private async step(run: RunEntity, plan: NonNullable<RunPlan['phases']>, phase: RunPhaseEntity, phases: RunPhaseEntity[]): Promise<boolean> {
    const repo = this.dataSource.getRepository(RunPhaseEntity);
    const key = { runId: run.id, index: phase.index };
    switch (phase.status) {
      case 'queued': {
        const input = phase.index === 1 ? await this.startingModel(run, plan) : phases[phase.index - 2].resultModelId!;
        // Idempotent per run and phase: the pruned model, its mask and the phase's record land in one
        // transaction, which claims the phase (still queued) first; a second attempt rolls back.
        const lost = new Error('the phase was pruned by another attempt');
        await this.lifecycle.event(this.dataSource.manager, run.id, 'phase-pruning', { phase: phase.index, sparsity: phase.sparsity, inputModelId: input });
        try {
          await this.masks.prune(
            input,
            { method: plan.pruning.method, sparsity: phase.sparsity, include: plan.pruning.include, exclude: plan.pruning.exclude, name: `${run.kind}-${run.id.slice(0, 8)}-p${phase.index}-pruned` },
            {
              record: async (tx, { model, mask }) => {
                const claimed = await tx.update(RunPhaseEntity, { ...key, status: 'queued' }, { status: 'pruned', inputModelId: input, prunedModelId: model.id, maskId: mask.id });
                if (!claimed.affected) throw lost;
                await this.lifecycle.event(tx, run.id, 'phase-pruned', { phase: phase.index, sparsity: phase.sparsity, maskId: mask.id, prunedModelId: model.id });
              },
              lane: 'background',
            },
          );
        } catch (err) {
          if (err !== lost) throw err;
        }
        return true;
      }
      case 'pruned': {
        await this.dataSource.transaction(async (tx) => {
          const existing = await tx.countBy(RunCandidateEntity, { runId: run.id, phase: phase.index });
          if (!existing) await this.runs.enqueueCandidates(tx, run.id, phase.index, plan.configs);
          await tx.update(RunPhaseEntity, key, { status: 'training' });
          await this.lifecycle.event(tx, run.id, 'phase-training', { phase: phase.index, candidates: plan.configs.length });
        });
        return false;
      }
      case 'training': {
        const candidates = await this.dataSource.getRepository(RunCandidateEntity).find({ where: { runId: run.id, phase: phase.index }, order: { index: 'ASC' } });
        if (!candidates.every((c) => FINISHED.includes(c.status))) return false;
        const failed = candidates.filter((c) => c.status !== 'succeeded');
        if (failed.length) {
          await repo.update(key, { status: 'failed', finishedAt: new Date() });
          await this.finish(run, 'failed', `phase ${phase.index}: ${failed.length} of ${candidates.length} candidates ${failed[0].status}${failed[0].error ? `: ${failed[0].error}` : ''}`);
          return false;
        }
        await this.dataSource.transaction(async (tx) => {
          await tx.update(RunPhaseEntity, key, { status: 'merging' });
          await this.lifecycle.event(tx, run.id, 'phase-merging', { phase: phase.index, candidates: candidates.length });
        });
        return true;
      }
      case 'merging': {
        if (run.request.trainer === 'external') return this.mergeExternal(run, plan, phase);
        await this.merge(run, plan, phase);
        return true;
      }
      default:
        return false;
    }
  }

  /** Phase 0: the dense training of a template. True once its model exists; enqueues it the first time. */
  private async pretrained(run: RunEntity, config: NonNullable<NonNullable<RunPlan['phases']>['pretrain']>): Promise<boolean> {
    const c = await this.dataSource.getRepository(RunCandidateEntity).findOneBy({ runId: run.id, phase: 0 });
    if (!c) {
      await this.dataSource.transaction(async (tx) => {
        await this.runs.enqueueCandidates(tx, run.id, 0, [config]);
        await this.lifecycle.event(tx, run.id, 'pretraining', { config });
      });
      return false;
    }
    if (!FINISHED.includes(c.status)) return false;
    if (c.status !== 'succeeded') {
      await this.finish(run, 'failed', `pretraining ${c.status}${c.error ? `: ${c.error}` : ''}`);
      return false;
    }
    return true;
  }

  /** Phase 1 prunes the given model, or the pretrained one. */
  private async startingModel(run: RunEntity, plan: NonNullable<RunPlan['phases']>): Promise<string> {
    if (!plan.pretrain) return run.modelId;
    const c = await this.dataSource.getRepository(RunCandidateEntity).findOneByOrFail({ runId: run.id, phase: 0 });
    return c.resultModelId!;
  }

  /** SMS: the soup of the phase's candidates; IMP: its single candidate. Then the phase's figures. */
  private async merge(run: RunEntity, plan: NonNullable<RunPlan['phases']>, phase: RunPhaseEntity): Promise<void> {
    const candidates = await this.dataSource.getRepository(RunCandidateEntity).find({ where: { runId: run.id, phase: phase.index }, order: { index: 'ASC' } });
    const ids = candidates.map((c) => c.resultModelId!);
    let resultModelId = ids[0];
    let soupId: string | null = null;
    let soupVal: number | null = null;
    if (plan.soup) {
      // Once per phase: the soup's row is noted on the phase as it is created, so a repeat of this
      // step (its process died) finishes that soup instead of starting a second one.
      const key = { runId: run.id, index: phase.index };
      let soup = phase.soupId ? await this.soups.get(phase.soupId) : null;
      if (soup && soup.status !== 'succeeded') {
        await this.soups.build(soup.id, { rethrow: true });
        soup = await this.soups.get(soup.id);
      }
      // Greedy ranks the candidates by the val accuracy their train task measured (after its BN
      // recalibration on 20 % of train, subset seeded by the candidate's seed; greedy's own single
      // scoring seeds it 0), so only the sets are scored: m − 1 scorings instead of 2m − 1.
      const vals = candidates.map((c) => c.valAccuracy);
      const knownScores = plan.soup.method === 'greedy' && vals.every((v): v is number => typeof v === 'number' && Number.isFinite(v)) ? vals : undefined;
      soup ??= (
        await this.soups.create(
          { modelIds: ids, method: plan.soup.method, comparison: plan.soup.method === 'greedy' ? plan.soup.comparison : undefined, datasetId: run.datasetId, name: `${run.kind}-${run.id.slice(0, 8)}-p${phase.index}-soup` },
          { inline: true, record: async (tx, id) => void (await tx.update(RunPhaseEntity, key, { soupId: id })), knownScores },
        )
      ).soup;
      resultModelId = soup.resultModelId!;
      soupId = soup.id;
      soupVal = soup.valAccuracy;
    }
    await this.lifecycle.event(this.dataSource.manager, run.id, 'phase-evaluating', { phase: phase.index, resultModelId, soupId });
    // Robustness (OOD) of the phase result, as the SMS code reports accuracy under corruption; a
    // repeat of this step reuses the evaluation an earlier attempt stored.
    const test = (await this.evaluations.findSame(resultModelId, { datasetId: run.datasetId, split: 'test', corruptions: PHASE_CORRUPTIONS })) ?? (await this.evaluations.create(resultModelId, { datasetId: run.datasetId, split: 'test', corruptions: PHASE_CORRUPTIONS }, 'background'));
    const val = soupVal ?? candidates[0].valAccuracy;
    const models = await Promise.all(ids.map((id) => this.models.entity(id)));
    const distances = ids.length > 1 ? await this.pool.run({ type: 'compare-models', models: models.map(modelRef) }, { lane: 'background' }) : [];
    // The candidates' prediction ensemble: what averaging their outputs (not their weights) reaches.
    const ensemble = ids.length > 1 ? await this.pool.run({ type: 'ensemble-evaluate', models: models.map(modelRef), dataset: await this.datasets.ref(run.datasetId), split: 'test' }) : null;
    const result = await this.models.entity(resultModelId);
    const tests = candidates.map((c) => c.testAccuracy ?? Number.NaN);
    const vals = candidates.map((c) => c.valAccuracy ?? Number.NaN);
    const metrics = {
      actualSparsity: result.prunableSparsity,
      valAccuracy: val,
      testAccuracy: test.accuracy,
      ece: test.ece,
      worstClassAccuracy: test.worstClassAccuracy,
      meanCorruptionAccuracy: test.meanCorruptionAccuracy,
      corruptions: test.corruptions,
      candidates: {
        meanValAccuracy: mean(vals),
        bestValAccuracy: Math.max(...vals),
        meanTestAccuracy: mean(tests),
        bestTestAccuracy: Math.max(...tests),
      },
      ensembleTestAccuracy: ensemble?.accuracy ?? null,
      meanL2Distance: mean(distances.map((d) => d.l2)),
      meanAngleDegrees: mean(distances.filter((d) => d.angleDegrees !== null).map((d) => d.angleDegrees!)),
      distances,
    };
    await this.dataSource.transaction(async (tx) => {
      await tx.update(RunPhaseEntity, { runId: run.id, index: phase.index }, { status: 'succeeded', soupId, resultModelId, metrics: metrics as never, finishedAt: new Date() });
      await this.lifecycle.event(tx, run.id, 'phase-succeeded', { phase: phase.index, sparsity: phase.sparsity, resultModelId, testAccuracy: test.accuracy, valAccuracy: val });
    });
  }

  /**
   * An external run's merge: the soup (SMS; IMP: the single candidate) is built here; a trainer
   * recalibrates its batch norm (when the model has any) and evaluates it, as tasks. False while a
   * task is out; each task's result enqueues the next advance.
   */
  private async mergeExternal(run: RunEntity, plan: NonNullable<RunPlan['phases']>, phase: RunPhaseEntity): Promise<boolean> {
    const candidates = await this.dataSource.getRepository(RunCandidateEntity).find({ where: { runId: run.id, phase: phase.index }, order: { index: 'ASC' } });
    const ids = candidates.map((c) => c.resultModelId!);
    // Greedy: the trainer scores each set the greedy algorithm asks for; the final set's scoring is the phase's evaluation.
    const scored = plan.soup?.method === 'greedy' ? await this.externalGreedy.phase(run, phase, ids, plan.soup.comparison) : await this.scoreExternal(run, plan, phase, ids);
    if (!scored) return false;
    const { resultModelId, soupId, metrics: m, taskId } = scored;
    const perClass = (m.perClassAccuracy ?? []).filter((x): x is number => typeof x === 'number');
    const models = await Promise.all(ids.map((id) => this.models.entity(id)));
    const distances = ids.length > 1 ? await this.pool.run({ type: 'compare-models', models: models.map(modelRef) }, { lane: 'background' }) : [];
    const result = await this.models.entity(resultModelId);
    const tests = candidates.map((c) => c.testAccuracy ?? Number.NaN);
    const vals = candidates.map((c) => c.valAccuracy ?? Number.NaN);
    const metrics = {
      actualSparsity: result.prunableSparsity,
      valAccuracy: m.valAccuracy ?? null,
      testAccuracy: m.testAccuracy ?? null,
      ece: m.ece ?? null,
      loss: m.loss ?? null,
      worstClassAccuracy: perClass.length ? Math.min(...perClass) : null,
      meanCorruptionAccuracy: null,
      corruptions: [],
      candidates: { meanValAccuracy: mean(vals), bestValAccuracy: Math.max(...vals), meanTestAccuracy: mean(tests), bestTestAccuracy: Math.max(...tests) },
      ensembleTestAccuracy: await ensembleTestAccuracy(this.dataSource, run.id, phase.index),
      meanL2Distance: mean(distances.map((d) => d.l2)),
      meanAngleDegrees: mean(distances.filter((d) => d.angleDegrees !== null).map((d) => d.angleDegrees!)),
      distances,
      trainer: 'external',
      evaluationTaskId: taskId,
    };
    await this.dataSource.transaction(async (tx) => {
      const claimed = await tx.update(RunPhaseEntity, { runId: run.id, index: phase.index, status: 'merging' }, { status: 'succeeded', soupId, resultModelId, metrics: metrics as never, finishedAt: new Date() });
      if (!claimed.affected) return;
      await this.lifecycle.event(tx, run.id, 'phase-succeeded', { phase: phase.index, sparsity: phase.sparsity, resultModelId, testAccuracy: m.testAccuracy ?? null, valAccuracy: m.valAccuracy ?? null });
    });
    return true;
  }

  /**
   * A uniform soup (SMS; IMP: the single candidate) built here, recalibrated by a trainer when the
   * model has batch norm, and evaluated: by the recalibration's own metrics when the trainer sent
   * val and test accuracy with it (one pass), else by an evaluate task. Null while a task is out.
   */
  private async scoreExternal(run: RunEntity, plan: NonNullable<RunPlan['phases']>, phase: RunPhaseEntity, ids: string[]): Promise<ExternalPhaseScore | null> {
    let merged = ids[0];
    let soupId = phase.soupId;
    if (plan.soup) {
      if (!soupId) {
        const { soup } = await this.soups.create({ modelIds: ids, method: 'uniform', name: `${run.kind}-${run.id.slice(0, 8)}-p${phase.index}-soup` }, { inline: true });
        soupId = soup.id;
        await this.dataSource.getRepository(RunPhaseEntity).update({ runId: run.id, index: phase.index }, { soupId });
      }
      merged = (await this.soups.entity(soupId)).resultModelId!;
    }
    const tasks = this.dataSource.getRepository(TaskEntity);
    const outstanding = (t: TaskEntity | null) => !t || t.status === 'queued' || t.status === 'leased';
    const enqueue = (kind: 'evaluate' | 'recalibrate', modelId: string) =>
      this.dataSource.transaction(async (tx) => {
        await enqueueTask(tx, { kind, runId: run.id, soupId, phase: phase.index, modelId, maskId: phase.maskId, ensembleModelIds: ids.length > 1 ? ids : null, datasetId: run.datasetId, split: kind === 'evaluate' ? 'test' : 'train', maxAttempts: this.config.taskMaxAttempts });
        await this.lifecycle.event(tx, run.id, `phase-${kind}`, { phase: phase.index, modelId, trainer: 'external' });
      });
    // A soup of models with batch norm needs fresh running statistics (SMS recalibrates every soup).
    let resultModelId = merged;
    const model = await this.models.entity(merged);
    if (plan.soup && model.tensors.some((t) => BN_STATISTIC.test(t.name))) {
      const recal = await tasks.findOne({ where: { runId: run.id, phase: phase.index, kind: 'recalibrate' }, order: { createdAt: 'DESC' } });
      if (!recal) await enqueue('recalibrate', merged);
      if (outstanding(recal)) return null;
      if (recal!.status !== 'succeeded') return null; // failed: the task's failure ended the run
      resultModelId = recal!.resultModelId!;
      const r = (recal!.result?.metrics ?? null) as ExternalPhaseScore['metrics'] | null;
      if (typeof r?.valAccuracy === 'number' && typeof r.testAccuracy === 'number') return { resultModelId, soupId, metrics: r, taskId: recal!.id };
    }
    const evaluation = await tasks.findOne({ where: { runId: run.id, phase: phase.index, kind: 'evaluate' }, order: { createdAt: 'DESC' } });
    if (!evaluation) await enqueue('evaluate', resultModelId);
    if (outstanding(evaluation)) return null;
    if (evaluation!.status !== 'succeeded') return null;
    return { resultModelId, soupId, metrics: (evaluation!.result?.metrics ?? {}) as ExternalPhaseScore['metrics'], taskId: evaluation!.id };
  }

  private async failStep(runId: string, err: Error): Promise<void> {
    const phase = await this.dataSource.getRepository(RunPhaseEntity).findOne({ where: { runId, status: Not(In(['succeeded', 'failed', 'cancelled'])) }, order: { index: 'ASC' } });
    const where = phase ? `phase ${phase.index}` : 'pretraining';
    await this.dataSource.transaction(async (tx) => {
      if (phase) await tx.update(RunPhaseEntity, { runId, index: phase.index }, { status: 'failed', finishedAt: new Date() });
      await this.lifecycle.finish(tx, runId, 'failed', `${where}: ${err.message}`);
    });
  }

  private async finish(run: RunEntity, status: 'succeeded' | 'failed', error: string | null): Promise<void> {
    await this.dataSource.transaction((tx) => this.lifecycle.finish(tx, run.id, status, error));
  }
}
