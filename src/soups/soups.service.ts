import { Injectable, type OnApplicationBootstrap } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import { type DataSource, type EntityManager, In } from 'typeorm';
import { ArtifactsService } from '../artifacts/artifacts.service.js';
import { notFound, ProblemException, unprocessable } from '../common/problem.js';
import { CoreInputError } from '../core/errors.js';
import { SOUP_METHODS } from '../core/soups/methods.js';
import { hasBatchNorm } from '../core/tf/batch-norm.js';
import { DatasetsService } from '../datasets/datasets.service.js';
import { JobName, QUEUE_POLICIES } from '../jobs/jobs.js';
import { JobsService } from '../jobs/jobs.service.js';
import { modelRef } from '../models/model-ref.js';
import type { ModelDto } from '../models/models.dto.js';
import { ModelsService } from '../models/models.service.js';
import { ExternalGreedyService, GreedyScoringFailed } from '../tasks/external-greedy.js';
import { WebhooksService } from '../webhooks/webhooks.service.js';
import type { SoupTask, SoupTaskResult } from '../workers/tasks.js';
import { WorkerPoolService } from '../workers/worker-pool.service.js';
import { SoupEntity, SoupIngredientEntity } from './soup.entity.js';
import { type CreateSoupDto, mapSoup, type SoupDto, type SoupMethodDto, type SoupPageDto, type SoupQueryDto } from './soups.dto.js';


@Injectable()
export class SoupsService implements OnApplicationBootstrap {
  constructor(
    @InjectDataSource() private readonly dataSource: DataSource,
    private readonly models: ModelsService,
    private readonly datasets: DatasetsService,
    private readonly jobs: JobsService,
    private readonly pool: WorkerPoolService,
    private readonly artifacts: ArtifactsService,
    private readonly webhooks: WebhooksService,
    private readonly external: ExternalGreedyService,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    await this.jobs.work(JobName.BuildSoup, 1, async ({ soupId }, job) => {
      const last = job.retryCount >= QUEUE_POLICIES[JobName.BuildSoup].retryLimit;
      await this.build(soupId, { rethrow: !last });
    });
  }

  methods(): SoupMethodDto[] {
    return SOUP_METHODS.map((m) => ({ name: m.name, description: m.description, reference: m.reference, kind: m.kind, parameters: m.parameters.map((p) => ({ ...p, enum: p.enum ? [...p.enum] : undefined })) }));
  }

  /**
   * POST /soups. The candidates are validated first (names, shapes, dtypes and the shared mask): a
   * mismatch is a 422 listing every difference, before any row exists. Uniform and weighted soups are
   * built in the request (201); greedy soups evaluate many sets and run as a job (202).
   */
  /** `record` runs in the transaction that creates the soup's row (an SMS phase notes the soup it owns there). */
  /**
   * `opts.knownScores` (greedy, a run's phase): the candidates' validation accuracies measured after
   * their retraining; greedy ranks by them instead of scoring each candidate alone again. Kept in the
   * soup's params (a rebuild after a crash uses the same ones, and GET /soups shows them).
   */
  async create(dto: CreateSoupDto, opts: { inline?: boolean; record?: (tx: EntityManager, soupId: string) => Promise<void>; knownScores?: number[] } = {}): Promise<{ soup: SoupDto; accepted: boolean }> {
    if (dto.trainer === 'external') return this.createExternal(dto);
    if (new Set(dto.modelIds).size !== dto.modelIds.length) throw new ProblemException(400, 'modelIds lists a model twice', { slug: 'validation' });
    const models = await Promise.all(dto.modelIds.map((id) => this.models.entity(id)));
    const formats = [...new Set(models.map((m) => m.format))];
    if (formats.length > 1) {
      throw unprocessable('the candidates mix TensorFlow.js and safetensors checkpoints', 'candidate-mismatch', {
        mismatches: models.map((m, i) => ({ tensor: '*', kind: 'format', candidate: i, expected: models[0].format, actual: m.format })).filter((x) => x.actual !== x.expected),
      });
    }
    if (dto.method === 'weighted' && dto.weights?.length !== models.length) {
      throw new ProblemException(400, `weighted soups need one weight per model: ${dto.weights?.length ?? 0} weights for ${models.length} models`, { slug: 'validation' });
    }
    if (dto.method !== 'weighted' && dto.weights) throw new ProblemException(400, `weights belong to the weighted method, not ${dto.method}`, { slug: 'validation' });
    if (dto.weights && !dto.weights.some((w) => w > 0)) throw new ProblemException(400, 'at least one weight must be positive', { slug: 'validation' });
    const layers = formats[0] === 'tfjs-layers';
    if (dto.method === 'greedy' && (!layers || !dto.datasetId)) {
      throw new ProblemException(layers ? 400 : 422, layers ? 'greedy soups score candidates on a dataset: send datasetId' : 'greedy soups evaluate candidates: they need TensorFlow.js layers models', { slug: layers ? 'validation' : 'no-architecture' });
    }
    const recalibrate = dto.bnRecalibration ?? true;
    if (layers && recalibrate && models.some((m) => hasBatchNorm(m.tensors)) && !dto.datasetId) {
      throw new ProblemException(400, 'the models have batch norm, so the soup is recalibrated on a dataset: send datasetId (or bnRecalibration: false)', { slug: 'validation' });
    }
    const dataset = dto.datasetId ? await this.datasets.ref(dto.datasetId) : undefined;
    const task: SoupTask = {
      type: 'soup',
      models: models.map(modelRef),
      maskHashes: models.map((m) => m.impliedMaskHash),
      method: dto.method,
      weights: dto.weights,
      comparison: dto.comparison,
      dataset,
      recalibrate,
    };
    // SMS phases build their soup inside their own job: no second job to wait for.
    const greedy = dto.method === 'greedy' && !opts.inline;
    // A queued soup is checked now (a 422 rather than a failed job later); one built right here is
    // validated once, by its build, which deletes the row when the candidates do not fit.
    if (greedy) await this.pool.run({ ...task, validateOnly: true });
    const soup = await this.dataSource.transaction(async (tx) => {
      const s = await tx.save(
        tx.create(SoupEntity, {
          status: 'queued',
          method: dto.method,
          params: {
            weights: dto.weights ?? null,
            comparison: greedy ? (dto.comparison ?? '>=') : null,
            bnRecalibration: recalibrate,
            name: dto.name ?? null,
            ...(dto.method === 'greedy' && opts.knownScores ? { knownScores: opts.knownScores } : {}),
          },
          datasetId: dto.datasetId ?? null,
          steps: [],
          callbackUrl: dto.callbackUrl ?? null,
        }),
      );
      await tx.insert(SoupIngredientEntity, dto.modelIds.map((modelId, position) => ({ soupId: s.id, modelId, position })));
      if (greedy) await this.jobs.send(JobName.BuildSoup, { soupId: s.id }, { manager: tx });
      if (opts.record) await opts.record(tx, s.id);
      return s;
    });
    if (!greedy) await this.build(soup.id, { rethrow: true, deleteOnClientError: true });
    return { soup: await this.get(soup.id), accepted: greedy };
  }

  /**
   * A greedy soup scored by external trainers (the dataset is theirs): the candidates are checked
   * here (safetensors, mergeable), then its job merges each set the greedy algorithm asks for and
   * leaves the scoring to `recalibrate` / `evaluate` tasks (202).
   */
  private async createExternal(dto: CreateSoupDto): Promise<{ soup: SoupDto; accepted: boolean }> {
    if (dto.method !== 'greedy') {
      throw new ProblemException(400, `a ${dto.method} soup needs no trainer: leave trainer out (trainer "external" is for greedy soups, whose sets a trainer scores)`, { slug: 'validation' });
    }
    if (!dto.datasetId) throw new ProblemException(400, 'greedy soups score candidates on a dataset: send datasetId (the external dataset the trainer holds)', { slug: 'validation' });
    if (new Set(dto.modelIds).size !== dto.modelIds.length) throw new ProblemException(400, 'modelIds lists a model twice', { slug: 'validation' });
    const models = await Promise.all(dto.modelIds.map((id) => this.models.entity(id)));
    const other = models.find((m) => m.format !== 'safetensors');
    if (other) throw unprocessable(`model ${other.id} is not safetensors: an external trainer downloads and scores safetensors models`, 'external-needs-safetensors');
    const dataset = await this.datasets.entity(dto.datasetId);
    if (dataset.source !== 'external') {
      throw unprocessable(`dataset ${dataset.id} is ${dataset.source}: an external trainer scores on a dataset it holds (POST /datasets with { name, source: "external", classes }); built-in greedy soups need TensorFlow.js layers models`, 'external-needs-external-dataset');
    }
    await this.pool.run({ type: 'soup', models: models.map(modelRef), maskHashes: models.map((m) => m.impliedMaskHash), method: 'uniform', recalibrate: false, validateOnly: true });
    const soup = await this.dataSource.transaction(async (tx) => {
      const s = await this.external.createRow(tx, { modelIds: dto.modelIds, datasetId: dataset.id, comparison: dto.comparison ?? '>=', bnRecalibration: dto.bnRecalibration ?? true, name: dto.name ?? null, callbackUrl: dto.callbackUrl ?? null });
      await this.jobs.send(JobName.BuildSoup, { soupId: s.id }, { manager: tx });
      return s;
    });
    return { soup: await this.get(soup.id), accepted: true };
  }

  /** Builds a soup in a worker thread and lands its result model (parents: the ingredients, in order). */
  async build(soupId: string, opts: { rethrow: boolean; deleteOnClientError?: boolean }): Promise<void> {
    const soup = await this.entity(soupId);
    if (soup.status === 'succeeded') return;
    if (soup.params.trainer === 'external') return this.buildExternal(soup, opts);
    const ingredients = await this.ingredients(soupId);
    const models = await Promise.all(ingredients.map((i) => this.models.entity(i.modelId)));
    await this.dataSource.getRepository(SoupEntity).update({ id: soupId }, { status: 'running' });
    let result: SoupTaskResult;
    try {
      result = await this.pool.run({
        type: 'soup',
        models: models.map(modelRef),
        maskHashes: models.map((m) => m.impliedMaskHash),
        method: soup.method,
        weights: (soup.params.weights as number[] | null) ?? undefined,
        comparison: (soup.params.comparison as '>=' | '>' | null) ?? undefined,
        dataset: soup.datasetId ? await this.datasets.ref(soup.datasetId) : undefined,
        recalibrate: soup.params.bnRecalibration !== false,
        knownScores: soup.method === 'greedy' ? ((soup.params.knownScores as number[] | undefined) ?? undefined) : undefined,
      });
    } catch (err) {
      const client = err instanceof CoreInputError;
      if (client && opts.deleteOnClientError) {
        await this.dataSource.getRepository(SoupEntity).delete({ id: soupId });
        throw err;
      }
      if (opts.rethrow && !client) {
        await this.dataSource.getRepository(SoupEntity).update({ id: soupId }, { status: 'queued', error: (err as Error).message });
        throw err;
      }
      await this.dataSource.transaction(async (tx) => {
        await tx.update(SoupEntity, { id: soupId }, { status: 'failed', error: (err as Error).message, finishedAt: new Date() });
        await this.webhooks.notify({ resource: 'soup', id: soupId, status: 'failed', callbackUrl: soup.callbackUrl, data: { error: (err as Error).message } }, { manager: tx });
      });
      if (opts.rethrow) throw err;
      return;
    }
    const stored = result.stored!;
    const topology = stored.topology ? { ...stored.topology, sizeBytes: await this.artifacts.store.size(stored.topology.sha256) } : null;
    const maskIds = [...new Set(models.map((m) => m.maskId))];
    try {
      await this.dataSource.transaction(async (tx) => {
        const done = await tx.update(SoupEntity, { id: soupId, status: 'running' }, { status: 'succeeded' });
        if (!done.affected) throw new Error('the soup was finished by another attempt');
        let model: ModelDto;
        const base = {
          name: (soup.params.name as string | null) ?? `soup-${soup.method}-${soupId.slice(0, 8)}`,
          origin: { kind: 'soup' as const, soupId, method: soup.method, weights: result.weights },
          parentIds: models.map((m) => m.id),
          maskId: maskIds.length === 1 ? maskIds[0] : null,
        };
        if (topology && models[0].format === 'tfjs-graph') {
          model = await this.models.create({ ...base, format: 'tfjs-graph', weights: stored.weights.weights, topology, entries: stored.weights.entries, stats: stored.weights.stats, impliedMaskHash: stored.weights.impliedMaskHash, metadata: models[0].metadata }, tx);
        } else if (topology) {
          model = await this.models.createLayersModel({ topology, model: stored.weights }, base, tx);
        } else {
          model = await this.models.create({ ...base, format: 'safetensors', weights: stored.weights.weights, topology: null, entries: stored.weights.entries, stats: stored.weights.stats, impliedMaskHash: stored.weights.impliedMaskHash, metadata: models[0].metadata }, tx);
        }
        await tx.update(SoupEntity, { id: soupId }, {
          resultModelId: model.id,
          maskHash: result.maskHash,
          sparsity: model.prunableSparsity,
          weights: result.weights,
          steps: (result.steps ?? []).map((s) => ({ modelId: models[s.index].id, score: s.score, soupScore: s.soupScore, accepted: s.accepted })),
          valAccuracy: result.valAccuracy,
          error: null,
          finishedAt: new Date(),
        });
        await this.webhooks.notify({ resource: 'soup', id: soupId, status: 'succeeded', callbackUrl: soup.callbackUrl, data: { resultModelId: model.id, method: soup.method, valAccuracy: result.valAccuracy } }, { manager: tx });
      });
    } catch (err) {
      await this.artifacts.discard(stored.weights.weights);
      if (stored.topology) await this.artifacts.discard(stored.topology);
      if ((err as Error).message === 'the soup was finished by another attempt') return;
      throw err;
    }
  }

  /** One step of an external greedy soup (each scoring task's result runs it again); a step that cannot go on fails the soup. */
  private async buildExternal(soup: SoupEntity, opts: { rethrow: boolean }): Promise<void> {
    if (soup.status === 'failed' || soup.status === 'cancelled') return;
    try {
      await this.external.advance(soup.id, { runId: null, phase: 0 });
    } catch (err) {
      if (opts.rethrow && !(err instanceof CoreInputError) && !(err instanceof GreedyScoringFailed)) throw err;
      await this.dataSource.transaction(async (tx) => {
        await ExternalGreedyService.failSoup(tx, soup.id, (err as Error).message);
        await this.webhooks.notify({ resource: 'soup', id: soup.id, status: 'failed', callbackUrl: soup.callbackUrl, data: { error: (err as Error).message } }, { manager: tx });
      });
    }
  }

  async list(q: SoupQueryDto): Promise<SoupPageDto> {
    const limit = q.limit ?? 50;
    const offset = q.offset ?? 0;
    const [rows, total] = await this.dataSource.getRepository(SoupEntity).findAndCount({ order: { createdAt: 'DESC', id: 'ASC' }, take: limit, skip: offset });
    const ingredients = rows.length ? await this.dataSource.getRepository(SoupIngredientEntity).findBy({ soupId: In(rows.map((r) => r.id)) }) : [];
    return { items: rows.map((r) => mapSoup(r, ingredients.filter((i) => i.soupId === r.id))), total, limit, offset };
  }

  async get(id: string): Promise<SoupDto> {
    return mapSoup(await this.entity(id), await this.ingredients(id));
  }

  async entity(id: string): Promise<SoupEntity> {
    const s = await this.dataSource.getRepository(SoupEntity).findOneBy({ id });
    if (!s) throw notFound('soup', id);
    return s;
  }

  private ingredients(soupId: string): Promise<SoupIngredientEntity[]> {
    return this.dataSource.getRepository(SoupIngredientEntity).find({ where: { soupId }, order: { position: 'ASC' } });
  }
}
