import { join } from 'node:path';
import { Inject, Injectable, type OnApplicationShutdown } from '@nestjs/common';
import type { AppConfig } from '../config/config.js';
import { APP_CONFIG } from '../config/config.module.js';
import { type RunTaskOptions, WorkerPool } from './worker-pool.js';
import type { ResultOf, WorkerTask } from './tasks.js';

/** The process's worker threads (WORKERS of them), started lazily on the first task. */
@Injectable()
export class WorkerPoolService implements OnApplicationShutdown {
  private pool: WorkerPool | null = null;

  constructor(@Inject(APP_CONFIG) private readonly config: AppConfig) {}

  get(): WorkerPool {
    this.pool ??= new WorkerPool(this.config.workers, {
      backend: this.config.backend,
      artifacts: { kind: 'fs', root: join(this.config.dataDir, 'artifacts') },
      cacheDir: join(this.config.dataDir, 'cache'),
    });
    return this.pool;
  }

  /** Runs a task on a worker thread; its result type follows from `task.type` (see `TaskMap`). */
  run<T extends WorkerTask>(task: T, opts?: RunTaskOptions): Promise<ResultOf<T['type']>> {
    return this.get().run(task, opts);
  }

  async onApplicationShutdown(): Promise<void> {
    await this.pool?.close();
    this.pool = null;
  }
}
