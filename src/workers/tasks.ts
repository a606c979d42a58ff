import type { MessagePort } from 'node:worker_threads';
import type { BackendInfo, BackendPreference } from '../core/tf/backend.js';
import type { CompareModelsTask } from './handlers/compare.js';
import type { EnsembleEvaluateTask } from './handlers/ensemble.js';
import type { InspectDatasetTask } from './handlers/datasets.js';
import type { EvaluateTask } from './handlers/evaluate.js';
import type { ApplyMaskTask, PruneTask } from './handlers/prune.js';
import type { SoupTask } from './handlers/soup.js';
import type { TemplateTask } from './handlers/template.js';
import type { CheckTrainTask, TrainTask } from './handlers/train.js';

export type { ApplyMaskTask, CompareModelsTask, EnsembleEvaluateTask, CheckTrainTask, EvaluateTask, InspectDatasetTask, PruneTask, SoupTask, TemplateTask, TrainTask };

/**
 * What the main thread asks a worker thread to do. Tasks carry ids, paths and configurations;
 * tensors stay in files. Results are small; big outputs are written as artifacts by the worker
 * and returned as their sha256.
 */
export interface WorkerInit {
  backend: BackendPreference;
  artifactsDir: string;
  cacheDir: string;
  /** Lets tests ask a thread to crash, to check that the pool replaces it. */
  allowDiagnostics?: boolean;
}

export interface InfoTask {
  type: 'info';
}
export interface InfoResult {
  backend: BackendInfo;
  threadId: number;
}

export interface CrashTask {
  type: 'crash';
  how: 'exit' | 'throw' | 'hang';
}

export type WorkerTask = InfoTask | CrashTask | PruneTask | ApplyMaskTask | InspectDatasetTask | EvaluateTask | TemplateTask | TrainTask | CheckTrainTask | SoupTask | CompareModelsTask | EnsembleEvaluateTask;

/** Messages a running task sends back on its progress port. */
export interface ProgressMessage {
  kind: 'progress';
  [key: string]: unknown;
}

export interface TaskContext {
  init: WorkerInit;
  progress: (message: Omit<ProgressMessage, 'kind'>) => void;
  port: MessagePort | null;
}

/** Key of a task result that is really a client error (CoreInputError) raised in the worker. */
export const CORE_INPUT_ERROR = '__coreInputError';
