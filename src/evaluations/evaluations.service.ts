import { Injectable } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import type { DataSource } from 'typeorm';
import type { PageQueryDto } from '../common/paging.dto.js';
import { DatasetsService } from '../datasets/datasets.service.js';
import { modelRef } from '../models/model-ref.js';
import { ModelsService } from '../models/models.service.js';
import { WorkerPoolService } from '../workers/worker-pool.service.js';
import { EvaluationEntity } from './evaluation.entity.js';
import { type CreateEvaluationDto, type EvaluationDto, type EvaluationPageDto, mapEvaluation } from './evaluations.dto.js';

/**
 * Evaluations answer directly (201): a forward pass over a split of a built-in-sized dataset takes
 * seconds in a worker thread, so a job would only add latency. Retraining and soups evaluate their
 * candidates inside their own jobs.
 */
@Injectable()
export class EvaluationsService {
  constructor(
    @InjectDataSource() private readonly dataSource: DataSource,
    private readonly models: ModelsService,
    private readonly datasets: DatasetsService,
    private readonly pool: WorkerPoolService,
  ) {}

  /** `lane`: `request` when an HTTP client waits for it (`POST /models/{id}/evaluations`), `background` for a run's phase. */
  async create(modelId: string, dto: CreateEvaluationDto, lane: 'request' | 'background' = 'request'): Promise<EvaluationDto> {
    const model = await this.models.entity(modelId);
    const dataset = await this.datasets.ref(dto.datasetId);
    const seed = dto.seed ?? 0;
    const m = await this.pool.run({
      type: 'evaluate',
      model: modelRef(model),
      dataset,
      split: dto.split,
      corruptions: dto.corruptions,
      seed,
    }, { lane });
    const repo = this.dataSource.getRepository(EvaluationEntity);
    const saved = await repo.save(repo.create({ modelId, datasetId: dto.datasetId, split: dto.split, seed, ...m }));
    return mapEvaluation(saved);
  }

  /** A stored evaluation of `modelId` with exactly these settings (evaluation is deterministic), if any. */
  async findSame(modelId: string, dto: CreateEvaluationDto): Promise<EvaluationDto | null> {
    const rows = await this.dataSource.getRepository(EvaluationEntity).find({ where: { modelId, datasetId: dto.datasetId, split: dto.split, seed: dto.seed ?? 0 }, order: { createdAt: 'ASC' } });
    const want = JSON.stringify((dto.corruptions ?? []).map((c) => [c.name, c.severity]));
    const same = rows.find((r) => JSON.stringify(r.corruptions.map((c) => [c.name, c.severity])) === want);
    return same ? mapEvaluation(same) : null;
  }

  async list(modelId: string, page: PageQueryDto): Promise<EvaluationPageDto> {
    await this.models.entity(modelId);
    const limit = page.limit ?? 50;
    const offset = page.offset ?? 0;
    const [rows, total] = await this.dataSource.getRepository(EvaluationEntity).findAndCount({ where: { modelId }, order: { createdAt: 'DESC', id: 'ASC' }, take: limit, skip: offset });
    return { items: rows.map(mapEvaluation), total, limit, offset };
  }
}
