import { Inject, Injectable } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import type { DataSource } from 'typeorm';
import { ArtifactsService } from '../artifacts/artifacts.service.js';
import type { AppConfig } from '../config/config.js';
import { APP_CONFIG } from '../config/config.module.js';
import { VERSION } from '../version.js';
import { WorkerPoolService } from '../workers/worker-pool.service.js';
import type { HealthDto } from './health.dto.js';

@Injectable()
export class HealthService {
  private readonly started = Date.now();

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @InjectDataSource() private readonly dataSource: DataSource,
    private readonly artifacts: ArtifactsService,
    private readonly pool: WorkerPoolService,
  ) {}

  async check(): Promise<HealthDto> {
    const [database, artifacts, backend] = await Promise.all([this.database(), this.artifactsWritable(), this.backend()]);
    const workers = this.pool.health();
    return {
      status: database.ok && artifacts.ok && workers.ok ? 'ok' : 'unavailable',
      version: VERSION,
      uptimeSeconds: Math.round((Date.now() - this.started) / 1000),
      database,
      artifacts,
      backend,
      workers: workers.ok ? workers : { ...workers, detail: `${workers.overdue} task(s) ran past TASK_TIMEOUT_SECONDS and were not ended` },
    };
  }

  private async database() {
    const driver = this.config.databaseUrl ? ('postgres' as const) : ('pglite' as const);
    try {
      await withTimeout(this.dataSource.query('SELECT 1'), 3000);
      return { ok: true, driver };
    } catch (err) {
      return { ok: false, driver, detail: err instanceof Error ? err.message : String(err) };
    }
  }

  private async artifactsWritable() {
    const location = this.artifacts.store.location;
    const where = { kind: this.artifacts.kind, location, path: location };
    try {
      await withTimeout(this.artifacts.store.checkWritable(), 5000);
      return { ok: true, writable: true, ...where };
    } catch (err) {
      return { ok: false, writable: false, ...where, detail: err instanceof Error ? err.message : String(err) };
    }
  }

  private async backend() {
    try {
      const info = await withTimeout(this.pool.backend(), 30_000);
      return { ok: true, name: info.name, tfjsVersion: info.tfjsVersion, skipped: info.skipped, matMul: info.matMul ?? null };
    } catch (err) {
      return { ok: false, name: null, tfjsVersion: null, skipped: [], matMul: null, detail: err instanceof Error ? err.message : String(err) };
    }
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms).unref())]);
}
