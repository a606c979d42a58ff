import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { Inject, Injectable, type OnModuleInit } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import busboy from 'busboy';
import { plainToInstance } from 'class-transformer';
import { validateSync } from 'class-validator';
import type { Request } from 'express';
import type { DataSource } from 'typeorm';
import { ArtifactsService } from '../artifacts/artifacts.service.js';
import type { PageQueryDto } from '../common/paging.dto.js';
import { notFound, ProblemException } from '../common/problem.js';
import { flattenValidationErrors } from '../common/validation.js';
import type { AppConfig } from '../config/config.js';
import { APP_CONFIG } from '../config/config.module.js';
import { BUILTIN_INFO, BUILTIN_NAMES, BUILTIN_VAL_FRACTION } from '../core/data/builtin.js';
import { holdoutCount } from '../core/data/splits.js';
import { CoreInputError } from '../core/errors.js';
import { MetricsService } from '../metrics/metrics.service.js';
import type { StoredArtifact } from '../storage/artifact-store.js';
import type { DatasetRef, } from '../workers/tasks.js';
import { WorkerPoolService } from '../workers/worker-pool.service.js';
import { DatasetEntity, DatasetFileEntity } from './dataset.entity.js';
import { CreateExternalDatasetDto, type DatasetDto, type DatasetPageDto, mapDataset } from './datasets.dto.js';

const IDX_PARTS = ['images', 'labels', 'testImages', 'testLabels'];

@Injectable()
export class DatasetsService implements OnModuleInit {
  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @InjectDataSource() private readonly dataSource: DataSource,
    private readonly artifacts: ArtifactsService,
    private readonly pool: WorkerPoolService,
    private readonly metrics: MetricsService,
  ) {}

  /** The built-ins are rows like any dataset (runs refer to them by foreign key); their data loads lazily. */
  async onModuleInit(): Promise<void> {
    for (const name of BUILTIN_NAMES) {
      const info = BUILTIN_INFO[name];
      const val = holdoutCount(info.train, BUILTIN_VAL_FRACTION);
      await this.dataSource
        .createQueryBuilder()
        .insert()
        .into(DatasetEntity)
        .values({
          id: name,
          name,
          source: 'builtin',
          format: null,
          description: info.description,
          inputShape: info.inputShape,
          classes: info.classes,
          trainCount: info.train - val,
          valCount: val,
          testCount: info.test,
          pixels: 'uint8',
        })
        .orIgnore()
        .execute();
    }
  }

  /**
   * POST /datasets: an IDX pair as multipart (images, labels, optional testImages, testLabels), or one
   * .npz or safetensors file as the body. Stored, then parsed and validated in a worker thread.
   */
  async upload(name: string | undefined, classes: number | undefined, req: Request): Promise<DatasetDto> {
    const max = this.config.maxUploadBytes;
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > max) throw new ProblemException(413, `the body is ${declared} bytes; the limit (MAX_UPLOAD_BYTES) is ${max}`);
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (type === 'application/json') return this.createExternal(req.body);
    if (!name) throw new ProblemException(400, 'name: required (the query parameter ?name= names an uploaded dataset)', { slug: 'validation', extensions: { errors: [{ field: 'name', errors: ['required'] }] } });
    const stored: StoredArtifact[] = [];
    try {
      let files: Record<string, string>;
      let format: 'idx' | 'npz' | 'safetensors';
      if (type === 'multipart/form-data') {
        files = await this.receiveIdx(req, max, stored);
        format = 'idx';
      } else if (['application/octet-stream', 'application/zip', 'application/x-npz', 'application/vnd.safetensors'].includes(type)) {
        const a = await this.artifacts.store.put(req, { maxBytes: max });
        stored.push(a);
        this.artifacts.hold(a);
        files = { data: a.sha256 };
        format = (await this.startsWithZipMagic(a.sha256)) ? 'npz' : 'safetensors';
      } else {
        throw new ProblemException(415, `send an IDX images + labels pair as multipart/form-data, or one .npz or safetensors file as application/octet-stream; got "${type || 'no content type'}"`);
      }
      const id = randomUUID();
      const ref: DatasetRef = { id, source: 'upload', format, files, classes };
      const summary = await this.pool.run({ type: 'inspect-dataset', dataset: ref });
      const entity = await this.dataSource.transaction(async (tx) => {
        for (const a of stored) await this.artifacts.record(tx, a, 'application/octet-stream');
        const saved = await tx.save(
          tx.create(DatasetEntity, {
            id,
            name,
            source: 'upload',
            format,
            description: null,
            inputShape: summary.inputShape,
            classes: summary.classes,
            trainCount: summary.splits.train,
            valCount: summary.splits.val,
            testCount: summary.splits.test,
            pixels: summary.pixels,
          }),
        );
        await tx.insert(DatasetFileEntity, Object.entries(files).map(([role, sha]) => ({ datasetId: id, role, artifactSha256: sha })));
        return saved;
      });
      this.metrics.addIngestedBytes(stored.reduce((n, a) => n + a.sizeBytes, 0), 'dataset');
      return mapDataset(entity);
    } catch (err) {
      for (const a of stored) await this.artifacts.discard(a);
      throw err;
    } finally {
      for (const a of stored) await this.artifacts.release(a);
    }
  }

  /** POST /datasets with `{ name, source: "external", classes }`: a name and a class count, no data. */
  async createExternal(body: unknown): Promise<DatasetDto> {
    if (!body || typeof body !== 'object' || Array.isArray(body)) throw new ProblemException(400, 'send { name, source: "external", classes } as a JSON object', { slug: 'validation' });
    const dto = plainToInstance(CreateExternalDatasetDto, body);
    const errors = flattenValidationErrors(validateSync(dto, { whitelist: true, forbidNonWhitelisted: true }));
    if (errors.length) {
      throw new ProblemException(400, errors.map((f) => `${f.field}: ${f.errors.join(', ')}`).join('; '), { slug: 'validation', title: 'Validation Failed', extensions: { errors } });
    }
    const saved = await this.dataSource.getRepository(DatasetEntity).save({
      id: randomUUID(),
      name: dto.name,
      source: 'external',
      format: null,
      description: 'held by an external trainer: the service never sees its data',
      inputShape: [] as unknown as [number, number, number],
      classes: dto.classes,
      trainCount: 0,
      valCount: 0,
      testCount: 0,
      pixels: 'float32',
    });
    return mapDataset(saved);
  }

  private async startsWithZipMagic(sha: string): Promise<boolean> {
    const b = await this.artifacts.store.readBytes(sha, { start: 0, end: 4 });
    return Buffer.from(b).equals(Buffer.from([0x50, 0x4b, 0x03, 0x04]));
  }

  /**
   * Reads the IDX parts into the store. Every way the body can go wrong ends in one rejection, after
   * every part already started has been stored or aborted (so the caller's cleanup sees them all and
   * no temporary file or descriptor stays open): a malformed or unterminated multipart body (400), a
   * body over `max` bytes in all, whatever its framing (413), a client that goes away (400).
   */
  private receiveIdx(req: Request, max: number, stored: StoredArtifact[]): Promise<Record<string, string>> {
    return new Promise((resolve, reject) => {
      let bb: busboy.Busboy;
      try {
        bb = busboy({ headers: req.headers, limits: { files: 4, fields: 0 } });
      } catch (err) {
        reject(new CoreInputError('invalid-multipart', `not a multipart body: ${(err as Error).message}`));
        return;
      }
      const files: Record<string, string> = {};
      const work: Promise<void>[] = [];
      const parts: Readable[] = [];
      let failed = false;
      let received = 0;
      const fail = (err: unknown) => {
        if (failed) return;
        failed = true;
        req.unpipe(bb);
        req.off('data', count);
        // Stop each part still streaming: its store.put then aborts and removes its temporary file.
        for (const p of parts) if (!p.readableEnded) p.destroy(err instanceof Error ? err : new Error(String(err)));
        req.resume(); // drain what the client still sends, so the answer can reach it
        void Promise.allSettled(work).then(() => reject(err));
      };
      const count = (chunk: Buffer) => {
        received += chunk.length;
        if (received > max) fail(new ProblemException(413, `the body is over the limit (MAX_UPLOAD_BYTES) of ${max} bytes`));
      };
      req.on('data', count);
      req.on('error', () => fail(new CoreInputError('invalid-multipart', 'the connection failed while the body was arriving')));
      req.on('close', () => {
        if (!req.complete) fail(new CoreInputError('invalid-multipart', 'the client closed the connection before the body was complete'));
      });
      bb.on('file', (field: string, stream: Readable) => {
        // The part's errors reach store.put through its iterator, which may not have started yet:
        // without a listener an error in between (an unterminated body) would crash the process.
        stream.on('error', () => {});
        if (failed) {
          stream.resume();
          return;
        }
        if (!IDX_PARTS.includes(field) || files[field]) {
          stream.resume();
          return fail(new CoreInputError('invalid-multipart', `unexpected part "${field}": send images, labels and optionally testImages, testLabels`));
        }
        files[field] = 'pending';
        parts.push(stream);
        work.push(
          this.artifacts.store.put(stream, { maxBytes: max }).then(
            (a) => {
              stored.push(a);
              this.artifacts.hold(a);
              files[field] = a.sha256;
            },
            (err) => {
              stream.resume();
              fail(err);
            },
          ),
        );
      });
      bb.on('field', (n: string) => fail(new CoreInputError('invalid-multipart', `unexpected field "${n}": send the IDX files as file parts`)));
      bb.on('filesLimit', () => fail(new CoreInputError('invalid-multipart', 'too many parts: images, labels, testImages, testLabels at most')));
      bb.on('error', (err: Error) => fail(new CoreInputError('invalid-multipart', `malformed multipart body: ${err.message}`)));
      bb.on('close', async () => {
        await Promise.allSettled(work);
        if (failed) return;
        req.off('data', count);
        for (const need of ['images', 'labels']) if (!files[need]) return fail(new CoreInputError('invalid-dataset', `the ${need} part is missing`));
        if (!!files.testImages !== !!files.testLabels) return fail(new CoreInputError('invalid-dataset', 'testImages and testLabels come as a pair'));
        resolve(files);
      });
      req.pipe(bb);
    });
  }

  async list(page: PageQueryDto): Promise<DatasetPageDto> {
    const limit = page.limit ?? 50;
    const offset = page.offset ?? 0;
    const [rows, total] = await this.dataSource.getRepository(DatasetEntity).findAndCount({ order: { source: 'ASC', createdAt: 'ASC', id: 'ASC' }, take: limit, skip: offset });
    return { items: rows.map(mapDataset), total, limit, offset };
  }

  async get(id: string): Promise<DatasetDto> {
    return mapDataset(await this.entity(id));
  }

  async entity(id: string): Promise<DatasetEntity> {
    const e = await this.dataSource.getRepository(DatasetEntity).findOneBy({ id });
    if (!e) throw notFound('dataset', id);
    return e;
  }

  /** What a worker needs to load the dataset. */
  async ref(id: string): Promise<DatasetRef> {
    const e = await this.entity(id);
    if (e.source === 'external') {
      throw new ProblemException(422, `dataset ${id} is external (its data is with an external trainer): use it with trainer "external"`, { slug: 'external-dataset' });
    }
    if (e.source === 'builtin') return { id, source: 'builtin' };
    const files = await this.dataSource.getRepository(DatasetFileEntity).findBy({ datasetId: id });
    return { id, source: 'upload', format: e.format ?? undefined, files: Object.fromEntries(files.map((f) => [f.role, f.artifactSha256])), classes: e.classes };
  }
}
