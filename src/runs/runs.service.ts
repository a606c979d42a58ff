import { Inject, Injectable } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import { type DataSource, type EntityManager, In, } from 'typeorm';
import { notFound, ProblemException, unprocessable } from '../common/problem.js';
import type { AppConfig } from '../config/config.js';
import { APP_CONFIG } from '../config/config.module.js';
import { CoreInputError } from '../core/errors.js';
import { checkMaskFits } from '../core/masks/index.js';
import { compareWeightsAsync } from '../core/metrics/weights.js';
import { isPrunableByDefault } from '../core/pruning/prunable.js';
import { allrInitialRate, type FullTrainingConfig, TRAINING_DEFAULTS, validateTrainingConfig } from '../core/tf/training-config.js';
import { entityFromJson } from '../database/json-rows.js';
import { DatasetsService } from '../datasets/datasets.service.js';
import { JobName } from '../jobs/jobs.js';
import { JobsService } from '../jobs/jobs.service.js';
import type { MaskEntity } from '../masks/mask.entity.js';
import { MasksService } from '../masks/masks.service.js';
import type { ModelEntity } from '../models/model.entity.js';
import { modelRef } from '../models/model-ref.js';
import { ModelsService } from '../models/models.service.js';
import { cancelRunTasks } from '../tasks/run-tasks.js';
import { enqueueTask } from '../tasks/task.entity.js';
import { WorkerPoolService } from '../workers/worker-pool.service.js';
import { FINISHED, RunCandidateEntity, RunEntity, RunEventEntity, RunPhaseEntity, type RunStatus } from './run.entity.js';
import { RunLifecycle } from './run-lifecycle.js';
import { allrPruneRate, phasePruneRate, phaseSparsity, type RunPlan } from './run-plan.js';
import type { CreateRunDto, TrainingConfigDto } from './run-requests.dto.js';
import { mapRun, type RunDto, type RunPageDto, type RunQueryDto } from './runs.dto.js';

@Injectable()
export class RunsService {
  /** Who in this process waits to hear that a run was cancelled (its training candidates). */
  private readonly cancelListeners = new Map<string, Set<() => void>>();

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @InjectDataSource() private readonly dataSource: DataSource,
    private readonly models: ModelsService,
    private readonly masks: MasksService,
    private readonly datasets: DatasetsService,
    private readonly jobs: JobsService,
    private readonly pool: WorkerPoolService,
    private readonly lifecycle: RunLifecycle,
  ) {}

  /**
   * POST /runs. Everything that can be known before training is checked here (the configuration, that
   * the model is a layers model that takes the dataset, that the mask fits), so a bad run fails now
   * with a problem, not in a worker an hour later. Rows and jobs are committed together.
   */
  async create(dto: CreateRunDto): Promise<RunDto> {
    if (dto.pretrain && dto.kind !== 'imp' && dto.kind !== 'sms') throw new ProblemException(400, 'pretrain belongs to imp and sms runs', { slug: 'validation' });
    if (dto.pretrain && dto.modelId) throw new ProblemException(400, 'send either modelId or pretrain, not both', { slug: 'validation' });
    if (dto.trainer === 'external') {
      if (dto.pretrain) throw new ProblemException(400, 'pretrain is built-in training: an external run starts from an uploaded modelId', { slug: 'validation' });
      return this.createExternal(dto);
    }
    let pretrainConfig: FullTrainingConfig | undefined;
    if (dto.pretrain) {
      pretrainConfig = { ...TRAINING_DEFAULTS, ...stripUndefined(dto.pretrain.training ?? {}) };
      try {
        validateTrainingConfig(pretrainConfig);
      } catch (err) {
        if (err instanceof CoreInputError) throw new ProblemException(400, `pretrain: ${err.message}`, { slug: 'validation' });
        throw err;
      }
      await this.datasets.entity(dto.datasetId);
      const template = await this.models.fromTemplate({ architecture: dto.pretrain.architecture, datasetId: dto.datasetId, seed: dto.pretrain.seed ?? 0 });
      try {
        return await this.createFrom({ ...dto, modelId: template.id }, pretrainConfig);
      } catch (err) {
        // A refused run leaves nothing behind, the template it made included.
        await this.models.delete(template.id).catch(() => {});
        throw err;
      }
    }
    return this.createFrom(dto, undefined);
  }

  /**
   * An external run: the framework-specific steps (train, evaluate, recalibrate) become tasks that
   * external trainers lease. The model is safetensors and the dataset external (a name and a class
   * count); everything else is checked here, as for built-in runs.
   */
  private async createExternal(dto: CreateRunDto): Promise<RunDto> {
    if (dto.kind === 'train') throw new ProblemException(400, 'external trainers retrain: use kind retrain, imp or sms (dense training from scratch is built-in only)', { slug: 'validation' });
    const model = await this.models.entity(dto.modelId);
    if (model.format !== 'safetensors') {
      throw unprocessable(`model ${model.id} is a ${model.format === 'tfjs-graph' ? 'TensorFlow.js graph model' : 'TensorFlow.js layers model'}: an external trainer downloads and uploads safetensors (upload the checkpoint as safetensors)`, 'external-needs-safetensors');
    }
    const dataset = await this.datasets.entity(dto.datasetId);
    if (dataset.source !== 'external') {
      throw unprocessable(`dataset ${dataset.id} is ${dataset.source}: an external run names a dataset the trainer holds (POST /datasets with { name, source: "external", classes })`, 'external-needs-external-dataset');
    }
    const phased = dto.kind === 'imp' || dto.kind === 'sms';
    if (phased && dto.maskId) throw new ProblemException(400, `an ${dto.kind} run prunes its own masks: maskId belongs to retrain runs`, { slug: 'validation' });
    const maskId = phased ? null : (dto.maskId ?? model.maskId);
    if (!phased && !maskId) {
      throw new ProblemException(400, `an external retrain needs the mask the trainer keeps: send maskId (model ${model.id} was not pruned here, so it has no mask of its own)`, { slug: 'validation' });
    }
    const mask = maskId ? await this.masks.entity(maskId) : null;
    if (mask) {
      try {
        checkMaskFits(await this.masks.load(mask), model.tensors);
      } catch (err) {
        if (err instanceof CoreInputError) throw unprocessable(`mask ${mask.id} does not fit model ${model.id}: ${err.message}`, 'mask-mismatch');
        throw err;
      }
    }
    const configs = expandCandidates(dto);
    const plan: RunPlan = { mask: mask ? { kind: 'stored', sha256: mask.artifactSha256 } : { kind: 'implied' } };
    if (phased) plan.phases = this.phasesPlan(dto, configs, dto.pretrainEpochs ?? Number.NaN, undefined);
    else if (configs.some((c) => c.schedule === 'allr')) plan.allr = await this.allrPlan(model, dto, configs);
    validateCandidates(configs, plan);
    return this.persist(dto, model, mask, plan, configs, 'external');
  }

  /**
   * The train tasks of an external run's candidates: the input model and mask (a retrain run's, or
   * the phase's pruned model and mask) and each configuration with its η₀ (ALLR: computed here).
   */
  private async enqueueTrainTasks(tx: EntityManager, run: RunEntity, phase: number, candidates: RunCandidateEntity[]): Promise<void> {
    const plan = run.plan;
    let modelId = run.modelId;
    let maskId = run.maskId;
    let allr: { referenceModelId: string; pruneRate: number; retrainToPretrainRatio: number } | undefined = plan.allr;
    if (plan.phases) {
      const p = await tx.findOneByOrFail(RunPhaseEntity, { runId: run.id, index: phase });
      modelId = p.prunedModelId!;
      maskId = p.maskId;
      if (plan.phases.retrainToPretrainRatio) {
        allr = { referenceModelId: p.inputModelId!, pruneRate: phasePruneRate(plan.phases, phase, p.sparsity), retrainToPretrainRatio: plan.phases.retrainToPretrainRatio };
      }
    }
    const needsAllr = candidates.some((c) => c.config.schedule === 'allr');
    const distance = needsAllr && allr ? await this.relativeDistance(tx, modelId, allr.referenceModelId) : 0;
    for (const c of candidates) {
      const config = c.config as unknown as FullTrainingConfig;
      const initialLearningRate = config.schedule === 'allr' && allr ? allrInitialRate(config.learningRate, { relativeDistance: distance, pruneRate: allr.pruneRate, retrainToPretrainRatio: allr.retrainToPretrainRatio }) : config.learningRate;
      await enqueueTask(tx, {
        kind: 'train',
        runId: run.id,
        candidateId: c.id,
        phase,
        modelId,
        maskId,
        training: { ...config, initialLearningRate },
        datasetId: run.datasetId,
        split: 'train',
        maxAttempts: this.config.taskMaxAttempts,
      });
    }
  }

  /** ALLR's d = ‖θ − θ_pruned‖₂ / ‖θ‖₂ over the prunable tensors, θ the dense reference; read a tensor at a time. */
  private async relativeDistance(tx: EntityManager, prunedId: string, referenceId: string): Promise<number> {
    // Read in the caller's transaction (the embedded database has one connection).
    const pruned = await this.models.entity(prunedId, tx);
    const reference = await this.models.entity(referenceId, tx);
    const names = pruned.tensors.filter((t) => isPrunableByDefault(t) && reference.tensors.some((r) => r.name === t.name)).map((t) => t.name);
    const [a, b] = await Promise.all([this.models.openModel(pruned), this.models.openModel(reference)]);
    try {
      async function* read(r: typeof a) {
        for (const n of names) yield await r.readFloat32(n);
      }
      const cmp = await compareWeightsAsync(read(a), read(b));
      return cmp.normB > 0 ? cmp.l2 / cmp.normB : 0;
    } finally {
      await a.close();
      await b.close();
    }
  }

  private async createFrom(dto: CreateRunDto, pretrainConfig: FullTrainingConfig | undefined): Promise<RunDto> {
    const model = await this.models.entity(dto.modelId);
    if (model.format !== 'tfjs-layers') {
      throw unprocessable(`model ${model.id} is a ${model.format === "tfjs-graph" ? "TensorFlow.js graph model" : "safetensors checkpoint"}: training needs a TensorFlow.js layers model (it carries the architecture; graph models are pruned, masked and souped, not trained or evaluated here)`, 'no-architecture');
    }
    const dataset = await this.datasets.ref(dto.datasetId);
    const mask = dto.maskId ? await this.masks.entity(dto.maskId) : null;
    if (dto.kind === 'train' && mask) throw new ProblemException(400, 'a train run is dense: maskId belongs to retrain runs', { slug: 'validation' });
    const phased = dto.kind === 'imp' || dto.kind === 'sms';
    if (phased && mask) throw new ProblemException(400, `an ${dto.kind} run prunes its own masks: maskId belongs to retrain runs`, { slug: 'validation' });
    const configs = expandCandidates(dto);
    const plan: RunPlan = {
      mask: dto.kind === 'train' ? { kind: 'none' } : mask ? { kind: 'stored', sha256: mask.artifactSha256 } : { kind: 'implied' },
    };
    if (phased) {
      const pretrainEpochs = dto.pretrainEpochs ?? pretrainConfig?.epochs ?? (model.origin.kind === 'train' ? Number((model.origin.config as { epochs?: number } | undefined)?.epochs) : Number.NaN);
      plan.phases = this.phasesPlan(dto, configs, pretrainEpochs, pretrainConfig);
    } else if (configs.some((c) => c.schedule === 'allr')) plan.allr = await this.allrPlan(model, dto, configs);
    validateCandidates(configs, plan);
    const allrReference = plan.allr ? modelRef(await this.models.entity(plan.allr.referenceModelId)) : undefined;
    const found = await this.pool.run({ type: 'check-train', model: modelRef(model), dataset, maskSha256: mask?.artifactSha256, allrReference });
    plan.check = { prunableWeights: found.prunableWeights, hasBatchNorm: found.hasBatchNorm };
    if (plan.allr && found.relativeDistance !== undefined) plan.allr.relativeDistance = found.relativeDistance;
    return this.persist(dto, model, mask, plan, configs, 'builtin');
  }

  /** An IMP / SMS run's phases: T prunes to the goal, each retraining every configuration, ALLR's ratio when used. */
  private phasesPlan(dto: CreateRunDto, configs: FullTrainingConfig[], pretrainEpochs: number, pretrainConfig: FullTrainingConfig | undefined): NonNullable<RunPlan['phases']> {
    const allr = configs.some((c) => c.schedule === 'allr');
    if (allr && !(pretrainEpochs > 0)) {
      throw new ProblemException(400, 'the allr schedule needs pretrainEpochs (the dense model was not trained by this service, so its epochs are unknown)', { slug: 'validation' });
    }
    return {
      configs,
      goalSparsity: dto.goalSparsity!,
      count: dto.phases!,
      pruning: { method: dto.pruning?.method ?? 'magnitude-global', include: dto.pruning?.include, exclude: dto.pruning?.exclude },
      soup: dto.kind === 'sms' ? { method: dto.soup?.method ?? 'uniform', comparison: dto.soup?.comparison ?? '>=' } : null,
      ...(pretrainConfig ? { pretrain: pretrainConfig } : {}),
      ...(allr ? { retrainToPretrainRatio: Math.max(...configs.map((c) => c.epochs)) / pretrainEpochs } : {}),
    };
  }

  /** The run, its phases (IMP / SMS: the state machine's first job) or candidates, and run-created, in one transaction. */
  private async persist(dto: CreateRunDto, model: ModelEntity, mask: MaskEntity | null, plan: RunPlan, configs: FullTrainingConfig[], trainer: 'builtin' | 'external'): Promise<RunDto> {
    const external = trainer === 'external';
    const run = await this.dataSource.transaction(async (tx) => {
      const saved = await tx.save(
        tx.create(RunEntity, {
          kind: dto.kind,
          status: 'queued',
          backend: external ? 'external' : null,
          request: { ...dto, ...(external ? { trainer } : {}) } as unknown as Record<string, unknown>,
          plan,
          modelId: model.id,
          datasetId: dto.datasetId,
          maskId: mask?.id ?? null,
          callbackUrl: dto.callbackUrl ?? null,
          error: null,
          startedAt: null,
          finishedAt: null,
        }),
      );
      const announced = external ? { trainer } : {};
      if (plan.phases) {
        const { count, goalSparsity } = plan.phases;
        await tx.save(
          Array.from({ length: count }, (_, i) =>
            tx.create(RunPhaseEntity, { runId: saved.id, index: i + 1, sparsity: phaseSparsity(goalSparsity, count, i + 1), status: 'queued' as const }),
          ),
        );
        await this.lifecycle.event(tx, saved.id, 'run-created', { kind: dto.kind, ...announced, phases: count, candidatesPerPhase: configs.length });
        await this.jobs.send(JobName.AdvanceRun, { runId: saved.id }, { manager: tx });
        return saved;
      }
      await this.enqueueCandidates(tx, saved.id, 0, configs);
      await this.lifecycle.event(tx, saved.id, 'run-created', { kind: dto.kind, ...announced, candidates: configs.length });
      return saved;
    });
    return this.get(run.id);
  }

  /** Candidate rows for one phase (0 for train / retrain runs), each with its job, in the caller's transaction. */
  async enqueueCandidates(tx: EntityManager, runId: string, phase: number, configs: FullTrainingConfig[]): Promise<RunCandidateEntity[]> {
    const candidates = await tx.save(
      configs.map((config, index) => tx.create(RunCandidateEntity, { runId, phase, index, config: { ...config }, status: 'queued' as RunStatus, attempts: 0 })),
    );
    const run = await tx.findOneByOrFail(RunEntity, { id: runId });
    if (run.request.trainer === 'external') {
      // External trainers lease these as tasks; no job of this service trains them.
      await this.enqueueTrainTasks(tx, run, phase, candidates);
      return candidates;
    }
    for (const c of candidates) {
      c.jobId = await this.jobs.send(JobName.TrainCandidate, { runId, candidateId: c.id }, { manager: tx });
      await tx.update(RunCandidateEntity, { id: c.id }, { jobId: c.jobId });
    }
    return candidates;
  }

  /** ALLR's inputs known before training: the dense reference (the parent), p, and E_retrain / E_pretrain. */
  private async allrPlan(model: ModelEntity, dto: CreateRunDto, configs: FullTrainingConfig[]): Promise<NonNullable<RunPlan['allr']>> {
    const parentId = (await this.models.get(model.id)).parentIds[0];
    if (dto.kind !== 'retrain' || !parentId) {
      throw new ProblemException(400, 'the allr schedule retrains a pruned model: the model needs a parent (the model it was pruned from)', { slug: 'validation' });
    }
    const parent = await this.models.entity(parentId);
    const kept = (m: ModelEntity) => m.tensors.filter((t) => t.prunable).reduce((n, t) => n + t.size - t.zeros, 0);
    const pruneRate = allrPruneRate(Math.max(1, kept(parent)), kept(model));
    const pretrainEpochs = dto.pretrainEpochs ?? (parent.origin.kind === 'train' ? Number((parent.origin.config as { epochs?: number } | undefined)?.epochs) : Number.NaN);
    if (!(pretrainEpochs > 0)) {
      throw new ProblemException(400, 'the allr schedule needs pretrainEpochs (the dense model was not trained by this service, so its epochs are unknown)', { slug: 'validation' });
    }
    const retrainEpochs = Math.max(...configs.map((c) => c.epochs));
    return { referenceModelId: parent.id, pruneRate, retrainToPretrainRatio: retrainEpochs / pretrainEpochs };
  }

  async list(q: RunQueryDto): Promise<RunPageDto> {
    const limit = q.limit ?? 50;
    const offset = q.offset ?? 0;
    const where = { ...(q.kind ? { kind: q.kind as RunEntity['kind'] } : {}), ...(q.status ? { status: q.status as RunStatus } : {}) };
    const [rows, total] = await this.dataSource.getRepository(RunEntity).findAndCount({ where, order: { createdAt: 'DESC', id: 'ASC' }, take: limit, skip: offset });
    const ids = rows.map((r) => r.id);
    const candidates = rows.length ? await this.dataSource.getRepository(RunCandidateEntity).findBy({ runId: In(ids) }) : [];
    const phases = rows.length ? await this.dataSource.getRepository(RunPhaseEntity).findBy({ runId: In(ids) }) : [];
    return { items: rows.map((r) => mapRun(r, candidates.filter((c) => c.runId === r.id), phases.filter((p) => p.runId === r.id))), total, limit, offset };
  }

  /**
   * GET /runs/{id}: the run with its candidates and phases in one statement (clients poll this
   * every few seconds per run; three TypeORM queries cost three times the main thread's time).
   */
  async get(id: string): Promise<RunDto> {
    const rows: { run: Record<string, unknown>; candidates: Record<string, unknown>[]; phases: Record<string, unknown>[] }[] = await this.dataSource.query(
      `SELECT to_jsonb(r) AS run,
              (SELECT coalesce(jsonb_agg(to_jsonb(c)), '[]'::jsonb) FROM run_candidate c WHERE c.run_id = r.id) AS candidates,
              (SELECT coalesce(jsonb_agg(to_jsonb(p)), '[]'::jsonb) FROM run_phase p WHERE p.run_id = r.id) AS phases
         FROM run r WHERE r.id = $1`,
      [id],
    );
    if (!rows.length) throw notFound('run', id);
    const [row] = rows;
    return mapRun(
      entityFromJson(this.dataSource, RunEntity, row.run),
      row.candidates.map((c) => entityFromJson(this.dataSource, RunCandidateEntity, c)),
      row.phases.map((p) => entityFromJson(this.dataSource, RunPhaseEntity, p)),
    );
  }

  async entity(id: string, manager: EntityManager = this.dataSource.manager): Promise<RunEntity> {
    const run = await manager.findOneBy(RunEntity, { id });
    if (!run) throw notFound('run', id);
    return run;
  }

  /**
   * Cancels a run: queued candidates never start, running ones are stopped by their worker within a
   * couple of seconds, finished ones and their models stay.
   */
  async cancel(id: string): Promise<RunDto> {
    const run = await this.entity(id);
    if (FINISHED.includes(run.status)) throw new ProblemException(409, `run ${id} has already ${run.status === 'cancelled' ? 'been cancelled' : run.status}`);
    const queued = await this.dataSource.transaction(async (tx) => {
      const queued = await this.lifecycle.cancel(tx, id);
      if (run.request.trainer === 'external') {
        // Queued and leased tasks are cancelled with their candidates; then nothing of the run runs.
        await cancelRunTasks(tx, this.lifecycle, id);
        if (!(await tx.exists(RunCandidateEntity, { where: { runId: id, status: 'running' } }))) await this.lifecycle.finish(tx, id, 'cancelled', null);
      }
      return queued;
    });
    for (const c of queued) if (c.jobId) await this.jobs.cancel(JobName.TrainCandidate, c.jobId);
    for (const listener of this.cancelListeners.get(id) ?? []) listener();
    return this.get(id);
  }

  /**
   * Calls `listener` when this process cancels run `id` (after the cancel committed); answers the
   * function that stops listening. Other processes' cancels are seen by polling the run's status.
   */
  onCancel(id: string, listener: () => void): () => void {
    const set = this.cancelListeners.get(id) ?? new Set();
    set.add(listener);
    this.cancelListeners.set(id, set);
    return () => {
      set.delete(listener);
      if (!set.size) this.cancelListeners.delete(id);
    };
  }

  /** The run's status alone (a polling read: no JSON columns). */
  async status(id: string): Promise<RunStatus | null> {
    const rows: { status: RunStatus }[] = await this.dataSource.query('SELECT status FROM run WHERE id = $1', [id]);
    return rows[0]?.status ?? null;
  }

  async eventsAfter(runId: string, afterId: number, limit = 500): Promise<RunEventEntity[]> {
    return this.dataSource.getRepository(RunEventEntity).createQueryBuilder('e').where('e.run_id = :runId AND e.id > :afterId', { runId, afterId }).orderBy('e.id', 'ASC').limit(limit).getMany();
  }
}

/** The m candidate configurations: explicit, or the base configuration with one field varied. */
export function expandCandidates(dto: CreateRunDto): FullTrainingConfig[] {
  const full = (c: TrainingConfigDto | undefined): FullTrainingConfig => ({ ...TRAINING_DEFAULTS, ...stripUndefined(c ?? {}) });
  if (dto.kind === 'train') {
    if (dto.candidates || dto.m !== undefined) throw new ProblemException(400, 'a train run has one configuration: send training, not candidates or m', { slug: 'validation' });
    return [full(dto.training)];
  }
  if (dto.kind === 'imp') {
    if (dto.candidates || (dto.m !== undefined && dto.m !== 1)) throw new ProblemException(400, 'an imp run retrains one candidate per phase (m = 1); use sms for m > 1', { slug: 'validation' });
    const base = full(dto.training);
    return [{ ...base, epochs: base.epochs * (dto.epochsMultiplier ?? 1) }];
  }
  if (dto.epochsMultiplier !== undefined) throw new ProblemException(400, 'epochsMultiplier belongs to imp runs (the IMP m× baseline)', { slug: 'validation' });
  if (dto.candidates) {
    if (dto.m !== undefined || dto.vary || dto.values) throw new ProblemException(400, 'send either candidates or m with vary, not both', { slug: 'validation' });
    return dto.candidates.map((c) => full({ ...dto.training, ...stripUndefined(c) }));
  }
  const m = dto.m!;
  const base = full(dto.training);
  const vary = dto.vary ?? 'seed';
  const values = dto.values ?? (vary === 'seed' ? Array.from({ length: m }, (_, i) => base.seed + i) : undefined);
  if (!values) throw new ProblemException(400, `vary "${vary}" needs values: one ${vary} per candidate`, { slug: 'validation', extensions: { errors: [{ field: 'values', errors: ['required'] }] } });
  if (values.length !== m) throw new ProblemException(400, `values has ${values.length} entries; m is ${m}`, { slug: 'validation', extensions: { errors: [{ field: 'values', errors: ['length must equal m'] }] } });
  return values.map((v, i) => {
    const ok = vary === 'schedule' ? typeof v === 'string' : typeof v === 'number' && Number.isFinite(v);
    if (!ok) throw new ProblemException(400, `values[${i}] is not a valid ${vary}`, { slug: 'validation', extensions: { errors: [{ field: `values.${i}`, errors: [`must be a ${vary === 'schedule' ? 'schedule name' : 'number'}`] }] } });
    return { ...base, [vary]: v } as FullTrainingConfig;
  });
}

/**
 * Every candidate's configuration, with ALLR's bounds where the plan uses it (the distance is not
 * known before pruning: 0 here): a 400 naming the candidate.
 */
function validateCandidates(configs: FullTrainingConfig[], plan: RunPlan): void {
  const allrCheck = plan.allr ?? (plan.phases?.retrainToPretrainRatio ? { pruneRate: 0.5, retrainToPretrainRatio: plan.phases.retrainToPretrainRatio } : undefined);
  for (const [i, c] of configs.entries()) {
    try {
      validateTrainingConfig(c, allrCheck ? { relativeDistance: 0, pruneRate: allrCheck.pruneRate, retrainToPretrainRatio: allrCheck.retrainToPretrainRatio } : undefined);
    } catch (err) {
      if (err instanceof CoreInputError) throw new ProblemException(400, `candidate ${i}: ${err.message}`, { slug: 'validation', extensions: { candidate: i } });
      throw err;
    }
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
