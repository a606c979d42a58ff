/**
 * The service's resident memory during an SMS retrain of `cnn-bn` on Fashion-MNIST with m = 3
 * candidates (issue 16's goal: peak ≤ 800 MB).
 *
 * Starts the built service as a child process (fresh DATA_DIR, embedded PGlite, WORKERS=2), creates
 * a `cnn-bn` template, then one SMS run (one phase to 90 % sparsity, m = 3 seeds, a short retraining
 * budget: the peak comes while the candidates train and the soup is scored, not late) and samples
 * the service's process tree every 100 ms: VmRSS of each process (its threads share it) summed over
 * the tree, and the kernel's own peak (VmHWM). Idle is the service after /health and after the
 * template (its first worker task loaded the backend); the peak is over the run.
 *
 * The service also writes `process.memoryUsage()` of its main thread by phase (a preload,
 * bench/rss-probe.mjs), so the report can say what the main thread holds.
 *
 *   npm run bench:rss [-- --epochs 0.1 --workers 2 --service /path/to/another/checkout]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { printMachine } from './machine.js';
import { client, freePort, type Run, sleep, waitForRun } from './sms-client.js';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(here, here.endsWith(join('dist', 'bench')) ? '../..' : '..');
const MiB = 2 ** 20;
const GOAL_BYTES = 800e6;
const load = () => os.loadavg().map((l) => l.toFixed(1)).join(' ');

function status(pid: number): { rss: number; hwm: number } | null {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? 0) * 1024;
    return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
  } catch {
    return null;
  }
}

/** The process and its descendants (children of any of its threads). */
function tree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    let tasks: string[] = [];
    try {
      tasks = readdirSync(`/proc/${out[i]}/task`);
    } catch {
      continue;
    }
    for (const t of tasks) {
      try {
        for (const c of readFileSync(`/proc/${out[i]}/task/${t}/children`, 'utf8').split(/\s+/).filter(Boolean)) out.push(Number(c));
      } catch {
        // the thread ended
      }
    }
  }
  return out;
}

function sample(pid: number): { rss: number; hwm: number; processes: number } {
  let rss = 0;
  let hwm = 0;
  const pids = tree(pid);
  for (const p of pids) {
    const s = status(p);
    if (s) {
      rss += s.rss;
      hwm += s.hwm;
    }
  }
  return { rss, hwm, processes: pids.length };
}

async function main() {
  const args = process.argv.slice(2);
  const arg = (name: string, fallback: string) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : fallback;
  };
  const epochs = Number(arg('epochs', '0.1'));
  const workers = Number(arg('workers', '2'));
  // Another build of the service to measure in the same conditions (a checkout's root with dist/ built).
  const serviceRoot = resolve(arg('service', ROOT));
  console.log(`# bench:rss — service RSS during an SMS retrain, cnn-bn on Fashion-MNIST, m = 3, WORKERS=${workers}, ${epochs} epochs per candidate, service ${serviceRoot}`);
  printMachine();
  const dataDir = mkdtempSync(join(os.tmpdir(), 'sparsoup-bench-rss-'));
  const probeFile = join(dataDir, 'memory.jsonl');
  const port = await freePort();
  const child: ChildProcess = spawn(process.execPath, ['--import', pathToFileURL(join(ROOT, 'bench/rss-probe.mjs')).href, join(serviceRoot, 'dist/src/main.js')], {
    cwd: serviceRoot,
    env: { ...process.env, DATABASE_URL: '', DATA_DIR: dataDir, WORKERS: String(workers), PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn', API_KEYS: '', RSS_PROBE_FILE: probeFile },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const pid = child.pid!;
  let peak = { rss: 0, at: '' };
  let phase = 'start-up';
  const phases = new Map<string, number>();
  const timer = setInterval(() => {
    const s = sample(pid);
    if (s.rss > peak.rss) peak = { rss: s.rss, at: phase };
    phases.set(phase, Math.max(phases.get(phase) ?? 0, s.rss));
  }, 100);
  const api = client(`http://127.0.0.1:${port}`);
  try {
    for (let t0 = Date.now(); ; await sleep(300)) {
      if (child.exitCode !== null) throw new Error(`the service exited (${child.exitCode})`);
      if (Date.now() - t0 > 120_000) throw new Error('the service did not answer /health in 120 s');
      if (await fetch(`${api.url}/health`).then((r) => r.ok, () => false)) break;
    }
    await sleep(2000);
    const idleStart = sample(pid);
    phase = 'template';
    const template = await api.json<{ id: string }>('POST', '/models/templates', { architecture: 'cnn-bn', datasetId: 'fashion-mnist', seed: 1 });
    await sleep(2000);
    const idle = sample(pid);
    // The kernel's peak from here on is the run's: start-up (a new PGlite database is initialised in a
    // thread that exits) and the template come before it. Writing 5 to clear_refs resets VmHWM.
    for (const p of tree(pid)) {
      try {
        writeFileSync(`/proc/${p}/clear_refs`, '5');
      } catch {
        // the process ended
      }
    }
    phase = 'run';
    const t0 = performance.now();
    const body = {
      kind: 'sms',
      modelId: template.id,
      datasetId: 'fashion-mnist',
      goalSparsity: 0.9,
      phases: 1,
      m: 3,
      vary: 'seed',
      pruning: { method: 'magnitude-global' },
      training: { seed: 1, epochs, batchSize: 128, learningRate: 0.05, momentum: 0.9, schedule: 'linear' },
      soup: { method: 'uniform' },
    };
    const run = await api.json<Run>('POST', '/runs', body);
    const done = await waitForRun(api, run.id, 500);
    const seconds = (performance.now() - t0) / 1000;
    phase = 'after';
    await sleep(1000);
    const after = sample(pid);
    clearInterval(timer);
    const hwm = sample(pid).hwm;
    if (done.status !== 'succeeded') throw new Error(`the run ${done.status}: ${done.error}`);
    const mb = (b: number) => `${(b / MiB).toFixed(0)} MiB (${(b / 1e6).toFixed(0)} MB)`;
    console.log(`run ${done.status} in ${seconds.toFixed(0)} s; load after ${load()}`);
    console.log('');
    console.log('| what | RSS of the service process tree |');
    console.log('| --- | ---: |');
    console.log(`| idle after /health | ${mb(idleStart.rss)} |`);
    console.log(`| idle after the template (backend loaded in a worker) | ${mb(idle.rss)} |`);
    for (const [p, v] of phases) if (p !== 'after') console.log(`| peak sampled, ${p} | ${mb(v)} |`);
    console.log(`| after the run | ${mb(after.rss)} |`);
    console.log(`| VmHWM (the kernel's peak since the run started) | ${mb(hwm)} |`);
    console.log('');
    const runPeak = Math.max(phases.get('run') ?? 0, hwm);
    console.log(`GOAL peak RSS during the retrain ≤ 800 MB: ${runPeak <= GOAL_BYTES ? 'MET' : 'NOT met'} (${mb(runPeak)}, sampled peak during: ${peak.at}; idle after /health ${mb(idleStart.rss)})`);
    try {
      const lines = readFileSync(probeFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
      const top = lines.reduce((a, l) => (l.rss > a.rss ? l : a), lines[0]);
      console.log(`main thread at the sampled peak (process.memoryUsage, MiB): ${Object.entries(top).filter(([k]) => k !== 't').map(([k, v]) => `${k} ${(v / MiB).toFixed(0)}`).join(', ')}`);
    } catch {
      console.log('(no main-thread memory samples)');
    }
  } finally {
    clearInterval(timer);
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    rmSync(dataDir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
