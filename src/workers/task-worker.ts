/**
 * The entry point of every worker thread in the pool. One TensorFlow.js backend and one artifact
 * store per thread, initialised once; each task is dispatched by its `type` through `handlers`,
 * whose type makes every handler answer the result `TaskMap` names for its task.
 */
import { type MessagePort, threadId } from 'node:worker_threads';
import { workerData } from 'piscina';
import type { ImageDataset } from '../core/data/dataset.js';
import { CoreInputError } from '../core/errors.js';
import { initBackend } from '../core/tf/backend.js';
import { gemmAvailable } from '../core/tf/gemm.js';
import { setWasmKernels } from '../core/tf/kernel-set.js';
import { setDefaultSparseMatMul } from '../core/tf/sparse-matmul.js';
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
import { loadDataset, readDataset, toSharedDataset } from './shared/datasets.js';
import { CORE_INPUT_ERROR, type ProgressMessage, type ResultOf, type TaskName, type TaskOf, type WorkerInit, type WorkerTask } from './tasks.js';

const init = workerData as WorkerInit;
const store = createArtifactStore(init.artifacts);

type Handlers = { [K in TaskName]: (task: TaskOf<K>, ctx: TaskContext) => Promise<ResultOf<K>> };

const handlers: Handlers = {
  info: async (_task, ctx) => ({ backend: { ...ctx.backend, matMul: ctx.backend.name !== 'wasm' ? 'native' : gemmAvailable() ? 'fma' : 'xnnpack' }, threadId }),
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
  // Read fresh (not through this thread's cache, so the thread keeps no copy of its own): built-ins
  // straight into a SharedArrayBuffer, uploads parsed and then copied into one. The pool keeps that
  // one copy for the process.
  'share-dataset': async (task, ctx) => toSharedDataset(await readDataset(task.dataset, ctx, { shared: true })),
  'probe-dataset': async (task, ctx) => {
    if (!init.allowDiagnostics) throw new Error('diagnostic tasks are disabled');
    const ds = await loadDataset(task.dataset, ctx);
    if (task.rendezvous) {
      const counter = new Int32Array(task.rendezvous.counter);
      Atomics.add(counter, 0, 1);
      Atomics.notify(counter, 0);
      const deadline = Date.now() + 20_000;
      for (let seen = Atomics.load(counter, 0); seen < task.rendezvous.parties && Date.now() < deadline; seen = Atomics.load(counter, 0)) {
        Atomics.wait(counter, 0, seen, deadline - Date.now());
      }
    }
    return { threadId, shared: ds.x.buffer instanceof SharedArrayBuffer, value: ds.x[task.index], byteLength: ds.x.byteLength };
  },
  crash: async (task) => {
    if (!init.allowDiagnostics) throw new Error('diagnostic tasks are disabled');
    if (task.how === 'exit') process.exit(70);
    if (task.how === 'hang') await new Promise(() => {});
    if (task.how === 'spin') for (;;); // a busy thread, as a backtracking pattern once made one
    if (task.how === 'sleep') {
      await new Promise((r) => setTimeout(r, task.ms ?? 1000));
      return null;
    }
    throw new Error('diagnostic failure');
  },
};

export default async function runTask({ task, port, dataset, idleThreads }: { task: WorkerTask; port?: MessagePort; dataset?: ImageDataset; idleThreads?: number }) {
  const backend = await initBackend(init.backend, init.wasmThreads ?? 1);
  setDefaultSparseMatMul(init.evalSparse ?? 'auto');
  setWasmKernels(init.wasmKernels ?? 'sparsoup');
  const ctx: TaskContext = {
    init,
    store,
    backend,
    port: port ?? null,
    sharedDataset: dataset ?? null,
    idleThreads: idleThreads ?? 0,
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
