import { join } from 'node:path';
import { Global, Inject, Injectable, Module, type OnApplicationShutdown } from '@nestjs/common';
import type { AppConfig } from '../config/config.js';
import { APP_CONFIG } from '../config/config.module.js';
import { WorkerPool } from './worker-pool.js';

/** The process's worker threads (WORKERS of them), started lazily on the first task. */
@Injectable()
export class WorkerPoolService implements OnApplicationShutdown {
  private pool: WorkerPool | null = null;

  constructor(@Inject(APP_CONFIG) private readonly config: AppConfig) {}

  get(): WorkerPool {
    this.pool ??= new WorkerPool(this.config.workers, {
      backend: this.config.backend,
      artifactsDir: join(this.config.dataDir, 'artifacts'),
      cacheDir: join(this.config.dataDir, 'cache'),
    });
    return this.pool;
  }

  run<R>(...args: Parameters<WorkerPool['run']>): Promise<R> {
    return this.get().run<R>(...args);
  }

  async onApplicationShutdown(): Promise<void> {
    await this.pool?.close();
    this.pool = null;
  }
}

@Global()
@Module({ providers: [WorkerPoolService], exports: [WorkerPoolService] })
export class WorkersModule {}
