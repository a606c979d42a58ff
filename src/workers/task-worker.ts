/**
 * The entry point of every worker thread in the pool. One TensorFlow.js backend and one artifact
 * store per thread, initialised once; each task is dispatched by its `type` through `handlers`,
 * whose type makes every handler answer the result `TaskMap` names for its task.
 */
import { type MessagePort, threadId } from 'node:worker_threads';
import { workerData } from 'piscina';
import { CoreInputError } from '../core/errors.js';
import { initBackend } from '../core/tf/backend.js';
import { createArtifactStore } from '../storage/create.js';
import { runCompareModels } from './handlers/compare.js';
import { runInspectDataset } from './handlers/datasets.js';
import { runEnsembleEvaluate } from './handlers/ensemble.js';
import { runEvaluate } from './handlers/evaluate.js';
import { runApplyMask, runPrune } from './handlers/prune.js';
import { runSoup } from './handlers/soup.js';
import { runTemplate } from './handlers/template.js';
import { runCheckTrain, runTrain } from './handlers/train.js';
import type { TaskContext } from './shared/context.js';
import { CORE_INPUT_ERROR, type ProgressMessage, type ResultOf, type TaskName, type TaskOf, type WorkerInit, type WorkerTask } from './tasks.js';

const init = workerData as WorkerInit;
const store = createArtifactStore(init.artifacts);

type Handlers = { [K in TaskName]: (task: TaskOf<K>, ctx: TaskContext) => Promise<ResultOf<K>> };

const handlers: Handlers = {
  info: async (_task, ctx) => ({ backend: ctx.backend, threadId }),
  prune: runPrune,
  'apply-mask': runApplyMask,
  'inspect-dataset': runInspectDataset,
  evaluate: runEvaluate,
  template: runTemplate,
  train: runTrain,
  'check-train': runCheckTrain,
  soup: runSoup,
  'compare-models': runCompareModels,
  'ensemble-evaluate': runEnsembleEvaluate,
  crash: async (task) => {
    if (!init.allowDiagnostics) throw new Error('diagnostic tasks are disabled');
    if (task.how === 'exit') process.exit(70);
    if (task.how === 'hang') await new Promise(() => {});
    if (task.how === 'spin') for (;;); // a busy thread, as a backtracking pattern once made one
    throw new Error('diagnostic failure');
  },
};

export default async function runTask({ task, port }: { task: WorkerTask; port?: MessagePort }) {
  const backend = await initBackend(init.backend);
  const ctx: TaskContext = {
    init,
    store,
    backend,
    port: port ?? null,
    progress: (m) => port?.postMessage({ kind: 'progress', ...m } satisfies ProgressMessage),
  };
  try {
    const handler = handlers[task.type] as ((t: WorkerTask, c: TaskContext) => Promise<unknown>) | undefined;
    if (!handler) throw new Error(`unknown task type ${(task as { type: string }).type}`);
    return await handler(task, ctx);
  } catch (err) {
    // Errors cross the thread boundary as plain Errors: carry a client error's fields explicitly.
    if (err instanceof CoreInputError) return { [CORE_INPUT_ERROR]: { code: err.code, message: err.message, details: err.details, status: err.status } };
    throw err;
  } finally {
    port?.close();
  }
}
