import { PassThrough } from 'node:stream';
import { Injectable, StreamableFile } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import type { Response } from 'express';
import type { DataSource, EntityManager } from 'typeorm';
import { ArtifactsService } from '../artifacts/artifacts.service.js';
import { notFound } from '../common/problem.js';
import { SafetensorsWriter, safetensorsLayout } from '../core/checkpoint/safetensors.js';
import { diffMasks, impliedMask, type Mask, parseMask, sparseExportSize, type TensorMask, writeSparse } from '../core/masks/index.js';
import type { ModelEntity } from '../models/model.entity.js';
import { modelRef } from '../models/model-ref.js';
import type { ModelDto } from '../models/models.dto.js';
import { ModelsService } from '../models/models.service.js';
import type { MaskedModelResult } from '../workers/tasks.js';
import { WorkerPoolService } from '../workers/worker-pool.service.js';
import { MaskEntity } from './mask.entity.js';
import { type MaskDiffDto, type MaskDto, type MaskPageDto, type MaskQueryDto, mapMask, type PruneModelDto, type PruneResultDto } from './masks.dto.js';

/**
 * Records what a prune produced in the caller's own rows, in the transaction that lands the model
 * and mask: both commit or neither (a run phase uses it, so a crash cannot leave an orphan prune).
 * Throwing rolls the landing back.
 */
export type RecordWith = (tx: EntityManager, landed: PruneResultDto) => Promise<void>;

@Injectable()
export class MasksService {
  constructor(
    @InjectDataSource() private readonly dataSource: DataSource,
    private readonly artifacts: ArtifactsService,
    private readonly models: ModelsService,
    private readonly pool: WorkerPoolService,
  ) {}

  /** POST /models/{id}/prune: selection and writing run in a worker thread; rows land in one transaction. */
  /** `lane`: a run's phase prunes in the background lane; a `POST …/prune` is a request. */
  async prune(modelId: string, dto: PruneModelDto, opts: { record?: RecordWith; lane?: 'request' | 'background' } = {}): Promise<PruneResultDto> {
    const source = await this.models.entity(modelId);
    const { name, ...options } = dto;
    const result = await this.pool.run({ type: 'prune', model: modelRef(source), options }, { lane: opts.lane ?? 'request' });
    const label = dto.method === 'n-of-m' ? `${dto.n}of${dto.m}` : `${dto.sparsity}`;
    return this.persist(source, result, {
      name: name ?? `${source.name}-${dto.method}-${label}`,
      method: dto.method,
      params: { ...options },
      origin: { kind: 'prune', sourceModelId: source.id, ...options },
      record: opts.record,
    });
  }

  /** POST /masks/{id}/apply: the model with this mask applied; its parent is that model. */
  async apply(maskId: string, modelId: string, name?: string): Promise<ModelDto> {
    const mask = await this.entity(maskId);
    const target = await this.models.entity(modelId);
    const result = await this.pool.run({ type: 'apply-mask', model: modelRef(target), maskSha256: mask.artifactSha256 });
    const { model } = await this.persist(target, result, {
      name: name ?? `${target.name}-masked`,
      existingMask: mask,
      origin: { kind: 'mask-apply', sourceModelId: target.id, maskId: mask.id },
    });
    return model;
  }

  private async persist(
    source: ModelEntity,
    result: MaskedModelResult,
    opts: { name: string; method?: string; params?: Record<string, unknown>; existingMask?: MaskEntity; origin: { kind: 'prune' | 'mask-apply'; [k: string]: unknown }; record?: RecordWith },
  ): Promise<PruneResultDto> {
    const topology = source.topologySha256
      ? { sha256: source.topologySha256, sizeBytes: await this.artifacts.store.size(source.topologySha256), created: false }
      : null;
    try {
      return await this.dataSource.transaction(async (tx) => {
        let mask = opts.existingMask;
        if (!mask) {
          await this.artifacts.record(tx, result.mask.stored, 'application/vnd.sparsoup.mask');
          const s = result.mask.summary;
          mask = await tx.save(
            tx.create(MaskEntity, {
              hash: result.mask.hash,
              method: opts.method ?? 'implied',
              params: opts.params ?? {},
              sparsity: s.sparsity,
              prunableCount: s.size,
              keptCount: s.kept,
              tensors: s.tensors,
              sourceModelId: source.id,
              artifactSha256: result.mask.stored.sha256,
            }),
          );
        }
        const model = await this.models.create(
          {
            name: opts.name,
            format: source.format,
            weights: result.model.weights,
            topology,
            entries: result.model.entries,
            stats: result.model.stats,
            metadata: source.metadata,
            origin: opts.origin,
            parentIds: [source.id],
            impliedMaskHash: result.impliedMaskHash,
            maskId: mask.id,
          },
          tx,
        );
        const landed = { model, mask: mapMask(mask) };
        await opts.record?.(tx, landed);
        return landed;
      });
    } catch (err) {
      if (!opts.existingMask) await this.artifacts.discard(result.mask.stored);
      await this.artifacts.discard(result.model.weights);
      throw err;
    }
  }

  async list(q: MaskQueryDto): Promise<MaskPageDto> {
    const limit = q.limit ?? 50;
    const offset = q.offset ?? 0;
    const where = { ...(q.hash ? { hash: q.hash } : {}), ...(q.sourceModelId ? { sourceModelId: q.sourceModelId } : {}) };
    const [rows, total] = await this.dataSource.getRepository(MaskEntity).findAndCount({ where, order: { createdAt: 'DESC', id: 'ASC' }, take: limit, skip: offset });
    return { items: rows.map(mapMask), total, limit, offset };
  }

  async get(id: string): Promise<MaskDto> {
    return mapMask(await this.entity(id));
  }

  async entity(id: string): Promise<MaskEntity> {
    const e = await this.dataSource.getRepository(MaskEntity).findOneBy({ id });
    if (!e) throw notFound('mask', id);
    return e;
  }

  async load(e: MaskEntity): Promise<Mask> {
    const chunks: Buffer[] = [];
    for await (const c of this.artifacts.store.read(e.artifactSha256)) chunks.push(c as Buffer);
    return parseMask(new Uint8Array(Buffer.concat(chunks)));
  }

  async diff(id: string, otherId: string): Promise<MaskDiffDto> {
    const [a, b] = await Promise.all([this.entity(id), this.entity(otherId)]);
    const d = diffMasks(await this.load(a), await this.load(b));
    return {
      equal: d.equal,
      tensors: d.tensors,
      missing: d.missing,
      extra: d.extra,
      shapeDifferences: d.shapeDifferences,
      hamming: d.hamming,
    };
  }

  /**
   * GET /masks/{id}/safetensors: the mask as a safetensors file any framework reads, one U8 tensor
   * per masked tensor (same name and shape, 1 = kept, 0 = pruned); tensors it does not name are
   * unmasked. Unpacked one tensor at a time.
   */
  async safetensors(id: string, res: Response): Promise<StreamableFile> {
    const e = await this.entity(id);
    const mask = await this.load(e);
    const specs = mask.tensors.map((t) => ({ name: t.name, dtype: 'U8' as const, shape: [...t.shape] }));
    const metadata = { format: 'sparsoup-mask', maskId: e.id, hash: e.hash };
    const { entries } = safetensorsLayout(specs, metadata);
    const last = entries[entries.length - 1];
    const length = last ? last.byteOffset + last.byteLength : safetensorsLayout(specs, metadata).header.byteLength;
    res.setHeader('content-type', 'application/octet-stream');
    res.setHeader('content-disposition', `attachment; filename="mask-${e.id}.safetensors"`);
    res.setHeader('etag', `"${e.hash}"`);
    const out = new PassThrough();
    const sink = (chunk: Uint8Array) =>
      new Promise<void>((resolve) => {
        if (out.write(Buffer.from(chunk))) resolve();
        else out.once('drain', resolve);
      });
    (async () => {
      const w = new SafetensorsWriter(specs, metadata, sink);
      for (const t of mask.tensors) await w.writeTensor(t.name, unpackBits(t));
      await w.finish();
    })().then(() => out.end(), (err) => out.destroy(err));
    return new StreamableFile(out, { length });
  }

  /**
   * GET /models/{id}/sparse: mask bits plus the kept values, streamed. The mask is the one the model
   * was pruned with, or the one its zeros imply.
   */
  async sparse(modelId: string, res: Response): Promise<StreamableFile> {
    const e = await this.models.entity(modelId);
    const reader = await this.models.openModel(e);
    const mask = e.maskId ? await this.load(await this.entity(e.maskId)) : await impliedMask(reader);
    const size = sparseExportSize(reader.tensors, mask);
    res.setHeader('content-type', 'application/vnd.sparsoup.sparse');
    res.setHeader('content-disposition', `attachment; filename="${e.name.replace(/[^\w.-]/g, '_')}.spsw"`);
    res.setHeader('x-sparse-bytes', String(size.sparseBytes));
    res.setHeader('x-dense-bytes', String(size.denseBytes));
    res.setHeader('x-sparse-ratio', size.ratio.toFixed(4));
    const out = new PassThrough();
    const sink = (chunk: Uint8Array) =>
      new Promise<void>((resolve) => {
        if (out.write(chunk)) resolve();
        else out.once('drain', resolve);
      });
    writeSparse(reader, sink, { mask })
      .then(() => out.end(), (err) => out.destroy(err))
      .finally(() => reader.close());
    return new StreamableFile(out, { length: size.sparseBytes });
  }
}

/** One byte per weight: 1 kept, 0 pruned. */
export function unpackBits(t: TensorMask): Uint8Array {
  const out = new Uint8Array(t.size);
  for (let i = 0; i < t.size; i++) out[i] = (t.bits[i >> 3] >> (i & 7)) & 1;
  return out;
}
