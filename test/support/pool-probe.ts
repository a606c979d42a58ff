import type { WorkerTask } from '../../src/workers/tasks.js';
import { WorkerPoolService } from '../../src/workers/worker-pool.service.js';
import type { TestApp } from './app.js';

interface Gate {
  reached: Promise<WorkerTask>;
  onReach: (task: WorkerTask) => void;
  release: () => void;
  open: Promise<void>;
}

/**
 * A fake around the app's worker pool, for service-depth tests: every task still runs on the real
 * threads, but the probe records it, can make the next task of a type fail (a crash of the thread,
 * say), and can hold the next task of a type at the pool's door until the test releases it.
 * The services hold the one `WorkerPoolService` instance, so wrapping its `run` reaches all of them.
 */
export class PoolProbe {
  readonly tasks: WorkerTask[] = [];
  private readonly failures = new Map<string, Error[]>();
  private readonly gates = new Map<string, Gate>();

  constructor(t: TestApp) {
    const pool = t.app.get(WorkerPoolService);
    const real = pool.run.bind(pool);
    pool.run = (async (task: WorkerTask, opts?: Parameters<typeof real>[1]) => {
      this.tasks.push(task);
      const failure = this.failures.get(task.type)?.shift();
      if (failure) throw failure;
      const gate = this.gates.get(task.type);
      if (gate) {
        this.gates.delete(task.type);
        gate.onReach(task);
        await gate.open;
      }
      return real(task, opts);
    }) as typeof pool.run;
  }

  /** How many tasks of this type the services asked for (optionally: matching `where`). */
  count(type: WorkerTask['type'], where: (task: WorkerTask) => boolean = () => true): number {
    return this.tasks.filter((x) => x.type === type && where(x)).length;
  }

  /** The next task of this type throws `error` instead of running. */
  failNext(type: WorkerTask['type'], error: Error): void {
    this.failures.set(type, [...(this.failures.get(type) ?? []), error]);
  }

  /** Holds the next task of this type until `release()`; `reached` resolves when it arrives. */
  holdNext(type: WorkerTask['type']): { reached: Promise<WorkerTask>; release: () => void } {
    let onReach!: (task: WorkerTask) => void;
    let release!: () => void;
    const gate: Gate = {
      reached: new Promise((r) => (onReach = r)),
      onReach: (task) => onReach(task),
      open: new Promise((r) => (release = r)),
      release: () => release(),
    };
    this.gates.set(type, gate);
    return { reached: gate.reached, release: gate.release };
  }
}
