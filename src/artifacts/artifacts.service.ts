import { Inject, Injectable, Logger, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import type { DataSource, EntityManager } from 'typeorm';
import type { PageQueryDto } from '../common/paging.dto.js';
import type { AppConfig } from '../config/config.js';
import { APP_CONFIG } from '../config/config.module.js';
import type { DatabaseHandle } from '../database/data-source.js';
import { DATABASE_HANDLE } from '../database/database.module.js';
import type { ArtifactStore, ArtifactWriter, StoredArtifact } from '../storage/artifact-store.js';
import { type ArtifactStoreConfig, createArtifactStore, threadConfigOf } from '../storage/create.js';
import { ArtifactEntity } from './artifact.entity.js';
import { type ArtifactPageDto, mapArtifact } from './artifacts.dto.js';

@Injectable()
export class ArtifactsService implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger(ArtifactsService.name);
  readonly store: ArtifactStore;
  /** The folder or the bucket: what /health reports. */
  readonly kind: ArtifactStoreConfig['kind'];
  /** What worker threads get: the same store (and, for a bucket, this process's cache). */
  readonly threadConfig: ArtifactStoreConfig;

  constructor(
    @Inject(APP_CONFIG) config: AppConfig,
    @InjectDataSource() private readonly dataSource: DataSource,
    @Inject(DATABASE_HANDLE) private readonly database: DatabaseHandle,
  ) {
    this.store = createArtifactStore(config.artifacts);
    this.kind = config.artifacts.kind;
    this.threadConfig = threadConfigOf(this.store, config.artifacts);
  }

  async onModuleInit(): Promise<void> {
    await this.store.init();
    // The embedded database allows one process: no other writer can be mid-upload, so temporary
    // files are leftovers of a crash. (With Postgres, garbage collection removes them after a grace.)
    if (this.database.embedded) await this.store.collectGarbage(() => true, 0);
  }

  async onApplicationShutdown(): Promise<void> {
    await this.store.close();
  }

  async list(page: PageQueryDto): Promise<ArtifactPageDto> {
    const limit = page.limit ?? 50;
    const offset = page.offset ?? 0;
    const [rows, total] = await this.dataSource
      .getRepository(ArtifactEntity)
      .findAndCount({ order: { createdAt: 'DESC', sha256: 'ASC' }, take: limit, skip: offset });
    return { items: rows.map(mapArtifact), total, limit, offset };
  }

  /**
   * Records a committed artifact in the database (inside the caller's transaction, so the row that
   * references it and the artifact row land together).
   */
  async record(manager: EntityManager, stored: StoredArtifact, mediaType: string): Promise<void> {
    await manager
      .createQueryBuilder()
      .insert()
      .into(ArtifactEntity)
      .values({ sha256: stored.sha256, sizeBytes: stored.sizeBytes, mediaType })
      .orIgnore()
      .execute();
  }

  /**
   * Objects that requests in flight in this process use (an upload between storing its bytes and
   * committing its row), and whether one of them owes a delete. Identical uploads share one object:
   * the one that created it may fail while another still reads it or is about to commit a row for it.
   */
  private readonly inFlight = new Map<string, { holders: number; owed: boolean }>();

  /** `stored` is in use by the caller until release(): a discard meanwhile leaves the delete to the last user. */
  hold(stored: StoredArtifact): void {
    const h = this.inFlight.get(stored.sha256) ?? { holders: 0, owed: false };
    h.holders++;
    this.inFlight.set(stored.sha256, h);
  }

  /** Ends a hold(); the last user deletes the object if a discard was owed and no row took it meanwhile. */
  async release(stored: StoredArtifact): Promise<void> {
    const h = this.inFlight.get(stored.sha256);
    if (!h) return;
    if (--h.holders > 0) return;
    this.inFlight.delete(stored.sha256);
    if (h.owed) await this.deleteUnlessRecorded(stored.sha256);
  }

  /** Removes a file this request created when the request fails before its row is committed. */
  async discard(stored: StoredArtifact | ArtifactWriter | null | undefined): Promise<void> {
    if (!stored) return;
    if ('commit' in stored) return stored.abort();
    const held = this.inFlight.get(stored.sha256);
    if (held) {
      if (stored.created) held.owed = true;
      return;
    }
    if (stored.created) await this.deleteUnlessRecorded(stored.sha256);
  }

  private async deleteUnlessRecorded(sha256: string): Promise<void> {
    const row = await this.dataSource.getRepository(ArtifactEntity).findOneBy({ sha256 });
    if (row) return;
    // A commit resolving to this object right now is pinned until its caller could hold it (one turn).
    while (this.store.inUse?.(sha256)) await new Promise((res) => setImmediate(res));
    const held = this.inFlight.get(sha256);
    if (held) held.owed = true;
    else await this.store.delete(sha256);
  }

  /**
   * Deletes artifact rows that no foreign key references and files that have no row. The referencing
   * columns are read from the entity metadata, so a new table that stores artifacts is covered.
   */
  async collectGarbage(graceMs = 10 * 60_000): Promise<{ rowsDeleted: number; filesDeleted: number }> {
    const refs = this.dataSource.entityMetadatas.flatMap((m) =>
      m.foreignKeys
        .filter((fk) => fk.referencedEntityMetadata.target === ArtifactEntity)
        .map((fk) => ({ table: m.tablePath, column: fk.columnNames[0] })),
    );
    const notReferenced = refs
      .map((r) => `NOT EXISTS (SELECT 1 FROM "${r.table}" t WHERE t."${r.column}" = a.sha256)`)
      .join(' AND ');
    const rows: { sha256: string }[] = await this.dataSource.query(
      `WITH d AS (DELETE FROM artifact a WHERE a.created_at < now() - ($1 || ' milliseconds')::interval
       ${notReferenced ? `AND ${notReferenced}` : ''} RETURNING sha256) SELECT sha256 FROM d`,
      [String(graceMs)],
    );
    const known = new Set(
      ((await this.dataSource.query('SELECT sha256 FROM artifact')) as { sha256: string }[]).map((r) => r.sha256),
    );
    const result = await this.store.collectGarbage((sha) => known.has(sha), graceMs);
    this.logger.log({ rowsDeleted: rows.length, filesDeleted: result.deleted.length }, 'artifact garbage collected');
    return { rowsDeleted: rows.length, filesDeleted: result.deleted.length + result.tempFilesDeleted };
  }
}
