import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { MessageChannel } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { ImageDataset } from '../core/data/dataset.js';
import { CoreInputError } from '../core/errors.js';
import { PROJECT_ROOT } from '../paths.js';
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
  /**
   * `request`: the task answers an HTTP request that waits for it, and takes the pool's request
   * thread when the queue's work fills the others. `background` (queue work: training, a phase's soup
   * or evaluation) waits its turn for one of the `threads`. Default: by task type (see REQUEST_TASKS).
   */
  lane?: 'request' | 'background';
  /** Called when the task is handed to a thread's queue (after waiting for its lane), not before. */
  onStart?: () => void;
}

/** Short tasks that answer requests (bounded by TASK_TIMEOUT_SECONDS): never queued behind training. */
const REQUEST_TASKS = new Set<WorkerTask['type']>(['info', 'crash', 'template', 'check-train', 'prune', 'apply-mask', 'inspect-dataset', 'probe-dataset', 'compare-models']);

/** The lane a task runs in when its caller does not say (a soup's up-front check is a request's). */
export function defaultLane(task: WorkerTask): 'request' | 'background' {
  if (REQUEST_TASKS.has(task.type)) return 'request';
  if (task.type === 'soup' && task.validateOnly) return 'request';
  return 'background';
}

/**
 * piscina threads, `threads` of them for background work plus `requestThreads` that only requests
 * may take, each with one TensorFlow.js backend (threads start on demand and end after a minute
 * idle). Background tasks beyond `threads` wait here in FIFO order, so a request (a prune, a
 * template, `POST /runs`'s check) never queues behind hours of training. A task that kills its
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
  /** Background tasks on a thread now, and those waiting for one (FIFO). */
  private backgroundRunning = 0;
  private readonly backgroundWaiting: (() => void)[] = [];
  readonly requestThreads: number;

  constructor(
    readonly threads: number,
    init: WorkerInit,
    options: { shareDatasets?: boolean; requestThreads?: number } = {},
  ) {
    this.shareDatasets = options.shareDatasets ?? true;
    this.requestThreads = options.requestThreads ?? 0;
    this.piscina = new Piscina({
      filename: workerFilename(),
      minThreads: 0,
      maxThreads: threads + this.requestThreads,
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
    const background = (opts.lane ?? defaultLane(task)) === 'background';
    this.busy++;
    let holdsLane = false;
    try {
      if (background) {
        await this.backgroundTurn(opts.signal);
        holdsLane = true;
      }
      opts.onStart?.();
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
      if (holdsLane) this.releaseBackground();
      channel?.port1.close();
    }
  }

  /** Waits until fewer than `threads` background tasks run (rejects if `signal` aborts first). */
  private backgroundTurn(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.backgroundRunning < this.threads) {
      this.backgroundRunning++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const go = () => {
        signal?.removeEventListener('abort', onAbort);
        this.backgroundRunning++;
        resolve();
      };
      const onAbort = () => {
        const i = this.backgroundWaiting.indexOf(go);
        if (i >= 0) this.backgroundWaiting.splice(i, 1);
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.backgroundWaiting.push(go);
    });
  }

  private releaseBackground(): void {
    this.backgroundRunning--;
    this.backgroundWaiting.shift()?.();
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
      queued: this.piscina.queueSize + this.backgroundWaiting.length,
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
