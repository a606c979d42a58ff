import { Inject, Injectable, StreamableFile } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import type { Request, Response } from 'express';
import { type DataSource, type EntityManager, In, QueryFailedError } from 'typeorm';
import { ArtifactsService } from '../artifacts/artifacts.service.js';
import { conflict, notFound, ProblemException } from '../common/problem.js';
import { assertStorableCheckpointText } from '../common/validation.js';
import type { AppConfig } from '../config/config.js';
import { APP_CONFIG } from '../config/config.module.js';
import { provenanceJson } from '../core/checkpoint/provenance.js';
import { encodeSafetensorsHeader, openSafetensors, SAFETENSORS_ERROR, safetensorsLayout } from '../core/checkpoint/safetensors.js';
import { encodeSafetensorsIndex, type ModelShard, SAFETENSORS_INDEX, shardFile } from '../core/checkpoint/sharded.js';
import { modelJsonForDownload, openTfjsWeights, TFJS_MODEL_ERROR, type TfjsModelJson } from '../core/checkpoint/tfjs.js';
import { isPrunable } from '../core/pruning/prunable.js';
import type { CheckpointReader, TensorEntry, TensorStats } from '../core/tensors.js';
import { DatasetsService } from '../datasets/datasets.service.js';
import { MetricsService } from '../metrics/metrics.service.js';
import type { StoredArtifact } from '../storage/artifact-store.js';
import type { StoredLayersModel } from '../workers/tasks.js';
import { WorkerPoolService } from '../workers/worker-pool.service.js';
import { ModelEntity, type ModelOrigin, ModelParentEntity, type ModelTensor } from './model.entity.js';
import { type IngestedCheckpoint, ingestSafetensors, ingestTfjsMultipart } from './model-upload.js';
import { type CreateTemplateDto, type ModelDto, type ModelFileDto, type ModelPageDto, type ModelQueryDto, mapModel, modelFiles, provenanceOf, servedMetadata } from './models.dto.js';

/** A new model's facts, however it was made (upload, prune, soup, training). */
export interface NewModel {
  name: string;
  format: 'tfjs-layers' | 'tfjs-graph' | 'safetensors';
  weights: StoredArtifact;
  topology: StoredArtifact | null;
  entries: IngestedCheckpoint['entries'];
  stats: TensorStats[];
  metadata?: Record<string, string>;
  origin: ModelOrigin;
  parentIds?: string[];
  /** Hash of the weights' exact-zero pattern on the prunable tensors: computed where the bytes were written (ingest or worker), never by re-reading them here. */
  impliedMaskHash: string | null;
  maskId?: string | null;
  /** Sharded safetensors layout; left out, a safetensors model derived from a sharded one keeps its parent's. */
  shards?: ModelShard[] | null;
}

const REFERRERS: Record<string, string> = {
  model_parent: 'a model derived from it',
  mask: 'a mask',
  run: 'a run',
  run_candidate: 'a run candidate',
  soup: 'a soup',
  soup_ingredient: 'a soup',
  evaluation: 'an evaluation',
};

@Injectable()
export class ModelsService {
  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @InjectDataSource() private readonly dataSource: DataSource,
    private readonly artifacts: ArtifactsService,
    private readonly datasets: DatasetsService,
    private readonly pool: WorkerPoolService,
    private readonly metrics: MetricsService,
  ) {}

  /** POST /models/templates: a freshly initialised, explicitly named TensorFlow.js model sized for a dataset. */
  async fromTemplate(dto: CreateTemplateDto): Promise<ModelDto> {
    const dataset = await this.datasets.entity(dto.datasetId);
    const seed = dto.seed ?? 0;
    const built = await this.pool.run({ type: 'template', architecture: dto.architecture, inputShape: dataset.inputShape, classes: dataset.classes, seed });
    return this.createLayersModel(built, {
      name: dto.name ?? `${dto.architecture}-${dataset.id}-s${seed}`,
      origin: { kind: 'template', architecture: dto.architecture, datasetId: dataset.id, seed },
    });
  }

  /** Persists a layers model a worker stored (templates, training results); discards its files on failure. */
  async createLayersModel(
    built: StoredLayersModel,
    m: { name: string; origin: ModelOrigin; parentIds?: string[]; maskId?: string | null },
    manager?: EntityManager,
  ): Promise<ModelDto> {
    try {
      const w = built.model;
      return await this.create({ ...m, format: 'tfjs-layers', weights: w.weights, topology: built.topology, entries: w.entries, stats: w.stats, impliedMaskHash: w.impliedMaskHash }, manager);
    } catch (err) {
      if (!manager) {
        await this.artifacts.discard(built.model.weights);
        await this.artifacts.discard(built.topology);
      }
      throw err;
    }
  }

  /** POST /models: a safetensors body or the multipart body of tf.io.http. */
  async upload(name: string, req: Request): Promise<ModelDto> {
    const max = this.config.maxUploadBytes;
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > max) {
      throw new ProblemException(413, `the body is ${declared} bytes; the limit (MAX_UPLOAD_BYTES) is ${max}`);
    }
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    const committed: StoredArtifact[] = [];
    const held: StoredArtifact[] = [];
    try {
      let ingested: IngestedCheckpoint;
      if (type === 'multipart/form-data') {
        ingested = await ingestTfjsMultipart(req, this.artifacts.store, max, committed);
      } else if (type === 'application/octet-stream' || type === 'application/vnd.safetensors') {
        ingested = await ingestSafetensors(req, this.artifacts.store, max);
        committed.push(ingested.weights);
      } else {
        throw new ProblemException(415, `send a safetensors file as application/octet-stream, or a TensorFlow.js model as multipart/form-data (tf.io.http); got "${type || 'no content type'}"`);
      }
      for (const a of committed) {
        this.artifacts.hold(a);
        held.push(a);
      }
      assertStorableCheckpointText(ingested.entries, ingested.metadata, ingested.format === 'safetensors' ? SAFETENSORS_ERROR : TFJS_MODEL_ERROR);
      const model = await this.create({ name, ...ingested, origin: { kind: 'upload' } });
      this.metrics.addIngestedBytes(ingested.weights.sizeBytes + (ingested.topology?.sizeBytes ?? 0), 'model');
      return model;
    } catch (err) {
      for (const a of committed) await this.artifacts.discard(a);
      throw err;
    } finally {
      for (const a of held) await this.artifacts.release(a);
    }
  }

  /** A reader over a stored weights artifact, one tensor at a time. */
  async openWeights(format: 'safetensors' | 'tfjs-layers' | 'tfjs-graph', sha256: string, entries: readonly TensorEntry[]): Promise<CheckpointReader> {
    const source = await this.artifacts.store.randomAccess(sha256);
    return format === 'safetensors' ? openSafetensors(source) : openTfjsWeights(source, entries);
  }

  /** Opens a model's weights for reading. */
  async openModel(e: ModelEntity): Promise<CheckpointReader> {
    return this.openWeights(e.format, e.weightsSha256, e.tensors.map(({ name, dtype, shape, byteOffset, byteLength }) => ({ name, dtype, shape, byteOffset, byteLength })));
  }

  /** Persists a model whose artifacts are already committed: artifact rows, model row and lineage in one transaction. */
  async create(m: NewModel, manager?: EntityManager): Promise<ModelDto> {
    const impliedMaskHash = m.impliedMaskHash;
    const run = async (tx: EntityManager) => {
      const shards = m.shards !== undefined ? m.shards : await inheritedShards(tx, m);
      await this.artifacts.record(tx, m.weights, m.format === 'safetensors' ? 'application/vnd.safetensors' : 'application/octet-stream');
      if (m.topology) await this.artifacts.record(tx, m.topology, 'application/json');
      const tensors = toModelTensors(m);
      const all = tensors.reduce((a, t) => a + t.size, 0);
      const prunable = tensors.filter((t) => t.prunable);
      const prunableSize = prunable.reduce((a, t) => a + t.size, 0);
      const entity = tx.create(ModelEntity, {
        name: m.name,
        format: m.format,
        weightsSha256: m.weights.sha256,
        topologySha256: m.topology?.sha256 ?? null,
        sizeBytes: m.weights.sizeBytes + (m.topology?.sizeBytes ?? 0),
        paramCount: all,
        sparsity: all ? tensors.reduce((a, t) => a + t.zeros, 0) / all : 0,
        prunableSparsity: prunableSize ? prunable.reduce((a, t) => a + t.zeros, 0) / prunableSize : 0,
        nonFinite: m.stats.some((s) => s.nonFinite > 0),
        tensors,
        metadata: m.metadata ?? {},
        origin: m.origin,
        impliedMaskHash,
        maskId: m.maskId ?? null,
        shards,
      });
      const saved = await tx.save(entity);
      const parentIds = m.parentIds ?? [];
      if (parentIds.length) {
        await tx.insert(ModelParentEntity, parentIds.map((parentId, position) => ({ modelId: saved.id, parentId, position })));
      }
      return mapModel(saved, parentIds);
    };
    return manager ? run(manager) : this.dataSource.transaction(run);
  }

  async list(q: ModelQueryDto): Promise<ModelPageDto> {
    const limit = q.limit ?? 50;
    const offset = q.offset ?? 0;
    const qb = this.dataSource.getRepository(ModelEntity).createQueryBuilder('m').orderBy('m.created_at', 'DESC').addOrderBy('m.id');
    if (q.name !== undefined) qb.andWhere('m.name = :name', { name: q.name });
    if (q.parentId) qb.andWhere('m.id IN (SELECT model_id FROM model_parent WHERE parent_id = :pid)', { pid: q.parentId });
    const [rows, total] = await qb.take(limit).skip(offset).getManyAndCount();
    const parents = await this.parentsOf(rows.map((r) => r.id));
    return { items: rows.map((r) => mapModel(r, parents.get(r.id) ?? [])), total, limit, offset };
  }

  async get(id: string): Promise<ModelDto> {
    const e = await this.entity(id);
    return mapModel(e, (await this.parentsOf([id])).get(id) ?? []);
  }

  async entity(id: string, manager: EntityManager = this.dataSource.manager): Promise<ModelEntity> {
    const e = await manager.findOneBy(ModelEntity, { id });
    if (!e) throw notFound('model', id);
    return e;
  }

  private async parentsOf(ids: string[]): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    if (!ids.length) return out;
    const rows = await this.dataSource.getRepository(ModelParentEntity).find({ where: { modelId: In(ids) }, order: { position: 'ASC' } });
    for (const r of rows) out.set(r.modelId, [...(out.get(r.modelId) ?? []), r.parentId]);
    return out;
  }

  /** Refused with 409 while anything refers to the model; the foreign keys say what. */
  async delete(id: string): Promise<void> {
    await this.entity(id);
    try {
      await this.dataSource.transaction(async (tx) => {
        await tx.delete(ModelParentEntity, { modelId: id });
        await tx.delete(ModelEntity, { id });
      });
    } catch (err) {
      const e = err as QueryFailedError & { code?: string; driverError?: { code?: string; table?: string; detail?: string } };
      const code = e.driverError?.code ?? e.code;
      // 23503: foreign key violation; 23001: RESTRICT violation. The referencing table is named last.
      if (err instanceof QueryFailedError && (code === '23503' || code === '23001')) {
        const named = [...e.message.matchAll(/table "(\w+)"/g)].map((m) => m[1]);
        const table = named[named.length - 1] ?? e.driverError?.table ?? '';
        throw conflict(`model ${id} cannot be deleted while ${REFERRERS[table] ?? `a ${table} row`} refers to it`, { referencedBy: table });
      }
      throw err;
    }
  }

  async modelJson(id: string): Promise<Record<string, unknown>> {
    const e = await this.entity(id);
    if (e.format === 'safetensors' || !e.topologySha256) {
      throw new ProblemException(409, `model ${id} is a ${e.format} checkpoint and has no TensorFlow.js topology; download /models/${id}/safetensors`);
    }
    const chunks: Buffer[] = [];
    for await (const c of this.artifacts.store.read(e.topologySha256)) chunks.push(c as Buffer);
    const json = modelJsonForDownload(JSON.parse(Buffer.concat(chunks).toString('utf8')) as TfjsModelJson, 'model.weights.bin') as Record<string, unknown>;
    if (e.origin.kind === 'upload') return json;
    const own = (json.userDefinedMetadata ?? {}) as Record<string, unknown>;
    return { ...json, userDefinedMetadata: { ...own, sparsoup: provenanceJson(provenanceOf(e, await this.parentIdsOf(id))) } };
  }

  async weights(id: string, res: Response): Promise<StreamableFile> {
    const e = await this.entity(id);
    if (e.format === 'safetensors') throw new ProblemException(409, `model ${id} is a safetensors checkpoint; download /models/${id}/safetensors`);
    res.setHeader('content-type', 'application/octet-stream');
    res.setHeader('etag', `"${e.weightsSha256}"`);
    return new StreamableFile(this.artifacts.store.read(e.weightsSha256), { length: await this.artifacts.store.size(e.weightsSha256) });
  }

  async files(id: string): Promise<ModelFileDto[]> {
    return modelFiles(await this.entity(id), await this.parentIdsOf(id));
  }

  private async parentIdsOf(id: string): Promise<string[]> {
    return (await this.parentsOf([id])).get(id) ?? [];
  }

  /** One file of a model: a sharded model's index or a shard (rebuilt from the stored file), or model.safetensors. */
  async file(id: string, name: string, res: Response): Promise<StreamableFile> {
    const e = await this.entity(id);
    const parentIds = await this.parentIdsOf(id);
    if (!modelFiles(e, parentIds).some((f) => f.name === name)) {
      throw new ProblemException(404, `model ${id} has no file ${JSON.stringify(name)}; GET /models/${id}/files lists its files`);
    }
    if (!e.shards) return this.safetensors(id, res);
    res.setHeader('content-disposition', `attachment; filename="${name}"`);
    if (name === SAFETENSORS_INDEX) {
      res.setHeader('content-type', 'application/json');
      const bytes = encodeSafetensorsIndex(e.shards, e.tensors);
      return new StreamableFile(Buffer.from(bytes), { length: bytes.byteLength });
    }
    const shard = shardFile(e.shards.find((s) => s.name === name)!, e.tensors, servedMetadata(e, parentIds) ?? e.metadata);
    res.setHeader('content-type', 'application/octet-stream');
    const store = this.artifacts.store;
    async function* body() {
      yield shard.header;
      for (const r of shard.ranges) if (r.end > r.start) yield* store.read(e.weightsSha256, r);
    }
    const { Readable } = await import('node:stream');
    return new StreamableFile(Readable.from(body()), { length: shard.sizeBytes });
  }

  async safetensors(id: string, res: Response): Promise<StreamableFile> {
    const e = await this.entity(id);
    res.setHeader('content-type', 'application/octet-stream');
    res.setHeader('content-disposition', `attachment; filename="${e.name.replace(/[^\w.-]/g, '_')}.safetensors"`);
    const provenance = servedMetadata(e, await this.parentIdsOf(id));
    if (e.format === 'safetensors' && !provenance) {
      res.setHeader('etag', `"${e.weightsSha256}"`);
      return new StreamableFile(this.artifacts.store.read(e.weightsSha256), { length: await this.artifacts.store.size(e.weightsSha256) });
    }
    if (e.format === 'safetensors') {
      // A model the service made: the same tensors in the same order, under a header that says where it came from.
      const { header } = safetensorsLayout(e.tensors, provenance!);
      const store = this.artifacts.store;
      const tensors = e.tensors;
      async function* body() {
        yield header;
        for (const t of tensors) if (t.byteLength > 0) yield* store.read(e.weightsSha256, { start: t.byteOffset, end: t.byteOffset + t.byteLength });
      }
      const { Readable } = await import('node:stream');
      return new StreamableFile(Readable.from(body()), { length: header.byteLength + tensors.reduce((n, t) => n + t.byteLength, 0) });
    }
    // The TensorFlow.js weights are already laid out back to back in manifest order: the safetensors
    // file is a header naming the same tensors followed by those bytes, unchanged.
    const header = encodeSafetensorsHeader(e.tensors, { format: e.format, source: e.id, ...(provenance ?? {}) });
    const body = this.artifacts.store.read(e.weightsSha256);
    async function* concat() {
      yield header;
      yield* body;
    }
    const { Readable } = await import('node:stream');
    return new StreamableFile(Readable.from(concat()), { length: header.byteLength + (await this.artifacts.store.size(e.weightsSha256)) });
  }
}

/**
 * A safetensors model made from a sharded one (pruned, souped) keeps the first parent's layout when
 * it has exactly the parent's tensors: a user gets back the folder they sent.
 */
async function inheritedShards(tx: EntityManager, m: NewModel): Promise<ModelShard[] | null> {
  const parentId = m.parentIds?.[0];
  if (m.format !== 'safetensors' || !parentId) return null;
  const parent = await tx.findOneBy(ModelEntity, { id: parentId });
  if (!parent?.shards) return null;
  const names = new Set(m.entries.map((e) => e.name));
  const laidOut = parent.shards.flatMap((s) => s.tensors);
  return laidOut.length === names.size && laidOut.every((t) => names.has(t)) ? parent.shards : null;
}

function toModelTensors(m: NewModel): ModelTensor[] {
  const stats = new Map(m.stats.map((s) => [s.name, s]));
  return m.entries.map((entry) => {
    const s = stats.get(entry.name);
    if (!s) throw new Error(`no statistics for tensor ${entry.name}`);
    return {
      name: entry.name,
      dtype: entry.dtype,
      shape: entry.shape,
      prunable: isPrunable(entry),
      sparsity: s.size ? s.zeros / s.size : 0,
      zeros: s.zeros,
      size: s.size,
      byteOffset: entry.byteOffset,
      byteLength: entry.byteLength,
    };
  });
}
