import type { MessagePort } from 'node:worker_threads';
import type { ImageDataset } from '../../core/data/dataset.js';
import type { BackendInfo } from '../../core/tf/backend.js';
import type { ArtifactStore } from '../../storage/artifact-store.js';
import type { ProgressMessage, WorkerInit } from '../tasks.js';

/** What a handler gets besides its task: the thread's store, backend and a progress channel. */
export interface TaskContext {
  init: WorkerInit;
  /** The thread's artifact store (one per thread, built from `init.artifacts`). */
  store: ArtifactStore;
  backend: BackendInfo;
  progress: (message: Omit<ProgressMessage, 'kind'>) => void;
  port: MessagePort | null;
  /** The process-wide copy (SharedArrayBuffers) of the dataset the task names, when the pool sent one. */
  sharedDataset?: ImageDataset | null;
  /** Pool threads no task held when this one was dispatched (a lone training may use one). */
  idleThreads?: number;
}
