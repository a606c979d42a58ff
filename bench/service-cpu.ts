/**
 * `npm run bench:mainthread`: how much of the CPU the service's main thread (the event loop: HTTP,
 * the embedded PGlite database, pg-boss, progress writes) takes while its worker threads train
 * (issue 16, "both cores for training").
 *
 * For each variant, starts the built service as a child process (fresh DATA_DIR, embedded PGlite
 * unless DATABASE_URL is given to the bench, WORKERS=2), creates a lenet-300-100 template on
 * fashion-mnist, queues N SMS runs at once (m candidates per phase, so far more candidates than
 * worker threads), polls GET /runs/{id} for every run every 5 s as bench:sms does, and, after a
 * warm-up, measures a window: CPU seconds of every thread of the service (/proc/<pid>/task/<tid>/stat:
 * the main thread is the process's first thread; the WORKERS busiest other threads are the ones
 * that train; the rest are V8's GC/compiler threads and libuv's pool) and the training epochs the
 * candidates advanced (their progress, as GET /runs/{id} reports it). Prints per variant the main
 * thread's share of the service's CPU, its CPU seconds per trained epoch, and the epochs per second.
 *
 * Variants (in the same run, each a fresh service): `--variants 'before:JOB_POLL_SECONDS=0.5,PROGRESS_WRITE_SECONDS=1;after:'`
 * (the default: the old polling and progress intervals against today's defaults); `name@DIR:ENV…`
 * runs the service built in another checkout DIR (its dist/), e.g. the commit before issue 16's changes.
 *
 *   npm run bench:mainthread [-- --runs 16 --m 3 --window 60 --warmup 20 --workers 2 --cpu-prof DIR]
 *
 * --cpu-prof DIR starts the service under `node --cpu-prof --cpu-prof-dir=DIR` (one profile per variant).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { printMachine } from './machine.js';
import { client, FINISHED, freePort, type Run, sleep } from './sms-client.js';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(here, here.endsWith(join('dist', 'bench')) ? '../..' : '..');
const TICK = 100; // clock ticks per second of /proc's utime/stime (USER_HZ, 100 on Linux)
const load = () => os.loadavg().map((l) => l.toFixed(1)).join(' ');

interface Args {
  runs: number;
  m: number;
  epochs: number;
  window: number;
  warmup: number;
  workers: number;
  cpuProf: string | null;
  variants: { name: string; env: Record<string, string>; root: string }[];
}

function parseArgs(): Args {
  const argv = process.argv.slice(2);
  const arg = (name: string, fallback: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : fallback;
  };
  const num = (name: string, fallback: number) => {
    const v = Number(arg(name, String(fallback)));
    if (!(v > 0)) throw new Error(`--${name} must be a positive number`);
    return v;
  };
  const variants = arg('variants', 'before:JOB_POLL_SECONDS=0.5,PROGRESS_WRITE_SECONDS=1;after:')
    .split(';')
    .filter((v) => v.trim())
    .map((v) => {
      const colon = v.indexOf(':');
      const [head, rest] = colon < 0 ? [v, ''] : [v.slice(0, colon), v.slice(colon + 1)];
      const [name, dir] = head.split('@');
      const env = Object.fromEntries(rest.split(',').filter(Boolean).map((kv) => kv.split('=') as [string, string]));
      return { name: name.trim(), env, root: dir ? resolve(dir) : ROOT };
    });
  const prof = arg('cpu-prof', '');
  return {
    runs: num('runs', 16),
    m: num('m', 3),
    epochs: num('epochs', 1),
    window: num('window', 60),
    warmup: num('warmup', 20),
    workers: num('workers', 2),
    cpuProf: prof ? resolve(prof) : null,
    variants,
  };
}

/** CPU seconds of every thread of `pid`, by thread id. */
function threadCpu(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
      // Fields after the command (which may hold spaces) in parentheses: utime and stime are the 12th and 13th.
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(Number(t), (Number(f[11]) + Number(f[12])) / TICK);
    } catch {
      // the thread ended
    }
  }
  return out;
}

/** Training epochs done so far over the runs' candidates (finished ones whole, running ones by their progress). */
function epochsOf(runs: Map<string, Run>): number {
  let n = 0;
  for (const run of runs.values()) {
    for (const c of run.candidates) {
      if (c.status === 'succeeded') n += c.config.epochs;
      else if (c.status === 'running' && c.progress?.steps) n += (c.config.epochs * c.progress.step) / c.progress.steps;
    }
  }
  return n;
}

interface Result {
  name: string;
  env: Record<string, string>;
  seconds: number;
  main: number;
  training: number;
  other: number;
  epochs: number;
  gets: number;
  getMs: number;
}

async function runVariant(args: Args, variant: Args['variants'][number]): Promise<Result> {
  const dataDir = mkdtempSync(join(os.tmpdir(), 'sparsoup-bench-mainthread-'));
  const port = await freePort();
  const nodeArgs = args.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${args.cpuProf}`, `--cpu-prof-name=${variant.name}.cpuprofile`] : [];
  if (args.cpuProf) mkdirSync(args.cpuProf, { recursive: true });
  const child: ChildProcess = spawn(process.execPath, [...nodeArgs, join(variant.root, 'dist/src/main.js')], {
    cwd: variant.root,
    env: { ...process.env, DATABASE_URL: process.env.DATABASE_URL ?? '', DATA_DIR: dataDir, WORKERS: String(args.workers), PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn', API_KEYS: '', ...variant.env },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const api = client(`http://127.0.0.1:${port}`, '');
  try {
    for (let i = 0; ; i++) {
      if (child.exitCode !== null) throw new Error(`the service exited (${child.exitCode})`);
      try {
        await api.json('GET', '/health');
        break;
      } catch {
        if (i > 400) throw new Error('the service did not answer /health in 120 s');
        await sleep(300);
      }
    }
    const template = await api.json<{ id: string }>('POST', '/models/templates', { architecture: 'lenet-300-100', datasetId: 'fashion-mnist', seed: 0 });
    const ids: string[] = [];
    for (let i = 0; i < args.runs; i++) {
      const run = await api.json<Run>('POST', '/runs', {
        kind: 'sms',
        modelId: template.id,
        datasetId: 'fashion-mnist',
        goalSparsity: 0.9,
        phases: 2,
        m: args.m,
        vary: 'seed',
        soup: { method: 'uniform' },
        training: { seed: 1000 * i + 1, epochs: args.epochs, batchSize: 128, optimizer: 'sgd', momentum: 0.9, learningRate: 0.1, schedule: 'linear', warmupFraction: 0.1, weightDecay: 1e-4 },
      });
      ids.push(run.id);
    }
    const runs = new Map<string, Run>();
    let gets = 0;
    let getMs = 0;
    // The bench:sms poller: one GET /runs/{id} after another for every unfinished run, then 5 s of sleep.
    let polling = true;
    const poller = (async () => {
      while (polling) {
        for (const id of ids) {
          const known = runs.get(id);
          if (known && FINISHED.includes(known.status)) continue;
          const t = performance.now();
          runs.set(id, await api.json<Run>('GET', `/runs/${id}`));
          getMs += performance.now() - t;
          gets++;
        }
        await sleep(5000);
      }
    })();
    await sleep(args.warmup * 1000);
    const e0 = epochsOf(runs);
    const c0 = threadCpu(child.pid!);
    const g0 = { gets, getMs };
    const t0 = performance.now();
    await sleep(args.window * 1000);
    const c1 = threadCpu(child.pid!);
    const seconds = (performance.now() - t0) / 1000;
    const e1 = epochsOf(runs);
    polling = false;
    await poller;
    const delta = [...c1].map(([tid, s]) => ({ tid, s: s - (c0.get(tid) ?? 0) })).sort((a, b) => b.s - a.s);
    const main = delta.find((d) => d.tid === child.pid)!.s;
    const others = delta.filter((d) => d.tid !== child.pid);
    const training = others.slice(0, args.workers).reduce((a, d) => a + d.s, 0);
    const other = others.slice(args.workers).reduce((a, d) => a + d.s, 0);
    const unfinished = [...runs.values()].filter((r) => !FINISHED.includes(r.status)).length;
    if (unfinished < args.workers) console.log(`  (only ${unfinished} runs unfinished at the end of the window: raise --runs or --epochs)`);
    return { name: variant.name, env: variant.env, seconds, main, training, other, epochs: e1 - e0, gets: gets - g0.gets, getMs: getMs - g0.getMs };
  } finally {
    await new Promise<void>((res) => {
      if (child.exitCode !== null || child.signalCode !== null) return res();
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      child.once('exit', () => {
        clearTimeout(timer);
        res();
      });
      child.kill('SIGTERM');
    });
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function main() {
  const args = parseArgs();
  console.log('# bench:mainthread — the service main thread\'s CPU while its worker threads train');
  printMachine();
  console.log(`database: ${process.env.DATABASE_URL ? 'Postgres (DATABASE_URL)' : 'embedded PGlite'}; WORKERS=${args.workers}; ${args.runs} SMS runs (lenet-300-100, fashion-mnist, 2 phases, m = ${args.m}, ${args.epochs} epochs per candidate) queued at once, each polled every 5 s; ${args.warmup} s warm-up, ${args.window} s window`);
  const results: Result[] = [];
  for (const v of args.variants) {
    console.log(`\n${v.name}${v.root === ROOT ? '' : ` (service from ${v.root})`} (${Object.entries(v.env).map(([k, x]) => `${k}=${x}`).join(' ') || 'defaults'}), load before ${load()}`);
    const r = await runVariant(args, v);
    results.push(r);
    const total = r.main + r.training + r.other;
    console.log(
      `  main thread ${r.main.toFixed(1)} s CPU (${((100 * r.main) / r.seconds).toFixed(0)} % of a core, ${((100 * r.main) / total).toFixed(0)} % of the service's CPU); ` +
        `training threads ${r.training.toFixed(1)} s (${((100 * r.training) / r.seconds / args.workers).toFixed(0)} % of a core each); other threads ${r.other.toFixed(1)} s; ` +
        `${r.epochs.toFixed(2)} epochs trained (${(r.epochs / r.seconds).toFixed(3)}/s); main thread ${(r.main / Math.max(r.epochs, 1e-9)).toFixed(2)} CPU s per epoch; ` +
        `${r.gets} GET /runs/{id} at ${(r.getMs / Math.max(1, r.gets)).toFixed(0)} ms each; load after ${load()}`,
    );
  }
  if (results.length > 1) {
    const [a, ...rest] = results;
    for (const b of rest) {
      console.log(
        `\n${b.name} against ${a.name}: main-thread CPU per second ×${(b.main / b.seconds / (a.main / a.seconds)).toFixed(2)}, per trained epoch ×${(b.main / b.epochs / (a.main / a.epochs)).toFixed(2)}; epochs per second ×${(b.epochs / b.seconds / (a.epochs / a.seconds)).toFixed(2)}`,
      );
    }
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
