/**
 * The entry point of every worker thread in the pool. One TensorFlow.js backend per thread,
 * initialised once; each task is dispatched by its `type`.
 */
import { threadId } from 'node:worker_threads';
import { workerData } from 'piscina';
import { initBackend } from '../core/tf/backend.js';
import type { ProgressMessage, TaskContext, WorkerInit, WorkerTask } from './tasks.js';

const init = workerData as WorkerInit;

export default async function runTask({ task, port }: { task: WorkerTask; port?: import('node:worker_threads').MessagePort }) {
  const backend = await initBackend(init.backend);
  const ctx: TaskContext = {
    init,
    port: port ?? null,
    progress: (m) => port?.postMessage({ kind: 'progress', ...m } satisfies ProgressMessage),
  };
  try {
    switch (task.type) {
      case 'info':
        return { backend, threadId };
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
  } finally {
    port?.close();
  }
}
