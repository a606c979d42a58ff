/**
 * The entry point of every worker thread in the pool. One TensorFlow.js backend per thread,
 * initialised once; each task is dispatched by its `type`.
 */
import { threadId } from 'node:worker_threads';
import { workerData } from 'piscina';
import { CoreInputError } from '../core/errors.js';
import { initBackend } from '../core/tf/backend.js';
import { runCompareModels } from './handlers/compare.js';
import { runInspectDataset } from './handlers/datasets.js';
import { runEnsembleEvaluate } from './handlers/ensemble.js';
import { runEvaluate } from './handlers/evaluate.js';
import { runApplyMask, runPrune } from './handlers/prune.js';
import { runSoup } from './handlers/soup.js';
import { runTemplate } from './handlers/template.js';
import { runCheckTrain, runTrain } from './handlers/train.js';
import { CORE_INPUT_ERROR, type ProgressMessage, type TaskContext, type WorkerInit, type WorkerTask } from './tasks.js';

const init = workerData as WorkerInit;

export default async function runTask({ task, port }: { task: WorkerTask; port?: import('node:worker_threads').MessagePort }) {
  const backend = await initBackend(init.backend);
  const ctx: TaskContext = {
    init,
    port: port ?? null,
    progress: (m) => port?.postMessage({ kind: 'progress', ...m } satisfies ProgressMessage),
  };
  try {
    return await dispatch(task, ctx, backend);
  } catch (err) {
    // Errors cross the thread boundary as plain Errors: carry a client error's fields explicitly.
    if (err instanceof CoreInputError) return { [CORE_INPUT_ERROR]: { code: err.code, message: err.message, details: err.details, status: err.status } };
    throw err;
  } finally {
    port?.close();
  }
}

async function dispatch(task: WorkerTask, ctx: TaskContext, backend: Awaited<ReturnType<typeof initBackend>>) {
  switch (task.type) {
    case 'info':
      return { backend, threadId };
    case 'prune':
      return await runPrune(task, ctx);
    case 'apply-mask':
      return await runApplyMask(task, ctx);
    case 'inspect-dataset':
      return await runInspectDataset(task, ctx.init);
    case 'evaluate':
      return await runEvaluate(task, ctx);
    case 'template':
      return await runTemplate(task, ctx);
    case 'train':
      return await runTrain(task, ctx, backend.name);
    case 'check-train':
      return await runCheckTrain(task, ctx);
    case 'soup':
      return await runSoup(task, ctx);
    case 'compare-models':
      return await runCompareModels(task, ctx);
    case 'ensemble-evaluate':
      return await runEnsembleEvaluate(task, ctx);
    case 'crash':
      if (!init.allowDiagnostics) throw new Error('diagnostic tasks are disabled');
      if (task.how === 'exit') process.exit(70);
      if (task.how === 'hang') await new Promise(() => {});
      throw new Error('diagnostic failure');
    default: {
      const t: { type: string } = task;
      void ctx;
      throw new Error(`unknown task type ${t.type}`);
    }
  }
}
