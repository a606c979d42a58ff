import { Worker } from 'node:worker_threads';
import type { WasmMemory } from '../wasm-bytes.js';

/**
 * A second thread for sparsoup's kernels on the threaded wasm build (`WASM_THREADS` ≥ 2, whose heap
 * is a shared memory): a worker that instantiates the same module on the same memory and runs lists
 * of its functions when the calling thread asks, so a product or a convolution can be split in two
 * (disjoint rows of the output, each thread with its own packing buffers). XNNPACK's pool splits its
 * own operations, but sparsoup's kernels are outside it.
 *
 * The two threads meet on a small SharedArrayBuffer with `Atomics`: word 0 counts the jobs posted,
 * word 1 the jobs done, word 2 the number of calls, word 3 is set once the helper runs; then 16 words
 * per call (the function's index and up to 15 i32 arguments). Each side spins for up to 0.2 ms before
 * it sleeps in `Atomics.wait` (a wake-up from sleep took longer than the half product it was to
 * overlap); idle, the helper sleeps (no CPU). It is unref'd: it ends with its thread.
 */

const CALL_WORDS = 16;
const MAX_CALLS = 1024;
const HEADER = 4;
const WAIT_LIMIT_MS = 120_000;
/** How long either side spins before it sleeps in Atomics.wait. */
const SPIN_MS = 0.2;

const HELPER = `
const { workerData } = require('node:worker_threads');
const { memory, module, names, ctrl: sab } = workerData;
const ctrl = new Int32Array(sab);
const exports = new WebAssembly.Instance(module, { env: { memory } }).exports;
const fns = names.map((n) => exports[n]);
Atomics.store(ctrl, 3, 1);
Atomics.notify(ctrl, 3);
let seen = 0;
for (;;) {
  // Spin a little before sleeping: a futex wake-up costs far more than a training step's gap
  // between two products (what XNNPACK's pool does too).
  const until = performance.now() + ${SPIN_MS};
  while (Atomics.load(ctrl, 0) === seen && performance.now() < until) {}
  Atomics.wait(ctrl, 0, seen);
  seen = Atomics.load(ctrl, 0);
  const n = ctrl[2];
  for (let i = 0; i < n; i++) {
    const o = ${HEADER} + i * ${CALL_WORDS};
    fns[ctrl[o]](ctrl[o + 1], ctrl[o + 2], ctrl[o + 3], ctrl[o + 4], ctrl[o + 5], ctrl[o + 6], ctrl[o + 7], ctrl[o + 8],
      ctrl[o + 9], ctrl[o + 10], ctrl[o + 11], ctrl[o + 12], ctrl[o + 13], ctrl[o + 14], ctrl[o + 15]);
  }
  Atomics.store(ctrl, 1, seen);
  Atomics.notify(ctrl, 1);
}
`;

export class KernelHelper {
  private readonly ctrl: Int32Array;
  private posted = 0;
  private readonly index: Map<string, number>;

  private constructor(
    ctrl: Int32Array,
    names: readonly string[],
    private readonly worker: Worker,
  ) {
    this.ctrl = ctrl;
    this.index = new Map(names.map((n, i) => [n, i]));
  }

  /** Starts a helper for `module` (compiled for a shared memory) on `memory`; null where it cannot start within 10 s. */
  static start(memory: WasmMemory, module: object, names: readonly string[]): KernelHelper | null {
    const sab = new SharedArrayBuffer(4 * (HEADER + MAX_CALLS * CALL_WORDS));
    const ctrl = new Int32Array(sab);
    let worker: Worker;
    try {
      worker = new Worker(HELPER, { eval: true, workerData: { memory, module, names, ctrl: sab } });
    } catch {
      return null;
    }
    worker.unref();
    worker.on('error', () => undefined);
    if (Atomics.wait(ctrl, 3, 0, 10_000) === 'timed-out' && Atomics.load(ctrl, 3) === 0) {
      void worker.terminate();
      return null;
    }
    return new KernelHelper(ctrl, names, worker);
  }

  /** Posts the calls ([function name, ...i32 arguments]) to the helper; returns at once. */
  post(calls: readonly (readonly [string, ...number[]])[]): void {
    if (calls.length > MAX_CALLS) throw new Error(`a helper job holds at most ${MAX_CALLS} calls, got ${calls.length}`);
    const c = this.ctrl;
    for (let i = 0; i < calls.length; i++) {
      const [name, ...args] = calls[i];
      const o = HEADER + i * CALL_WORDS;
      const f = this.index.get(name);
      if (f === undefined) throw new Error(`the helper has no function ${name}`);
      c[o] = f;
      for (let a = 0; a < CALL_WORDS - 1; a++) c[o + 1 + a] = args[a] ?? 0;
    }
    c[2] = calls.length;
    this.posted++;
    Atomics.store(c, 0, this.posted);
    Atomics.notify(c, 0);
  }

  /**
   * Blocks until the helper has finished the last posted job. A job takes milliseconds; a helper
   * silent for two minutes is gone (its thread cannot report an error while this one blocks), and
   * that is an error rather than a hang.
   */
  wait(): void {
    const c = this.ctrl;
    const spinUntil = performance.now() + SPIN_MS;
    while (Atomics.load(c, 1) !== this.posted && performance.now() < spinUntil) {}
    const deadline = Date.now() + WAIT_LIMIT_MS;
    for (;;) {
      const done = Atomics.load(c, 1);
      if (done === this.posted) return;
      if (Date.now() > deadline) throw new Error('the kernel helper thread stopped answering');
      Atomics.wait(c, 1, done, 1000);
    }
  }

  /** Ends the helper thread (tests; otherwise it ends with its thread). */
  stop(): Promise<number> {
    return this.worker.terminate();
  }
}
