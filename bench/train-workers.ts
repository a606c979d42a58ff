/**
 * Multi-worker training throughput: the templates trained on 1 and on 2 worker threads at once
 * (each thread its own model and TensorFlow.js backend, as the service's worker pool runs
 * ingredients), total samples/s and the scaling factor 2 threads ÷ 1 thread.
 *
 * Each measurement starts fresh worker threads (bench/train-worker.ts), lets every one load MNIST,
 * initialise its backend and do its warm-up steps, then releases them together. Total samples/s =
 * all samples of all timed windows ÷ (last window end − first window start), so a thread that
 * finishes early does not inflate it. Rounds alternate 1 and 2 workers; medians over rounds.
 *
 *   node dist/bench/train-workers.js [--rounds 3 --steps 40 --backend auto]
 */
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import type { BackendPreference } from '../src/core/tf/backend.js';
import { printMachine } from './machine.js';
import type { WorkerJob, WorkerWindow } from './train-worker.js';

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

interface Measurement {
  backend: string;
  total: number;
  perWorker: number[];
  wallS: number;
  /** Fraction of the wall interval during which all workers were inside a timed window. */
  overlap: number;
}

async function measure(arch: string, workers: number, backend: BackendPreference, steps: number, repeats: number): Promise<Measurement> {
  const url = new URL('./train-worker.js', import.meta.url);
  const threads = Array.from({ length: workers }, (_, i) => {
    const job: WorkerJob = { arch, backend, steps, warmup: 5, repeats, seed: i + 1 };
    return new Worker(url, { workerData: job });
  });
  let backendName = '?';
  const ready = threads.map(
    (w) =>
      new Promise<void>((resolve, reject) => {
        w.once('error', reject);
        w.once('message', (m: { type: string; backend?: string; message?: string }) => {
          if (m.type === 'ready') {
            backendName = m.backend ?? '?';
            resolve();
          } else reject(new Error(m.message));
        });
      }),
  );
  const done = threads.map(
    (w) =>
      new Promise<WorkerWindow[]>((resolve, reject) => {
        w.on('error', reject);
        w.on('message', (m: { type: string; windows?: WorkerWindow[]; message?: string }) => {
          if (m.type === 'done') resolve(m.windows ?? []);
          else if (m.type === 'error') reject(new Error(m.message));
        });
      }),
  );
  try {
    await Promise.all(ready);
    for (const w of threads) w.postMessage('go');
    const results = await Promise.all(done);
    const all = results.flat();
    const start = Math.min(...all.map((w) => w.start));
    const end = Math.max(...all.map((w) => w.end));
    const samples = all.reduce((a, w) => a + w.samples, 0);
    const spans = results.map((ws) => [Math.min(...ws.map((w) => w.start)), Math.max(...ws.map((w) => w.end))]);
    const overlap = Math.max(0, Math.min(...spans.map((s) => s[1])) - Math.max(...spans.map((s) => s[0]))) / (end - start);
    return {
      backend: backendName,
      total: (samples * 1000) / (end - start),
      perWorker: results.map((ws) => (ws.reduce((a, w) => a + w.samples, 0) * 1000) / (Math.max(...ws.map((w) => w.end)) - Math.min(...ws.map((w) => w.start)))),
      wallS: (end - start) / 1000,
      overlap,
    };
  } finally {
    await Promise.all(threads.map((w) => w.terminate()));
  }
}

async function main() {
  const args = process.argv.slice(2);
  const arg = (name: string, fallback: string) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : fallback;
  };
  const rounds = Math.max(1, Number(arg('rounds', '3')));
  const steps = Number(arg('steps', '80'));
  const cnnSteps = Math.max(4, Math.round(steps / 12));
  const backend = arg('backend', 'auto') as BackendPreference;
  console.log('# bench:train-workers — training throughput on 1 and 2 worker threads, MNIST, batch 128, SGD momentum 0.9');
  const machine = printMachine();
  const archs = arg('archs', 'control,lenet-300-100,cnn-bn').split(',');
  const counts = arg('workers', '1,2').split(',').map(Number);
  const res: Record<string, Record<number, Measurement[]>> = {};
  let backendName = '?';
  for (let r = 0; r < rounds; r++) {
    for (const arch of archs) {
      const n = arch === 'cnn-bn' ? cnnSteps : arch === 'control' ? 300_000 : steps;
      for (const workers of r % 2 === 0 ? counts : [...counts].reverse()) {
        const load = os.loadavg()[0];
        const m = await measure(arch, workers, backend, n, 3);
        backendName = m.backend;
        res[arch] ??= {};
        res[arch][workers] ??= [];
        res[arch][workers].push(m);
        console.log(
          `round ${r + 1} ${arch} × ${workers}: ${m.total.toFixed(0)} samples/s total (${m.perWorker.map((x) => x.toFixed(0)).join(' + ')}), ${m.wallS.toFixed(1)} s timed, all busy ${(m.overlap * 100).toFixed(0)} % of it; load average before ${load.toFixed(2)}`,
        );
      }
    }
  }
  console.log('');
  console.log('control: a pure-JS multiply-add loop over 16 KiB (L1), no allocation — what the machine gives two CPU-bound threads right now; "samples" are loop passes');
  console.log(`backend ${backendName} in every thread; 3 timed windows per worker (lenet ${steps} steps, cnn-bn ${cnnSteps} steps each) after 5 warm-up steps; median of ${rounds} rounds`);
  const controlScaling = res.control ? median(res.control[2].map((m) => m.total)) / median(res.control[1].map((m) => m.total)) : Number.NaN;
  console.log('| model | 1 worker samples/s | 2 workers samples/s (total) | per worker | scaling 2 ÷ 1 | ÷ control scaling | ideal |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
  if (!counts.includes(1) || !counts.includes(2)) return;
  for (const arch of archs) {
    const one = median(res[arch][1].map((m) => m.total));
    const two = median(res[arch][2].map((m) => m.total));
    console.log(`| ${arch} | ${one.toFixed(0)} | ${two.toFixed(0)} | ${(two / 2).toFixed(0)} | ${(two / one).toFixed(2)}× | ${(two / one / controlScaling).toFixed(2)} | ${Math.min(2, machine.cores)}× |`);
  }
  console.log('scaling per round (2 ÷ 1): ' + archs.map((a) => `${a} ${res[a][2].map((m, i) => (m.total / res[a][1][i].total).toFixed(2)).join(' ')}`).join('; '));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
