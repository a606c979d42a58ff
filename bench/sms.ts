/**
 * `npm run bench:sms`: the Sparse Model Soups reproduction, through the service's HTTP API.
 *
 * Starts the built service as a child process (fresh DATA_DIR, embedded PGlite, WORKERS=2), pretrains
 * one dense model per seed on Fashion-MNIST, then for every goal sparsity S and seed runs, from that
 * dense model, T prune–retrain phases of
 *   - IMP            (one candidate per phase, E retraining epochs),
 *   - IMP 3×         (one candidate, m·E epochs: the same compute as SMS),
 *   - SMS m uniform  (m candidates per phase differing in seed = batch order, uniform soup),
 *   - SMS m greedy   (the same, greedy soup on the validation split, `>=`),
 * all submitted at once so the worker pool stays busy. It prints the machine and the tables (mean ±
 * sample standard deviation over seeds of each phase's test accuracy), checks the paper's claims,
 * writes docs/sms-results.md and the plots (report.svg of an SMS run with its IMP / IMP 3× runs as
 * baselines) to docs/.
 *
 * Environment (defaults fit two shared cores in about 20–30 minutes; see docs/sms-results.md):
 *   SMS_ARCH             lenet-300-100 | cnn-bn | resnet-small     (lenet-300-100)
 *   SMS_SEEDS            a count n (seeds 0…n−1) or a comma list      (3)
 *   SMS_GOALS            comma list of goal sparsities               (0.9,0.98)
 *   SMS_PHASES           T                                           (3)
 *   SMS_EPOCHS           retraining epochs per candidate and phase  (0.5; fractions allowed)
 *   SMS_PRETRAIN_EPOCHS  dense pretraining epochs                   (3)
 *   SMS_M                candidates per SMS phase                   (3)
 *   SMS_LR               peak learning rate, linear decay (LLR) with 10 % warm-up, SGD momentum 0.9 (0.1)
 *   SMS_WORKERS          the service's worker threads               (2)
 *   SMS_OUT              where results go, relative to the repo     (docs)
 *   SMS_KEEP_DATA=1      keep the service's data folder (printed)
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { machineInfo, machineLine } from './machine.js';
import { client, type Client, FINISHED, type Run, type RunReport, sleep } from './sms-client.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DATASET = 'fashion-mnist';

interface Config {
  arch: string;
  seeds: number[];
  goals: number[];
  phases: number;
  epochs: number;
  pretrainEpochs: number;
  m: number;
  learningRate: number;
  workers: number;
  outDir: string;
}

type Method = 'imp' | 'imp3' | 'sms-uniform' | 'sms-greedy';
const METHODS: Method[] = ['imp', 'imp3', 'sms-uniform', 'sms-greedy'];

interface Job {
  method: Method;
  goal: number;
  seed: number;
  runId: string;
  run?: Run;
  report?: RunReport;
  phaseSeconds?: number[];
}

function readConfig(): Config {
  const num = (name: string, fallback: number, ok: (v: number) => boolean = (v) => v > 0) => {
    const raw = process.env[name];
    if (raw === undefined || raw === '') return fallback;
    const v = Number(raw);
    if (!Number.isFinite(v) || !ok(v)) throw new Error(`${name}="${raw}" is not valid`);
    return v;
  };
  const seedsRaw = process.env.SMS_SEEDS ?? '3';
  const seeds = seedsRaw.includes(',')
    ? seedsRaw.split(',').filter((x) => x.trim() !== '').map((x) => Number(x))
    : Array.from({ length: Number(seedsRaw) }, (_, i) => i);
  if (!seeds.length || seeds.some((s) => !Number.isInteger(s) || s < 0 || s > 100_000)) throw new Error(`SMS_SEEDS="${seedsRaw}": give a count or a comma list of integers`);
  const goals = (process.env.SMS_GOALS ?? '0.9,0.98').split(',').map((x) => Number(x));
  if (!goals.length || goals.some((g) => !(g > 0 && g < 1))) throw new Error(`SMS_GOALS="${process.env.SMS_GOALS}": sparsities in (0, 1), comma-separated`);
  return {
    arch: process.env.SMS_ARCH ?? 'lenet-300-100',
    seeds,
    goals,
    phases: num('SMS_PHASES', 3, (v) => Number.isInteger(v) && v >= 1 && v <= 50),
    epochs: num('SMS_EPOCHS', 0.5),
    pretrainEpochs: num('SMS_PRETRAIN_EPOCHS', 3),
    m: num('SMS_M', 3, (v) => Number.isInteger(v) && v >= 2 && v <= 16),
    learningRate: num('SMS_LR', 0.1),
    workers: num('SMS_WORKERS', 2, (v) => Number.isInteger(v) && v >= 1),
    outDir: resolve(ROOT, process.env.SMS_OUT ?? 'docs'),
  };
}

// ---------------------------------------------------------------- the service as a child process

async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

/**
 * The built service as a child process on a fresh data folder. If it stops while runs are in
 * flight (a signal from outside, a crash), `restart` starts it again on the same folder and port:
 * runs are durable, so they continue where they stopped.
 */
class Service {
  readonly dataDir = mkdtempSync(join(tmpdir(), 'sparsoup-bench-sms-'));
  url = '';
  restarts = 0;
  private child: ChildProcess | null = null;
  private port = 0;
  private readonly lines: string[] = [];
  private readonly log = (() => {
    mkdirSync(join(ROOT, '.bench'), { recursive: true });
    return createWriteStream(join(ROOT, '.bench', 'sms-service.log'));
  })();

  constructor(private readonly workers: number) {}

  get alive(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** How the last child ended, for messages. */
  get ended(): string {
    return this.child ? `exit code ${this.child.exitCode}, signal ${this.child.signalCode}` : 'not started';
  }

  tail(): string {
    return this.lines.slice(-30).join('\n');
  }

  async start(): Promise<void> {
    this.port ||= await freePort();
    const child = spawn(process.execPath, [join(ROOT, 'dist/src/main.js')], {
      cwd: ROOT,
      env: { ...process.env, DATABASE_URL: '', DATA_DIR: this.dataDir, WORKERS: String(this.workers), PORT: String(this.port), HOST: '127.0.0.1', LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn', API_KEYS: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    const keep = (c: Buffer) => {
      this.log.write(c);
      this.lines.push(...c.toString().split('\n').filter(Boolean));
      if (this.lines.length > 200) this.lines.splice(0, this.lines.length - 200);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    this.url = `http://127.0.0.1:${this.port}`;
    const deadline = Date.now() + 120_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`the service exited (${child.exitCode}):\n${this.tail()}`);
      try {
        if ((await fetch(`${this.url}/health`)).ok) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`the service did not answer /health in 120 s:\n${this.tail()}`);
      await sleep(300);
    }
  }

  async restart(): Promise<void> {
    this.restarts++;
    await this.stop(false);
    await this.start();
  }

  stop(closeLog = true): Promise<void> {
    return new Promise((res) => {
      const child = this.child;
      const done = () => {
        if (closeLog) this.log.end();
        res();
      };
      if (!child || child.exitCode !== null || child.signalCode !== null) return done();
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      child.once('exit', () => {
        clearTimeout(timer);
        done();
      });
      child.kill('SIGTERM');
    });
  }
}

// ---------------------------------------------------------------- statistics

const finite = (xs: (number | null | undefined)[]) => xs.filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
const meanOf = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN);
const sdOf = (xs: number[]) => {
  if (xs.length < 2) return Number.NaN;
  const m = meanOf(xs);
  return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1));
};
const fmt = (xs: number[]) => {
  if (!xs.length) return 'n/a';
  const m = (meanOf(xs) * 100).toFixed(2);
  return xs.length > 1 ? `${m} ± ${(sdOf(xs) * 100).toFixed(2)}` : m;
};
const num4 = (x: number) => String(Number(x.toFixed(4)));
const pp = (x: number) => `${x >= 0 ? '+' : '−'}${Math.abs(x * 100).toFixed(2)} pp`;

interface Verdict {
  text: string;
  holds: boolean | null;
}

/** Paired differences: "yes" when the mean is positive and more than two standard errors from 0. */
function verdict(diffs: number[]): Verdict {
  const n = diffs.length;
  if (!n) return { text: 'no data', holds: null };
  const d = meanOf(diffs);
  const wins = diffs.filter((x) => x > 0).length;
  const ties = diffs.filter((x) => x === 0).length;
  const se = n > 1 ? sdOf(diffs) / Math.sqrt(n) : Number.NaN;
  const stats = `mean ${pp(d)}${n > 1 ? ` (± ${(se * 100).toFixed(2)} pp s.e.)` : ''}, better in ${wins}/${n}${ties ? `, tied in ${ties}` : ''}`;
  if (n < 2) return { text: `${d > 0 ? 'yes' : 'no'} (one pair only): ${stats}`, holds: d > 0 };
  if (d > 0 && d > 2 * se) return { text: `**yes**: ${stats}`, holds: true };
  if (d < 0 && -d > 2 * se) return { text: `**no, the opposite**: ${stats}`, holds: false };
  return { text: `**not shown** (within noise): ${stats}`, holds: null };
}

// ---------------------------------------------------------------- the experiment

const LABEL: Record<Method, (m: number) => string> = {
  imp: () => 'IMP',
  imp3: (m) => `IMP ${m}×`,
  'sms-uniform': (m) => `SMS m=${m} uniform`,
  'sms-greedy': (m) => `SMS m=${m} greedy`,
};

function runBody(method: Method, cfg: Config, denseId: string, goal: number, seed: number) {
  // Candidate seeds are disjoint across experiment seeds; IMP's seed is SMS's first candidate's.
  const training = { seed: 1000 * seed + 1, epochs: cfg.epochs, batchSize: 128, optimizer: 'sgd', momentum: 0.9, learningRate: cfg.learningRate, schedule: 'linear', warmupFraction: 0.1, weightDecay: 1e-4 };
  const common = { modelId: denseId, datasetId: DATASET, goalSparsity: goal, phases: cfg.phases, pruning: { method: 'magnitude-global' }, training };
  switch (method) {
    case 'imp':
      return { kind: 'imp', ...common };
    case 'imp3':
      return { kind: 'imp', ...common, epochsMultiplier: cfg.m };
    case 'sms-uniform':
      return { kind: 'sms', ...common, m: cfg.m, vary: 'seed', soup: { method: 'uniform' } };
    case 'sms-greedy':
      return { kind: 'sms', ...common, m: cfg.m, vary: 'seed', soup: { method: 'greedy', comparison: '>=' } };
  }
}

/** Polls until every run is finished, printing a status line with an ETA (by retraining epochs done). */
async function waitAll(api: Client, service: Service, ids: string[], plannedEpochs: number, t0: number): Promise<Map<string, Run>> {
  const done = new Map<string, Run>();
  let lastLine = 0;
  let failures = 0;
  for (;;) {
    if (!service.alive) {
      if (service.restarts >= 3) throw new Error(`the service stopped (${service.ended}) a fourth time`);
      console.log(`the service stopped (${service.ended}); restarting it on the same data folder, the runs continue where they stopped`);
      await service.restart();
    }
    let epochsDone = 0;
    let running = 0;
    for (const id of ids) {
      const run =
        done.get(id) ??
        (await api.json<Run>('GET', `/runs/${id}`).catch((err) => {
          // Unreachable: restarted above once the child has exited; give up after two minutes of it.
          if (++failures > 24) throw err;
          return null;
        }));
      if (!run) break;
      failures = 0;
      if (FINISHED.includes(run.status)) done.set(id, run);
      for (const c of run.candidates) {
        if (c.status === 'succeeded') epochsDone += c.config.epochs;
        else if (c.status === 'running') {
          running++;
          if (c.progress?.steps) epochsDone += (c.config.epochs * c.progress.step) / c.progress.steps;
        }
      }
    }
    const elapsedS = (Date.now() - t0) / 1000;
    if (done.size === ids.length) return done;
    if (Date.now() - lastLine > 30_000) {
      lastLine = Date.now();
      const frac = epochsDone / plannedEpochs;
      const eta = frac > 0.02 ? ` · ETA ~${Math.round((elapsedS * (1 - frac)) / frac / 60)} min` : '';
      console.log(
        `[${fmtDuration(elapsedS)}] runs ${done.size}/${ids.length} finished · retraining ${epochsDone.toFixed(1)}/${plannedEpochs.toFixed(1)} epochs (${(frac * 100).toFixed(0)} %) · ${running} candidates training${eta} · load ${loadavg()[0].toFixed(1)}`,
      );
    }
    await sleep(5000);
  }
}

/** Phase wall times from the run's event stream (pruned → succeeded, queueing behind other runs included). */
async function phaseSeconds(api: Client, runId: string): Promise<number[]> {
  const start = new Map<number, number>();
  const out: number[] = [];
  await api.events(runId, (e) => {
    const t = Date.parse(String(e.data.at));
    if (e.type === 'phase-pruned') start.set(Number(e.data.phase), t);
    if (e.type === 'phase-succeeded' && start.has(Number(e.data.phase))) out[Number(e.data.phase) - 1] = (t - start.get(Number(e.data.phase))!) / 1000;
  });
  return out;
}

function fmtDuration(s: number): string {
  const m = Math.floor(s / 60);
  return m >= 60 ? `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min` : `${m}:${String(Math.round(s % 60)).padStart(2, '0')}`;
}

async function main(): Promise<void> {
  const cfg = readConfig();
  const info = machineInfo();
  const t0 = Date.now();
  const started = new Date();
  console.log('# bench:sms — Sparse Model Soups against IMP through the HTTP API');
  console.log(machineLine(info));
  console.log(
    `config: ${cfg.arch} on ${DATASET}; seeds ${cfg.seeds.join(',')}; goals ${cfg.goals.join(', ')}; T = ${cfg.phases}; m = ${cfg.m}; retraining ${cfg.epochs} epochs per candidate and phase (IMP ${cfg.m}×: ${num4(cfg.epochs * cfg.m)}); dense pretraining ${cfg.pretrainEpochs} epochs; SGD momentum 0.9, lr ${cfg.learningRate} linear decay with 10 % warm-up, batch 128, weight decay 1e-4; WORKERS=${cfg.workers}`,
  );
  const service = new Service(cfg.workers);
  await service.start();
  const stopAll = async () => {
    await service.stop();
    if (process.env.SMS_KEEP_DATA) console.log(`service data kept in ${service.dataDir}`);
    else rmSync(service.dataDir, { recursive: true, force: true });
  };
  process.once('SIGINT', () => {
    console.log('\ninterrupted: stopping the service');
    stopAll().finally(() => process.exit(130));
  });
  try {
    const api = client(service.url, '');
    const health = await api.json<{ backend?: { name?: string } }>('GET', '/health');
    const backend = health.backend?.name ?? 'unknown';
    console.log(`service: ${service.url} (backend ${backend}, data ${service.dataDir})\n`);

    // 1. One dense model per seed.
    const pre = new Map<number, string>();
    for (const seed of cfg.seeds) {
      const template = await api.json<{ id: string }>('POST', '/models/templates', { architecture: cfg.arch, datasetId: DATASET, seed });
      const run = await api.json<Run>('POST', '/runs', {
        kind: 'train',
        modelId: template.id,
        datasetId: DATASET,
        training: { seed, epochs: cfg.pretrainEpochs, batchSize: 128, momentum: 0.9, learningRate: cfg.learningRate, schedule: 'linear', weightDecay: 1e-4 },
      });
      pre.set(seed, run.id);
    }
    const pretrained = await waitAll(api, service, [...pre.values()], cfg.seeds.length * cfg.pretrainEpochs, t0);
    const dense = new Map<number, { modelId: string; test: number; seconds: number }>();
    for (const [seed, id] of pre) {
      const run = pretrained.get(id)!;
      if (run.status !== 'succeeded') throw new Error(`pretraining seed ${seed} ${run.status}: ${run.error}`);
      const c = run.candidates[0];
      dense.set(seed, { modelId: c.resultModelId!, test: c.testAccuracy ?? Number.NaN, seconds: (c.metrics?.train?.durationMs ?? 0) / 1000 });
      console.log(`dense seed ${seed}: test accuracy ${((c.testAccuracy ?? 0) * 100).toFixed(2)} % (${((c.metrics?.train?.durationMs ?? 0) / 1000).toFixed(0)} s training, ${(c.metrics?.train?.samplesPerSecond ?? 0).toFixed(0)} samples/s)`);
    }
    const pretrainWall = (Date.now() - t0) / 1000;

    // 2. Every (goal, seed, method) run at once.
    const jobs: Job[] = [];
    for (const goal of cfg.goals)
      for (const seed of cfg.seeds)
        for (const method of METHODS) {
          const run = await api.json<Run>('POST', '/runs', runBody(method, cfg, dense.get(seed)!.modelId, goal, seed));
          jobs.push({ method, goal, seed, runId: run.id });
        }
    const planned = cfg.goals.length * cfg.seeds.length * cfg.phases * cfg.epochs * (1 + cfg.m + 2 * cfg.m);
    console.log(`\n${jobs.length} runs submitted (${planned.toFixed(1)} retraining epochs in all)`);
    const t1 = Date.now();
    const finished = await waitAll(api, service, jobs.map((j) => j.runId), planned, t1);
    const runsWall = (Date.now() - t1) / 1000;
    for (const j of jobs) {
      j.run = finished.get(j.runId)!;
      if (j.run.status !== 'succeeded') throw new Error(`${LABEL[j.method](cfg.m)} S=${j.goal} seed ${j.seed} (run ${j.runId}) ${j.run.status}: ${j.run.error}`);
      j.report = await api.json<RunReport>('GET', `/runs/${j.runId}/report`);
      j.phaseSeconds = await phaseSeconds(api, j.runId);
    }

    // 3. Tables, claims, plots.
    const md: string[] = [];
    const say = (line = '') => {
      console.log(line);
      md.push(line);
    };
    const phaseOf = (j: Job, k: number) => j.report!.phases.find((p) => p.index === k)!;
    const sel = (method: Method, goal: number) => jobs.filter((j) => j.method === method && j.goal === goal);
    const last = cfg.phases;
    const candidateStats = jobs.flatMap((j) => j.run!.candidates.map((c) => ({ j, c })));
    const sps = finite(candidateStats.map(({ c }) => c.metrics?.train?.samplesPerSecond));
    const secPerEpoch = finite(candidateStats.map(({ c }) => (c.metrics?.train?.durationMs ?? Number.NaN) / 1000 / (c.config.epochs || Number.NaN)));
    const candWall = finite(candidateStats.map(({ c }) => (c.startedAt && c.finishedAt ? (Date.parse(c.finishedAt) - Date.parse(c.startedAt)) / 1000 : Number.NaN)));

    md.push('# Sparse Model Soups on Fashion-MNIST: `npm run bench:sms`', '');
    md.push(`Produced by \`npm run bench:sms\` (bench/sms.ts) on ${started.toISOString().slice(0, 16).replace('T', ' ')} UTC. All numbers are test accuracy on the 10,000-image Fashion-MNIST test split, in %.`, '');
    say('## Setup');
    say();
    say(`- ${machineLine(info)}; TensorFlow.js backend \`${backend}\`, service WORKERS=${cfg.workers} (one training thread each).`);
    say(`- Model \`${cfg.arch}\`, dataset \`${DATASET}\` (54,000 train / 6,000 val / 10,000 test). Seeds ${cfg.seeds.join(', ')}: each seed pretrains its own dense model (template seed and batch order), ${cfg.pretrainEpochs} epochs; dense test accuracy ${fmt(cfg.seeds.map((s) => dense.get(s)!.test))}.`);
    say(`- Goal sparsities ${cfg.goals.join(', ')}, T = ${cfg.phases} phases, global magnitude pruning of all kernels (phase k prunes to 1 − (1 − S)^(k/T)).`);
    say(`- Retraining per candidate and phase: ${cfg.epochs} epochs (IMP ${cfg.m}×: ${num4(cfg.epochs * cfg.m)}), SGD momentum 0.9, batch 128, weight decay 1e-4, peak lr ${cfg.learningRate} with linear decay (LLR) and 10 % warm-up. SMS: m = ${cfg.m} candidates per phase differing in seed (batch order), merged uniformly or greedily (greedy on the validation split, \`>=\`), BN recalibration on (no effect on models without BN).`);
    say(`- Environment: \`SMS_ARCH=${cfg.arch} SMS_SEEDS=${cfg.seeds.join(',')}${cfg.seeds.length === 1 ? ',' : ''} SMS_GOALS=${cfg.goals.join(',')} SMS_PHASES=${cfg.phases} SMS_EPOCHS=${cfg.epochs} SMS_PRETRAIN_EPOCHS=${cfg.pretrainEpochs} SMS_M=${cfg.m} SMS_LR=${cfg.learningRate} SMS_WORKERS=${cfg.workers}\`.`);
    say(
      `- Time: pretraining ${fmtDuration(pretrainWall)}, the ${jobs.length} IMP/SMS runs ${fmtDuration(runsWall)} (all at once on ${cfg.workers} workers), ${fmtDuration((Date.now() - t0) / 1000)} in all. Training throughput per worker ${sps.length ? `${meanOf(sps).toFixed(0)} samples/s (${meanOf(secPerEpoch).toFixed(1)} s per epoch)` : 'n/a'}; a candidate (training, BN recalibration, val + test evaluation) took ${meanOf(candWall).toFixed(1)} s of wall time on average; load average at the end ${loadavg().map((x) => x.toFixed(1)).join(' / ')} on ${info.cores} cores (shared with other work).`,
    );
    if (service.restarts) say(`- The service stopped ${service.restarts} time${service.restarts > 1 ? 's' : ''} during the bench (stopped from outside) and was restarted on the same data folder; the runs resumed where they were.`);
    for (const method of METHODS) {
      const ps = jobs.filter((j) => j.method === method).flatMap((j) => j.phaseSeconds ?? []);
      if (ps.length) say(`  - ${LABEL[method](cfg.m)}: a phase took ${meanOf(ps).toFixed(0)} s of wall time on average (min ${Math.min(...ps).toFixed(0)} s, queueing behind the other runs included).`);
    }
    say();

    say('## Final phase (the goal sparsity)');
    say();
    say(`Mean ± sample standard deviation over ${cfg.seeds.length} seed${cfg.seeds.length > 1 ? 's' : ''}. "Best candidate" is the highest test accuracy among a phase's m candidates (picked by test accuracy, so a baseline no real pipeline could use).`);
    say();
    say(`| goal S | ${METHODS.map((m) => LABEL[m](cfg.m)).join(' | ')} | best candidate (uniform run) | best candidate (greedy run) |`);
    say(`| --- | ${METHODS.map(() => '---:').join(' | ')} | ---: | ---: |`);
    for (const goal of cfg.goals) {
      const cells = METHODS.map((m) => fmt(finite(sel(m, goal).map((j) => phaseOf(j, last).result?.testAccuracy))));
      const bestU = fmt(finite(sel('sms-uniform', goal).map((j) => phaseOf(j, last).candidateBest.testAccuracy)));
      const bestG = fmt(finite(sel('sms-greedy', goal).map((j) => phaseOf(j, last).candidateBest.testAccuracy)));
      say(`| ${goal} | ${cells.join(' | ')} | ${bestU} | ${bestG} |`);
    }
    say();

    say('## Per phase');
    say();
    for (const goal of cfg.goals) {
      const sp = sel('imp', goal)[0].report!.phases.map((p) => `phase ${p.index} (${(p.sparsity * 100).toFixed(1)} %)`);
      say(`### S = ${goal}`);
      say();
      say(`| method | ${sp.join(' | ')} |`);
      say(`| --- | ${sp.map(() => '---:').join(' | ')} |`);
      const row = (label: string, pick: (j: Job, k: number) => number | null | undefined, method: Method) => {
        const cells: string[] = [];
        for (let k = 1; k <= cfg.phases; k++) cells.push(fmt(finite(sel(method, goal).map((j) => pick(j, k)))));
        say(`| ${label} | ${cells.join(' | ')} |`);
      };
      row('IMP', (j, k) => phaseOf(j, k).result?.testAccuracy, 'imp');
      row(`IMP ${cfg.m}×`, (j, k) => phaseOf(j, k).result?.testAccuracy, 'imp3');
      for (const method of ['sms-uniform', 'sms-greedy'] as const) {
        row(`${LABEL[method](cfg.m)}: soup`, (j, k) => phaseOf(j, k).result?.testAccuracy, method);
        row(`… best candidate`, (j, k) => phaseOf(j, k).candidateBest.testAccuracy, method);
        row(`… mean candidate`, (j, k) => phaseOf(j, k).candidateMean.testAccuracy, method);
      }
      const acc = (j: Job) => j.report!.phases.map((p) => (p.soup?.weights ?? []).filter((w) => w > 0).length);
      const greedySizes = sel('sms-greedy', goal).map(acc);
      if (greedySizes.length) {
        const sizes = Array.from({ length: cfg.phases }, (_, k) => greedySizes.map((g) => g[k]).join('/'));
        say(`| greedy: candidates accepted (per seed) | ${sizes.join(' | ')} |`);
      }
      say();
    }

    say("## The paper's claims");
    say();
    say('Each difference is paired (same seed, goal and phase, so the same dense model; the soup against the best candidate of its own phase); "yes" means the mean difference is positive and more than two standard errors from zero.');
    say();
    const claims: { claim: string; v: Verdict }[] = [];
    for (const method of ['sms-uniform', 'sms-greedy'] as const) {
      const all: number[] = [];
      const finals: number[] = [];
      for (const j of jobs.filter((x) => x.method === method))
        for (const p of j.report!.phases) {
          if (p.result?.testAccuracy == null || p.candidateBest.testAccuracy == null) continue;
          const d = p.result.testAccuracy - p.candidateBest.testAccuracy;
          all.push(d);
          if (p.index === last) finals.push(d);
        }
      claims.push({ claim: `${LABEL[method](cfg.m)}: the soup beats the best candidate of its phase (all phases, goals, seeds)`, v: verdict(all) });
      claims.push({ claim: `${LABEL[method](cfg.m)}: … at the final phase only`, v: verdict(finals) });
    }
    for (const method of ['sms-uniform', 'sms-greedy'] as const)
      for (const base of ['imp', 'imp3'] as const)
        for (const goal of cfg.goals) {
          const diffs: number[] = [];
          const finals: number[] = [];
          for (const seed of cfg.seeds) {
            const a = jobs.find((j) => j.method === method && j.goal === goal && j.seed === seed)!;
            const b = jobs.find((j) => j.method === base && j.goal === goal && j.seed === seed)!;
            for (let k = 1; k <= cfg.phases; k++) {
              const x = phaseOf(a, k).result?.testAccuracy;
              const y = phaseOf(b, k).result?.testAccuracy;
              if (x == null || y == null) continue;
              diffs.push(x - y);
              if (k === last) finals.push(x - y);
            }
          }
          claims.push({ claim: `${LABEL[method](cfg.m)} beats ${LABEL[base](cfg.m)} at S = ${goal}, final phase`, v: verdict(finals) });
          claims.push({ claim: `${LABEL[method](cfg.m)} beats ${LABEL[base](cfg.m)} at S = ${goal}, every phase pooled`, v: verdict(diffs) });
        }
    say('| claim | verdict |');
    say('| --- | --- |');
    for (const c of claims) say(`| ${c.claim} | ${c.v.text} |`);
    say();

    // Plots: an SMS run (uniform, first seed) with its IMP / IMP m× / greedy runs as baselines.
    mkdirSync(cfg.outDir, { recursive: true });
    const plots: string[] = [];
    const top = Math.max(...cfg.goals);
    for (const goal of cfg.goals) {
      const of = (m: Method) => jobs.find((j) => j.method === m && j.goal === goal && j.seed === cfg.seeds[0])!.runId;
      const svg = await api.text(`/runs/${of('sms-uniform')}/report.svg?baselineIds=${[of('imp'), of('imp3'), of('sms-greedy')].join(',')}`);
      const file = join(cfg.outDir, goal === top ? 'sms-plot.svg' : `sms-plot-${goal}.svg`);
      writeFileSync(file, svg);
      plots.push(`- S = ${goal}, seed ${cfg.seeds[0]}: [${relative(cfg.outDir, file)}](${relative(cfg.outDir, file)})`);
    }
    say('## Plots');
    say();
    say('Test accuracy against sparsity of one seed: the SMS uniform soup as a line with its candidates as faint dots, IMP, IMP m× and SMS greedy as baselines (`GET /runs/{id}/report.svg?baselineIds=…`).');
    say();
    for (const p of plots) say(p);
    const mdFile = join(cfg.outDir, 'sms-results.md');
    writeFileSync(mdFile, `${md.join('\n')}\n`);
    writeFileSync(join(ROOT, '.bench', 'sms-results.json'), JSON.stringify({ config: cfg, machine: info, backend, dense: Object.fromEntries(dense), jobs: jobs.map(({ run: _run, ...j }) => j) }, null, 1));
    console.log(`\nwrote ${relative(ROOT, mdFile)}, ${plots.length} plot${plots.length > 1 ? 's' : ''} in ${relative(ROOT, cfg.outDir)}/ and .bench/sms-results.json`);
  } catch (err) {
    console.error(`\nbench:sms failed: ${err instanceof Error ? err.message : String(err)}`);
    console.error(`service output (last lines):\n${service.tail()}`);
    process.exitCode = 1;
  } finally {
    await stopAll();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
