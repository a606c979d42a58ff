/**
 * One candidate on two cores: the wasm backend's threaded-SIMD build (XNNPACK's thread pool,
 * src/core/tf/wasm-threads.ts) against the single-threaded build, both in worker threads as the
 * service runs candidates (MNIST, batch 128, SGD momentum 0.9, constant LR).
 *
 * 1. One candidate alone: a worker with 1 XNNPACK thread and a worker with 2 train (and then
 *    evaluate the test set) in turn, never at once; rounds alternate which goes first. Ratio =
 *    2-thread samples/s ÷ 1-thread samples/s of the same round; medians over rounds.
 * 2. Two candidates at once (WORKERS = 2 all training): two 1-thread workers train together, then
 *    two 2-thread workers train together (4 XNNPACK threads on the cores); total samples/s.
 *
 *   node dist/bench/imp.js [--rounds 5 --lenet-steps 40 --cnn-steps 6 --eval 2000]
 */
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import type { ImpWorkerJob, ImpWorkerRequest, ImpWorkerWindow } from './imp-worker.js';
import { printMachine } from './machine.js';

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
};
const load = () => os.loadavg()[0].toFixed(1);

class Candidate {
  private readonly worker: Worker;
  readonly ready: Promise<{ wasmThreads: number; wasmThreadsError?: string }>;
  private pending: ((w: ImpWorkerWindow) => void) | null = null;
  constructor(readonly job: ImpWorkerJob) {
    this.worker = new Worker(new URL('./imp-worker.js', import.meta.url), { workerData: job });
    this.ready = new Promise((resolve, reject) => {
      this.worker.on('message', (m: { type: string; window?: ImpWorkerWindow; message?: string; wasmThreads?: number; wasmThreadsError?: string }) => {
        if (m.type === 'ready') resolve({ wasmThreads: m.wasmThreads!, wasmThreadsError: m.wasmThreadsError });
        else if (m.type === 'window') this.pending?.(m.window!);
        else if (m.type === 'error') reject(new Error(m.message));
      });
      this.worker.once('error', reject);
    });
  }
  run(req: ImpWorkerRequest): Promise<ImpWorkerWindow> {
    return new Promise((resolve) => {
      this.pending = resolve;
      this.worker.postMessage(req);
    });
  }
  stop(): Promise<number> {
    return this.worker.terminate();
  }
}

const rate = (w: ImpWorkerWindow) => (w.samples * 1000) / w.ms;
const fmt = (x: number) => Math.round(x).toLocaleString('en-US');

async function alone(arch: string, steps: number, evalLimit: number, rounds: number): Promise<void> {
  const one = new Candidate({ arch, wasmThreads: 1, seed: 1 });
  const two = new Candidate({ arch, wasmThreads: 2, seed: 1 });
  const [r1, r2] = await Promise.all([one.ready, two.ready]);
  if (r2.wasmThreads !== 2) throw new Error(`the 2-thread worker runs ${r2.wasmThreads} thread(s): ${r2.wasmThreadsError}`);
  const loads = [load()];
  const rows = { train1: [] as number[], train2: [] as number[], eval1: [] as number[], eval2: [] as number[], cpu2: [] as number[] };
  const ratios = { train: [] as number[], eval: [] as number[] };
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 ? [two, one] : [one, two];
    const t: Record<number, ImpWorkerWindow> = {};
    const e: Record<number, ImpWorkerWindow> = {};
    for (const c of order) t[c.job.wasmThreads] = await c.run({ op: 'train', steps, seed: 100 + r });
    for (const c of order) e[c.job.wasmThreads] = await c.run({ op: 'eval', limit: evalLimit });
    rows.train1.push(rate(t[1]));
    rows.train2.push(rate(t[2]));
    rows.eval1.push(rate(e[1]));
    rows.eval2.push(rate(e[2]));
    rows.cpu2.push(t[2].cpuMs / t[2].ms);
    ratios.train.push(rate(t[2]) / rate(t[1]));
    ratios.eval.push(rate(e[2]) / rate(e[1]));
    loads.push(load());
  }
  console.log(
    `| ${arch} | train | ${fmt(median(rows.train1))} | ${fmt(median(rows.train2))} | ${median(ratios.train).toFixed(2)}× (${ratios.train.map((x) => x.toFixed(2)).join(', ')}) | ${median(rows.cpu2).toFixed(2)} | ${loads[0]}–${loads.at(-1)} |`,
  );
  console.log(
    `| ${arch} | evaluate ${evalLimit} | ${fmt(median(rows.eval1))} | ${fmt(median(rows.eval2))} | ${median(ratios.eval).toFixed(2)}× (${ratios.eval.map((x) => x.toFixed(2)).join(', ')}) | | |`,
  );
  void r1;
  await Promise.all([one.stop(), two.stop()]);
}

async function pair(arch: string, steps: number, rounds: number): Promise<void> {
  const ones = [1, 2].map((seed) => new Candidate({ arch, wasmThreads: 1, seed }));
  const twos = [1, 2].map((seed) => new Candidate({ arch, wasmThreads: 2, seed }));
  await Promise.all([...ones, ...twos].map((c) => c.ready));
  const loads = [load()];
  const totals = { 1: [] as number[], 2: [] as number[] };
  const ratios: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const order: [1 | 2, Candidate[]][] = r % 2 ? [[2, twos], [1, ones]] : [[1, ones], [2, twos]];
    const got: Record<number, number> = {};
    for (const [k, cs] of order) {
      const t0 = performance.now();
      const ws = await Promise.all(cs.map((c) => c.run({ op: 'train', steps, seed: 200 + r })));
      got[k] = (ws.reduce((s, w) => s + w.samples, 0) * 1000) / (performance.now() - t0);
      totals[k].push(got[k]);
    }
    ratios.push(got[2] / got[1]);
    loads.push(load());
  }
  console.log(
    `| ${arch} | 2 candidates at once | ${fmt(median(totals[1]))} | ${fmt(median(totals[2]))} | ${median(ratios).toFixed(2)}× (${ratios.map((x) => x.toFixed(2)).join(', ')}) | | ${loads[0]}–${loads.at(-1)} |`,
  );
  await Promise.all([...ones, ...twos].map((c) => c.stop()));
}

async function main(): Promise<void> {
  printMachine();
  const rounds = arg('rounds', 5);
  const evalLimit = arg('eval', 2000);
  const steps: Record<string, number> = { 'lenet-300-100': arg('lenet-steps', 40), 'cnn-bn': arg('cnn-steps', 6) };
  console.log(`rounds ${rounds}; train windows: ${Object.entries(steps).map(([a, n]) => `${a} ${n} steps`).join(', ')} of batch 128; eval windows ${evalLimit} test samples (batch 512)`);
  console.log('| model | window | 1 thread samples/s | 2 threads samples/s | ratio (per round) | CPU/wall, 2 threads | load (1 min) |');
  console.log('| --- | --- | ---: | ---: | --- | ---: | --- |');
  for (const arch of Object.keys(steps)) await alone(arch, steps[arch], evalLimit, rounds);
  for (const arch of Object.keys(steps)) await pair(arch, steps[arch], Math.max(2, Math.ceil(rounds / 2)));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
