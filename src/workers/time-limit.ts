import { ProblemException } from '../common/problem.js';
import type { ResultOf, WorkerTask } from './tasks.js';
import type { RunTaskOptions, WorkerPool } from './worker-pool.js';

/** Tasks without a time bound: training lasts as long as its epochs and is cancelled through its run. */
const UNBOUNDED = new Set<WorkerTask['type']>(['train']);
/** A task still in flight this long after its bound has not been ended: the pool is stuck. */
const STUCK_GRACE_MS = 10_000;

export interface TaskTimeStats {
  /** Tasks ended because they passed their time bound, since start. */
  timedOut: number;
  /** Bounded tasks still in flight past their bound plus a grace: their thread did not end. */
  overdue: number;
  /** Age of the oldest bounded task in flight, in seconds (0 when none). */
  oldestTaskSeconds: number;
}

/**
 * Runs tasks with a time bound: a task not finished within `ms` of reaching a thread's queue is aborted —
 * piscina terminates its thread, which stops even a busy loop, and starts a fresh one — and the
 * caller gets a 503 problem naming the task and the bound.
 */
export class TaskTimeLimit {
  private readonly inFlight = new Map<number, number>();
  private nextId = 0;
  private timedOut = 0;

  constructor(private readonly ms: number) {}

  async run<T extends WorkerTask>(pool: WorkerPool, task: T, opts: RunTaskOptions = {}): Promise<ResultOf<T['type']>> {
    if (UNBOUNDED.has(task.type)) return pool.run(task, opts);
    // The bound runs from the moment the task is handed to a thread: waiting for its lane behind
    // other runs' training is not the task being slow.
    const timeout = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const signal = opts.signal ? AbortSignal.any([opts.signal, timeout.signal]) : timeout.signal;
    const id = this.nextId++;
    const onStart = () => {
      opts.onStart?.();
      this.inFlight.set(id, Date.now());
      timer = setTimeout(() => timeout.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError')), this.ms);
    };
    try {
      return await pool.run(task, { ...opts, signal, onStart });
    } catch (err) {
      if (timeout.signal.aborted && !opts.signal?.aborted) {
        this.timedOut++;
        throw new ProblemException(503, `the ${task.type} task did not finish within ${this.ms / 1000} s (TASK_TIMEOUT_SECONDS); it was stopped and its worker thread replaced`, {
          slug: 'task-timeout',
          extensions: { task: task.type, timeoutSeconds: this.ms / 1000 },
        });
      }
      throw err;
    } finally {
      clearTimeout(timer);
      this.inFlight.delete(id);
    }
  }

  stats(now = Date.now()): TaskTimeStats {
    let overdue = 0;
    let oldest = now;
    for (const started of this.inFlight.values()) {
      if (now - started > this.ms + STUCK_GRACE_MS) overdue++;
      oldest = Math.min(oldest, started);
    }
    return { timedOut: this.timedOut, overdue, oldestTaskSeconds: Math.round((now - oldest) / 1000) };
  }
}
