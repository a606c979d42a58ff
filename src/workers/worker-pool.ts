import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { MessageChannel } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { PROJECT_ROOT } from '../paths.js';
import { CoreInputError } from '../core/errors.js';
import type { ImageDataset } from '../core/data/dataset.js';
import { datasetKey } from './shared/datasets.js';
import { CORE_INPUT_ERROR, type DatasetRef, type ProgressMessage, type ResultOf, type WorkerInit, type WorkerTask } from './tasks.js';

/** The compiled worker entry: threads run plain JavaScript, so tests run the build like production. */
export function workerFilename(): string {
  const file = join(PROJECT_ROOT, 'dist', 'src', 'workers', 'task-worker.js');
  if (!existsSync(file)) throw new Error(`worker entry ${file} is missing: run \`npm run build\``);
  return file;
}

/** Datasets the pool keeps shared at once (least recently loaded dropped first). */
const MAX_SHARED_DATASETS = 4;

export interface RunTaskOptions {
  onProgress?: (message: ProgressMessage) => void;
  /** Aborting terminates the task's thread at once; the pool starts a fresh one. */
  signal?: AbortSignal;
}

/**
 * piscina threads, `threads` of them, each with one TensorFlow.js backend. A task that kills its
 * thread (out of memory, process.exit, a native crash) rejects with that error and the pool
 * replaces the thread.
 */
export class WorkerPool {
  private readonly piscina: Piscina;
  private busy = 0;
  private completedTasks = 0;
  private failedTasks = 0;
  /** One copy per process of each dataset tasks name (SharedArrayBuffers the threads share). */
  private readonly datasets = new Map<string, Promise<ImageDataset>>();
  private readonly shareDatasets: boolean;

  constructor(
    readonly threads: number,
    init: WorkerInit,
    options: { shareDatasets?: boolean } = {},
  ) {
    this.shareDatasets = options.shareDatasets ?? true;
    this.piscina = new Piscina({
      filename: workerFilename(),
      minThreads: 0,
      maxThreads: threads,
      idleTimeout: 60_000,
      workerData: init,
      // Training holds a model, optimizer state and batches: give threads room, but bounded.
      resourceLimits: { maxOldGenerationSizeMb: 4096 },
    });
  }

  /** Runs a task on a thread; its result type follows from `task.type` (see `TaskMap`). */
  async run<T extends WorkerTask>(task: T, opts: RunTaskOptions = {}): Promise<ResultOf<T['type']>> {
    const channel = opts.onProgress ? new MessageChannel() : null;
    if (channel && opts.onProgress) {
      const onProgress = opts.onProgress;
      channel.port1.on('message', (m: ProgressMessage) => onProgress(m));
    }
    this.busy++;
    try {
      const dataset = await this.sharedDataset(task);
      // Threads no task holds now: a lone training task may use one for data-parallel gradients.
      const idleThreads = Math.max(0, this.threads - this.busy);
      const result = (await this.piscina.run(
        { task, port: channel?.port2, dataset, idleThreads },
        { transferList: channel ? [channel.port2] : [], signal: opts.signal ?? null },
      )) as ResultOf<T['type']>;
      const clientError = (result as unknown as Record<string, unknown> | null)?.[CORE_INPUT_ERROR] as
        | { code: string; message: string; details: Record<string, unknown>; status: 400 | 413 | 422 }
        | undefined;
      if (clientError) throw new CoreInputError(clientError.code, clientError.message, clientError.details, clientError.status);
      this.completedTasks++;
      return result;
    } catch (err) {
      this.failedTasks++;
      throw err;
    } finally {
      this.busy--;
      channel?.port1.close();
    }
  }

  /**
   * The process's shared copy of the dataset a task names: loaded once by a worker (the
   * `share-dataset` task), kept here, and posted with every task that names it (posting a
   * SharedArrayBuffer shares it). The upload check (`inspect-dataset`) reads its own. A dataset that
   * fails to load is not cached: the task then loads it itself and reports the error as it would.
   */
  private sharedDataset(task: WorkerTask): Promise<ImageDataset | undefined> {
    const ref = (task as { dataset?: DatasetRef }).dataset;
    if (!this.shareDatasets || !ref || task.type === 'inspect-dataset' || task.type === 'share-dataset') return Promise.resolve(undefined);
    return this.sharedDatasetOf(ref);
  }

  /** The shared copy of a dataset (loading it now if needed); undefined when it cannot be loaded or sharing is off. */
  async sharedDatasetOf(ref: DatasetRef): Promise<ImageDataset | undefined> {
    if (!this.shareDatasets) return undefined;
    const key = datasetKey(ref);
    let p = this.datasets.get(key);
    if (!p) {
      if (this.datasets.size >= MAX_SHARED_DATASETS) this.datasets.delete(this.datasets.keys().next().value!);
      p = (this.piscina.run({ task: { type: 'share-dataset', dataset: ref } }) as Promise<ImageDataset | Record<string, unknown>>).then((r) => {
        if ((r as Record<string, unknown>)[CORE_INPUT_ERROR]) throw new Error('dataset failed to load');
        return r as ImageDataset;
      });
      this.datasets.set(key, p);
      p.catch(() => this.datasets.delete(key));
    }
    return p.catch(() => undefined);
  }

  stats() {
    return {
      threads: this.threads,
      busy: this.busy,
      queued: this.piscina.queueSize,
      completed: this.completedTasks,
      failed: this.failedTasks,
      utilization: this.piscina.utilization,
    };
  }

  async close(): Promise<void> {
    this.datasets.clear();
    await this.piscina.destroy();
  }
}
