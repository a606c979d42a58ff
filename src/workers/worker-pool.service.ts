import { join } from 'node:path';
import { Inject, Injectable, type OnApplicationShutdown } from '@nestjs/common';
import { ArtifactsService } from '../artifacts/artifacts.service.js';
import type { AppConfig } from '../config/config.js';
import { APP_CONFIG } from '../config/config.module.js';
import type { BackendInfo } from '../core/tf/backend.js';
import type { ResultOf, WorkerTask } from './tasks.js';
import { TaskTimeLimit } from './time-limit.js';
import { type RunTaskOptions, WorkerPool } from './worker-pool.js';

/** The process's worker threads (WORKERS of them, plus one for requests), started lazily on the first task. */
@Injectable()
export class WorkerPoolService implements OnApplicationShutdown {
  private pool: WorkerPool | null = null;
  private readonly timeLimit: TaskTimeLimit;

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    private readonly artifacts: ArtifactsService,
  ) {
    this.timeLimit = new TaskTimeLimit(config.taskTimeoutMs);
  }

  get(): WorkerPool {
    // WORKERS=0 takes no queue work; requests answered directly (prune, evaluate…) still need a thread.
    // One more thread for requests while queue work fills the WORKERS threads (started on demand, ended after a minute idle).
    this.pool ??= new WorkerPool(
      Math.max(1, this.config.workers),
      { backend: this.config.backend, evalSparse: this.config.evalSparse, wasmThreads: this.config.wasmThreads, wasmKernels: this.config.wasmKernels, artifacts: this.artifacts.threadConfig, cacheDir: join(this.config.dataDir, 'cache') },
      { requestThreads: this.config.workers > 0 ? 1 : 0 },
    );
    return this.pool;
  }

  /**
   * Runs a task on a worker thread under TASK_TIMEOUT_SECONDS (training excepted: see TaskTimeLimit);
   * its result type follows from `task.type` (see `TaskMap`).
   */
  run<T extends WorkerTask>(task: T, opts?: RunTaskOptions): Promise<ResultOf<T['type']>> {
    return this.timeLimit.run(this.get(), task, opts);
  }

  private backendProbe: Promise<BackendInfo> | null = null;

  /**
   * The TensorFlow.js backend the worker threads run (for /health): asked of a thread once (an `info`
   * task in the request lane, which starts one if none runs) and kept; a failed probe is asked again
   * next time. The main process itself never loads TensorFlow.js.
   */
  backend(): Promise<BackendInfo> {
    this.backendProbe ??= this.run({ type: 'info' }).then(
      (r) => r.backend,
      (err: unknown) => {
        this.backendProbe = null;
        throw err;
      },
    );
    return this.backendProbe;
  }

  /** For /health: the pool's load and whether a task outlived its bound (a stuck pool). Starts no thread. */
  health() {
    const pool = this.pool?.stats();
    const time = this.timeLimit.stats();
    return { ok: time.overdue === 0, threads: this.config.workers, busy: pool?.busy ?? 0, queued: pool?.queued ?? 0, ...time };
  }

  async onApplicationShutdown(): Promise<void> {
    await this.pool?.close();
    this.pool = null;
  }
}
