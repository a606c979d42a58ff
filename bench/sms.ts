/**
 * `npm run bench:sms`: the Sparse Model Soups reproduction, through the service's HTTP API.
 *
 * Starts the built service as a child process (fresh DATA_DIR, embedded PGlite, WORKERS=2), pretrains
 * one dense model per seed on Fashion-MNIST (test and val accuracy after every epoch: the plateau
 * curve), then, from that dense model, for every retraining length E, goal sparsity S and seed, runs
 * T prune–retrain phases of
 *   - IMP            (one candidate per phase, E retraining epochs),
 *   - IMP m×         (one candidate, m·E epochs: the same compute as SMS),
 *   - SMS m uniform  (m candidates per phase differing in seed = batch order, uniform soup),
 *   - SMS m greedy   (the same, greedy soup on the validation split, `>=`),
 * and, at one E (SMS_VARIANTS_AT), SMS m uniform with candidates differing by weight decay or by
 * retraining length instead of seed (the SMS code's `ensemble_by`). Each E is one stage; the next
 * stage is submitted as soon as the pool would otherwise idle, and docs/sms-results.md (with
 * sms-results.json) is rewritten after every finished stage, so a stopped bench leaves the stages
 * it finished. Per phase the tables give the soup, the best and mean candidate, the candidates'
 * prediction ensemble (the ceiling of averaging) and their L2 distance and angle; with more than one
 * E, a crossover table and plot (sms-crossover.svg) at the largest goal; a claims table with paired
 * verdicts at the end.
 *
 * Environment (defaults: today's quick configuration, about 20–30 minutes on two shared cores):
 *   SMS_ARCH             lenet-300-100 | cnn-bn | resnet-small     (lenet-300-100)
 *   SMS_SEEDS            a count n (seeds 0…n−1) or a comma list      (3)
 *   SMS_GOALS            comma list of goal sparsities               (0.9,0.98)
 *   SMS_PHASES           T                                           (3)
 *   SMS_EPOCHS           retraining epochs per candidate and phase; a comma list gives the crossover (0.5)
 *   SMS_PRETRAIN_EPOCHS  dense pretraining epochs                   (3)
 *   SMS_M                candidates per SMS phase                   (3)
 *   SMS_LR               peak learning rate, linear decay (LLR) with 10 % warm-up, SGD momentum 0.9 (0.1)
 *   SMS_ENSEMBLE_BY      extra SMS uniform rows: comma list of weightDecay, epochs (none)
 *   SMS_VARIANTS_AT      the E of those rows                        (the first of SMS_EPOCHS)
 *   SMS_AUGMENT          none | crop-flip, for pretraining and retraining (none)
 *   SMS_TRAIN_LIMIT      pytorch only: train on a stratified subset of this many of the 54,000 train samples,
 *                        the same subset for every seed; val and test stay whole (0: all)
 *   SMS_WORKERS          the service's worker threads               (2)
 *   SMS_OUT              where results go, relative to the repo     (docs)
 *   SMS_TRAINER          builtin | pytorch: with pytorch the runs are external (trainer "external"), SMS_WORKERS
 *                        trainer processes of bench/sms_pytorch.py (Debian's python3 and torch, one thread each,
 *                        with Debian's pthread OpenBLAS as bench:train's peer: apt-get install libopenblas0-pthread)
 *                        do the training, and the dense models are pretrained there too (builtin)
 *   SMS_METHODS          comma list of imp, imp3, sms-uniform, sms-greedy (all)
 *   SMS_KEEP_DATA=1      keep the service's data folder (printed)
 *   SMS_RESUME=1         keep the stages a previous bench finished (SMS_OUT/sms-results.json, same
 *                        configuration but for the list of E): only the missing stages run. The dense
 *                        models are pretrained again (same seeds, so the same models on the built-in
 *                        engine; PyTorch's pretraining was not bit-reproducible across runs here).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { machineInfo, machineLine, openblasPeerEnv } from './machine.js';
import { type Client, client, FINISHED, freePort, type Run, type RunReport, sleep } from './sms-client.js';
import {
  bestAcc,
  CurvePoint,
  Dense,
  deg,
  dist,
  ensAcc,
  finite,
  fmt,
  Job,
  LABEL,
  METHODS,
  Method,
  meanAcc,
  meanOf,
  Phase,
  paired,
  phaseOf,
  pick,
  pp,
  Stage,
  sdOf,
  soupAcc,
  VARIANTS,
  VARY_LABEL,
  Variant,
  Vary,
  Verdict,
  verdict,
} from './sms-stats.js';
import { summarySection } from './sms-summary.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DATASET = 'fashion-mnist';


interface Config {
  arch: string;
  seeds: number[];
  goals: number[];
  phases: number;
  epochs: number[];
  pretrainEpochs: number;
  m: number;
  learningRate: number;
  ensembleBy: Variant[];
  variantsAt: number;
  augment: 'none' | 'crop-flip';
  /** pytorch only: a stratified subset of the train split of this many samples (0: all 54,000); val and test stay whole. */
  trainLimit: number;
  workers: number;
  outDir: string;
  trainer: 'builtin' | 'pytorch';
  methods: Method[];
  /** The dataset the runs name: the built-in one, or (pytorch) the external dataset made at start. */
  datasetId: string;
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
  const epochs = (process.env.SMS_EPOCHS || '0.5').split(',').map((x) => Number(x));
  if (!epochs.length || epochs.some((e) => !(e > 0 && e <= 1000))) throw new Error(`SMS_EPOCHS="${process.env.SMS_EPOCHS}": positive epochs, comma-separated`);
  const ensembleBy = (process.env.SMS_ENSEMBLE_BY ?? '').split(',').filter((x) => x.trim() !== '') as Variant[];
  if (ensembleBy.some((v) => !VARIANTS.includes(v))) throw new Error(`SMS_ENSEMBLE_BY="${process.env.SMS_ENSEMBLE_BY}": a comma list of ${VARIANTS.join(', ')}`);
  const variantsAt = num('SMS_VARIANTS_AT', epochs[0]);
  if (ensembleBy.length && !epochs.includes(variantsAt)) throw new Error(`SMS_VARIANTS_AT=${variantsAt} is not one of SMS_EPOCHS (${epochs.join(', ')})`);
  const trainer = (process.env.SMS_TRAINER || 'builtin') as Config['trainer'];
  if (trainer !== 'builtin' && trainer !== 'pytorch') throw new Error(`SMS_TRAINER="${trainer}": builtin or pytorch`);
  const methods = (process.env.SMS_METHODS || METHODS.join(',')).split(',').map((x) => x.trim()) as Method[];
  if (!methods.length || methods.some((x) => !METHODS.includes(x))) throw new Error(`SMS_METHODS="${process.env.SMS_METHODS}": a comma list of ${METHODS.join(', ')}`);
  if (trainer === 'pytorch' && !['lenet-300-100', 'cnn-bn'].includes(process.env.SMS_ARCH ?? 'lenet-300-100')) throw new Error('SMS_TRAINER=pytorch has lenet-300-100 and cnn-bn (bench/sms_pytorch.py)');
  if (Number(process.env.SMS_TRAIN_LIMIT || 0) > 0 && trainer !== 'pytorch') throw new Error('SMS_TRAIN_LIMIT needs SMS_TRAINER=pytorch (the trainers hold the subset; the built-in dataset is whole)');
  const augment = (process.env.SMS_AUGMENT || 'none') as Config['augment'];
  if (augment !== 'none' && augment !== 'crop-flip') throw new Error(`SMS_AUGMENT="${augment}": none or crop-flip`);
  return {
    arch: process.env.SMS_ARCH ?? 'lenet-300-100',
    seeds,
    goals,
    phases: num('SMS_PHASES', 3, (v) => Number.isInteger(v) && v >= 1 && v <= 50),
    epochs: [...new Set(epochs)],
    pretrainEpochs: num('SMS_PRETRAIN_EPOCHS', 3),
    m: num('SMS_M', 3, (v) => Number.isInteger(v) && v >= 2 && v <= 16),
    learningRate: num('SMS_LR', 0.1),
    ensembleBy,
    variantsAt,
    augment,
    trainLimit: num('SMS_TRAIN_LIMIT', 0, (v) => Number.isInteger(v) && v >= 0),
    workers: num('SMS_WORKERS', 2, (v) => Number.isInteger(v) && v >= 1),
    outDir: resolve(ROOT, process.env.SMS_OUT ?? 'docs'),
    trainer,
    methods,
    datasetId: DATASET,
  };
}

/** The environment that reproduces `cfg`, for the results page. */
function envLine(cfg: Config): string {
  const parts = [
    `SMS_ARCH=${cfg.arch}`,
    `SMS_SEEDS=${cfg.seeds.join(',')}${cfg.seeds.length === 1 ? ',' : ''}`,
    `SMS_GOALS=${cfg.goals.join(',')}`,
    `SMS_PHASES=${cfg.phases}`,
    `SMS_EPOCHS=${cfg.epochs.join(',')}`,
    `SMS_PRETRAIN_EPOCHS=${cfg.pretrainEpochs}`,
    `SMS_M=${cfg.m}`,
    `SMS_LR=${cfg.learningRate}`,
    `SMS_ENSEMBLE_BY=${cfg.ensembleBy.join(',')}`,
    `SMS_VARIANTS_AT=${cfg.variantsAt}`,
    `SMS_AUGMENT=${cfg.augment}`,
    ...(cfg.trainLimit ? [`SMS_TRAIN_LIMIT=${cfg.trainLimit}`] : []),
    `SMS_WORKERS=${cfg.workers}`,
    `SMS_TRAINER=${cfg.trainer}`,
    `SMS_METHODS=${cfg.methods.join(',')}`,
  ];
  return parts.join(' ');
}

// ---------------------------------------------------------------- the service as a child process

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

// ---------------------------------------------------------------- SMS_TRAINER=pytorch

const PYTHON = process.env.SMS_PYTHON ?? '/usr/bin/python3';
const PY_HELPER = join(ROOT, 'bench', 'sms_pytorch.py');

/** bench/sms_pytorch.py pretrain: a dense model trained in PyTorch and uploaded as safetensors. */
function pretrainPytorch(cfg: Config, url: string, seed: number): Promise<Dense> {
  return new Promise((res, rej) => {
    const args = [PY_HELPER, 'pretrain', url, '--arch', cfg.arch, '--seed', String(seed), '--epochs', String(cfg.pretrainEpochs), '--learning-rate', String(cfg.learningRate), '--augment', cfg.augment, '--train-limit', String(cfg.trainLimit)];
    const child = spawn(PYTHON, args, { cwd: ROOT, env: openblasPeerEnv(1), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
    });
    child.stderr.on('data', (c: Buffer) => {
      const text = c.toString();
      err = (err + text).slice(-4000);
      for (const line of text.split('\n')) if (line.startsWith('progress: ')) console.log(`dense seed ${seed}: ${line.slice(10)}`);
    });
    child.once('error', rej);
    child.once('exit', (code) => {
      if (code !== 0) return rej(new Error(`${PYTHON} ${args.join(' ')} exited ${code}:\n${err}`));
      const r = JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as { modelId: string; testAccuracy: number; seconds: number; samplesPerSecond: number; curve?: CurvePoint[]; torch: string; blas: string };
      console.log(`dense seed ${seed} (PyTorch ${r.torch}, BLAS ${r.blas}): test accuracy ${(r.testAccuracy * 100).toFixed(2)} % (${r.seconds.toFixed(0)} s training, ${r.samplesPerSecond.toFixed(0)} samples/s)`);
      res({ modelId: r.modelId, test: r.testAccuracy, seconds: r.seconds, curve: r.curve ?? [] });
    });
  });
}

/** SMS_WORKERS trainer processes (one torch thread each), the peers of the service's worker threads. */
function startTrainers(cfg: Config, url: string): ChildProcess[] {
  mkdirSync(join(ROOT, '.bench'), { recursive: true });
  return Array.from({ length: cfg.workers }, (_, i) => {
    const log = createWriteStream(join(ROOT, '.bench', `sms-trainer-${i}.log`));
    const child = spawn(PYTHON, [PY_HELPER, 'serve', url, '--arch', cfg.arch, '--dataset', DATASET, '--train-limit', String(cfg.trainLimit)], { cwd: ROOT, env: openblasPeerEnv(1), stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    child.once('exit', (code, signal) => {
      if (signal !== 'SIGTERM') console.log(`trainer ${i} exited (${code ?? signal}); see .bench/sms-trainer-${i}.log`);
    });
    return child;
  });
}

const trainingBase = (cfg: Config, seed: number, epochs: number) => ({ seed, epochs, batchSize: 128, optimizer: 'sgd', momentum: 0.9, learningRate: cfg.learningRate, schedule: 'linear', warmupFraction: 0.1, weightDecay: 1e-4, augment: cfg.augment });

/** ensemble_by values: weight decay from 1e-4/4 to 1e-4·4 (geometric); retraining length 0.5E … 1.5E (the same total compute as m·E). */
function variantValues(vary: Variant, m: number, epochs: number): number[] {
  return Array.from({ length: m }, (_, i) => (vary === 'weightDecay' ? Number((1e-4 * 4 ** ((2 * i) / (m - 1) - 1)).toPrecision(3)) : Number((epochs * (0.5 + i / (m - 1))).toFixed(4))));
}

function runBody(job: Omit<Job, 'runId'>, cfg: Config, denseId: string) {
  // Candidate seeds are disjoint across experiment seeds; IMP's seed is SMS's first candidate's.
  const training = trainingBase(cfg, 1000 * job.seed + 1, job.epochs);
  const external = cfg.trainer === 'pytorch' ? { trainer: 'external' } : {};
  const common = { ...external, modelId: denseId, datasetId: cfg.datasetId, goalSparsity: job.goal, phases: cfg.phases, pruning: { method: 'magnitude-global' }, training };
  if (job.vary !== 'seed') return { kind: 'sms', ...common, m: cfg.m, vary: job.vary, values: variantValues(job.vary, cfg.m, job.epochs), soup: { method: 'uniform' } };
  switch (job.method) {
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

/** Retraining epochs a job costs: T phases of its candidates' epochs. */
function jobEpochs(j: Omit<Job, 'runId'>, cfg: Config): number {
  if (j.method === 'imp') return cfg.phases * j.epochs;
  return cfg.phases * cfg.m * j.epochs;
}

/**
 * The configuration fields that decide a stage's numbers: all but the list of E, the workers and the
 * ensemble_by rows (a stage's name says its E and its ensemble_by values, and stages match by name).
 */
function sameExperiment(a: Config, b: Config): (keyof Config)[] {
  const keys: (keyof Config)[] = ['arch', 'seeds', 'goals', 'phases', 'pretrainEpochs', 'm', 'learningRate', 'augment', 'trainLimit', 'trainer', 'methods'];
  return keys.filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]));
}

/** SMS_RESUME=1: marks the stages that sms-results.json already holds as done, with their jobs. */
function resumeStages(cfg: Config, stages: Stage[]): Map<number, Dense> | null {
  const file = join(cfg.outDir, 'sms-results.json');
  if (!existsSync(file)) {
    console.log(`SMS_RESUME: no ${relative(process.cwd(), file)} yet; every stage runs`);
    return null;
  }
  const prior = JSON.parse(readFileSync(file, 'utf8')) as { config: Config; stages: Stage[]; dense: Record<string, Dense> };
  // Files from before SMS_TRAINER, SMS_METHODS and SMS_TRAIN_LIMIT were made by the built-in engine with every method on the whole split.
  const old: Partial<Config> = prior.config;
  const differs = sameExperiment(cfg, { ...prior.config, trainer: old.trainer ?? 'builtin', methods: old.methods ?? METHODS, trainLimit: old.trainLimit ?? 0 });
  if (differs.length) throw new Error(`SMS_RESUME: ${file} was made with a different configuration (${differs.map((k) => `${k} ${JSON.stringify(prior.config[k])} there, ${JSON.stringify(cfg[k])} here`).join('; ')}); move it away or match it`);
  // A stage resumed twice keeps the time it was measured; the file's mtime is only the fallback for files from before finishedAt (a copy resets it).
  const mtime = statSync(file).mtime.toISOString().slice(0, 16).replace('T', ' ');
  for (const st of stages) {
    const old = prior.stages.find((s) => s.name === st.name && s.done);
    if (!old) continue;
    const when = old.resumed ?? old.finishedAt ?? mtime;
    Object.assign(st, { jobs: old.jobs, done: true, submitted: true, wallSeconds: old.wallSeconds, resumed: when, finishedAt: old.finishedAt ?? when });
    console.log(`SMS_RESUME: stage ${st.name} kept from ${file} (${when} UTC)`);
  }
  return new Map(Object.entries(prior.dense).map(([seed, d]) => [Number(seed), d]));
}

function buildStages(cfg: Config): Stage[] {
  const stages: Stage[] = [];
  for (const epochs of [...cfg.epochs].sort((a, b) => a - b)) {
    const main: Stage = { name: `E = ${epochs}`, epochs, variant: false, jobs: [], submitted: false, done: false };
    // The longest chains first (IMP m× retrains one candidate for m·E epochs per phase).
    for (const method of (['imp3', 'sms-uniform', 'sms-greedy', 'imp'] as Method[]).filter((x) => cfg.methods.includes(x)))
      for (const goal of cfg.goals) for (const seed of cfg.seeds) main.jobs.push({ method, vary: 'seed', goal, seed, epochs, runId: '' });
    stages.push(main);
    if (cfg.ensembleBy.length && epochs === cfg.variantsAt) {
      const v: Stage = { name: `E = ${epochs}, ensemble_by ${cfg.ensembleBy.join(', ')}`, epochs, variant: true, jobs: [], submitted: false, done: false };
      for (const vary of cfg.ensembleBy) for (const goal of cfg.goals) for (const seed of cfg.seeds) v.jobs.push({ method: 'sms-uniform', vary, goal, seed, epochs, runId: '' });
      stages.push(v);
    }
  }
  return stages;
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

/** Restarts a stopped service (runs are durable and resume); gives up after three restarts. */
async function keepAlive(service: Service): Promise<void> {
  if (service.alive) return;
  if (service.restarts >= 3) throw new Error(`the service stopped (${service.ended}) a fourth time`);
  console.log(`the service stopped (${service.ended}); restarting it on the same data folder, the runs continue where they stopped`);
  await service.restart();
}

/** Polls GET /runs/{id} for every unfinished run; returns the candidates queued or training. */
async function poll(api: Client, jobs: Job[], failures: { n: number }): Promise<{ busy: number; epochsDone: number }> {
  let busy = 0;
  let epochsDone = 0;
  for (const j of jobs) {
    const run =
      j.run && FINISHED.includes(j.run.status)
        ? j.run
        : await api.json<Run>('GET', `/runs/${j.runId}`).catch((err) => {
            // Unreachable: the caller restarts a dead child; give up after two minutes of it.
            if (++failures.n > 24) throw err;
            return null;
          });
    if (!run) return { busy: Number.POSITIVE_INFINITY, epochsDone };
    failures.n = 0;
    j.run = run;
    // A run between phases (pruning, merging) has no candidate in flight yet but soon will.
    const active = run.candidates.filter((c) => c.status === 'queued' || c.status === 'running').length;
    busy += active || (FINISHED.includes(run.status) ? 0 : 1);
    for (const c of run.candidates) {
      if (c.status === 'succeeded') epochsDone += c.config.epochs;
      else if (c.status === 'running' && c.progress?.steps) epochsDone += (c.config.epochs * c.progress.step) / c.progress.steps;
    }
  }
  return { busy, epochsDone };
}

// ---------------------------------------------------------------- the results page

interface Results {
  cfg: Config;
  info: ReturnType<typeof machineInfo>;
  backend: string;
  started: Date;
  t0: number;
  pretrainWall: number;
  dense: Map<number, Dense>;
  stages: Stage[];
  restarts: number;
  complete: boolean;
}

/** A line plot of final-phase test accuracy against retraining epochs per phase (log scale), mean ± sd over seeds. */
function crossoverSvg(title: string, xs: number[], series: { label: string; ys: number[][]; dashed?: boolean }[]): string {
  const W = 760;
  const H = 460;
  const m = { left: 70, right: 230, top: 50, bottom: 60 };
  const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];
  const all = series.flatMap((s) => s.ys.flatMap((v) => (v.length ? [meanOf(v) - (sdOf(v) || 0), meanOf(v) + (sdOf(v) || 0)] : [])));
  const yMin = Math.min(...all);
  const yMax = Math.max(...all);
  const pad = Math.max(0.002, (yMax - yMin) * 0.1);
  const y0 = yMin - pad;
  const y1 = yMax + pad;
  const lx = xs.map((x) => Math.log10(x));
  const x0 = Math.min(...lx) - 0.15;
  const x1 = Math.max(...lx) + 0.15;
  const px = (x: number) => m.left + ((Math.log10(x) - x0) / (x1 - x0 || 1)) * (W - m.left - m.right);
  const py = (y: number) => H - m.bottom - ((y - y0) / (y1 - y0 || 1)) * (H - m.top - m.bottom);
  const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
  const o: string[] = [];
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="system-ui, sans-serif" font-size="12">`);
  o.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  o.push(`<text x="${m.left}" y="28" font-size="16" font-weight="600">${esc(title)}</text>`);
  for (const x of xs) {
    o.push(`<line x1="${px(x)}" y1="${m.top}" x2="${px(x)}" y2="${H - m.bottom}" stroke="#eee"/>`);
    o.push(`<text x="${px(x)}" y="${H - m.bottom + 18}" text-anchor="middle">${x}</text>`);
  }
  const step = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05].find((s) => (y1 - y0) / s <= 8) ?? 0.1;
  for (let y = Math.ceil(y0 / step) * step; y <= y1 + 1e-12; y += step) {
    o.push(`<line x1="${m.left}" y1="${py(y)}" x2="${W - m.right}" y2="${py(y)}" stroke="#eee"/>`);
    o.push(`<text x="${m.left - 8}" y="${py(y) + 4}" text-anchor="end">${+(y * 100).toFixed(1)}%</text>`);
  }
  o.push(`<line x1="${m.left}" y1="${H - m.bottom}" x2="${W - m.right}" y2="${H - m.bottom}" stroke="#333"/>`);
  o.push(`<line x1="${m.left}" y1="${m.top}" x2="${m.left}" y2="${H - m.bottom}" stroke="#333"/>`);
  o.push(`<text x="${(m.left + W - m.right) / 2}" y="${H - 18}" text-anchor="middle">retraining epochs per candidate and phase (log scale)</text>`);
  o.push(`<text transform="translate(18 ${(m.top + H - m.bottom) / 2}) rotate(-90)" text-anchor="middle">final-phase test accuracy</text>`);
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = xs.map((x, k) => ({ x, v: s.ys[k] ?? [] })).filter((p) => p.v.length);
    const dash = s.dashed ? ' stroke-dasharray="5 4"' : '';
    if (pts.length > 1) o.push(`<polyline fill="none" stroke="${color}" stroke-width="2"${dash} points="${pts.map((p) => `${px(p.x).toFixed(1)},${py(meanOf(p.v)).toFixed(1)}`).join(' ')}"/>`);
    for (const p of pts) {
      const sd = sdOf(p.v) || 0;
      const cx = px(p.x) + (i - series.length / 2) * 3; // nudge so error bars do not overlap
      o.push(`<line x1="${cx.toFixed(1)}" y1="${py(meanOf(p.v) - sd).toFixed(1)}" x2="${cx.toFixed(1)}" y2="${py(meanOf(p.v) + sd).toFixed(1)}" stroke="${color}" stroke-opacity="0.6"/>`);
      o.push(`<circle cx="${cx.toFixed(1)}" cy="${py(meanOf(p.v)).toFixed(1)}" r="4" fill="${color}"/>`);
    }
    const ly = m.top + 10 + i * 22;
    o.push(`<line x1="${W - m.right + 16}" y1="${ly}" x2="${W - m.right + 40}" y2="${ly}" stroke="${color}" stroke-width="2"${dash}/>`);
    o.push(`<text x="${W - m.right + 46}" y="${ly + 4}">${esc(s.label)}</text>`);
  });
  o.push(`<text x="${W - m.right + 16}" y="${m.top + 10 + series.length * 22 + 6}" fill="#666">mean ± sd over seeds</text>`);
  o.push('</svg>');
  return o.join('\n');
}

async function writeResults(api: Client, r: Results): Promise<void> {
  const { cfg, info } = r;
  const md: string[] = [];
  const say = (line = '') => md.push(line);
  const done = r.stages.filter((s) => s.done);
  const mains = done.filter((s) => !s.variant);
  const variants = done.filter((s) => s.variant);
  const allJobs = done.flatMap((s) => s.jobs);
  const ok = (js: Job[]) => js.filter((j) => j.report);
  const sel = (st: Stage, method: Method, goal: number, vary: Vary = 'seed') => ok(st.jobs.filter((j) => j.method === method && j.goal === goal && j.vary === vary));
  const last = cfg.phases;
  const phaseList = Array.from({ length: cfg.phases }, (_, i) => i + 1);
  const top = Math.max(...cfg.goals);
  const M = cfg.m;

  say('# Sparse Model Soups on Fashion-MNIST: `npm run bench:sms`');
  say();
  say(`Produced by \`npm run bench:sms\` (bench/sms.ts) from ${r.started.toISOString().slice(0, 16).replace('T', ' ')} UTC. All numbers are test accuracy on the 10,000-image Fashion-MNIST test split, in %, mean ± sample standard deviation over seeds.`);
  say();
  const pending = r.stages.filter((s) => !s.done);
  if (r.complete) say(`**Complete**: all ${r.stages.length} stages finished.`);
  else say(`**Partial results** (written ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, the bench still running or stopped): ${done.length} of ${r.stages.length} stages finished; not finished: ${pending.map((s) => s.name).join('; ') || 'none'}.`);
  const failed = allJobs.filter((j) => j.status !== 'succeeded');
  if (failed.length) say(`\n${failed.length} run${failed.length > 1 ? 's' : ''} did not succeed and are left out: ${failed.map((j) => `${LABEL[j.method](M)} by ${j.vary} S=${j.goal} seed ${j.seed} E=${j.epochs} (${j.status}${j.error ? `: ${j.error}` : ''})`).join('; ')}.`);
  say();

  // Setup, every configuration written out.
  const denseList = cfg.seeds.map((s) => r.dense.get(s)).filter((d): d is Dense => !!d);
  const cands = allJobs.flatMap((j) => j.run?.candidates ?? []);
  const sps = finite(cands.map((c) => c.metrics?.train?.samplesPerSecond));
  const secPerEpoch = finite(cands.map((c) => (c.metrics?.train?.durationMs ?? Number.NaN) / 1000 / (c.config.epochs || Number.NaN)));
  say('## Setup');
  say();
  if (cfg.trainer === 'pytorch')
    say(`- ${machineLine(info)}; training, evaluation and BN recalibration by ${cfg.workers} PyTorch trainer processes (bench/sms_pytorch.py, clients/python/sparsoup_trainer.py; CPU, one torch thread each, OpenBLAS) over the /tasks protocol, dense pretraining in PyTorch too; pruning and soups in the service (TensorFlow.js backend \`${r.backend}\`, WORKERS=${cfg.workers}).`);
  else say(`- ${machineLine(info)}; TensorFlow.js backend \`${r.backend}\`, service WORKERS=${cfg.workers} (one training thread each).`);
  say(`- Model \`${cfg.arch}\`, dataset \`${DATASET}\` (${cfg.trainLimit ? `a stratified ${cfg.trainLimit.toLocaleString('en')}-sample subset of the 54,000 train samples, the same for every seed` : '54,000 train'} / 6,000 val / 10,000 test), data augmentation \`${cfg.augment}\`. Seeds ${cfg.seeds.join(', ')}: each seed pretrains its own dense model (template seed and batch order) for ${cfg.pretrainEpochs} epochs, shared by every row of that seed; dense test accuracy ${fmt(denseList.map((d) => d.test))}.`);
  say(`- Goal sparsities ${cfg.goals.join(', ')}, T = ${cfg.phases} phases, global magnitude pruning of all kernels (phase k prunes to 1 − (1 − S)^(k/T)).`);
  say(`- Retraining per candidate and phase: E ∈ {${[...cfg.epochs].sort((a, b) => a - b).join(', ')}} epochs (IMP ${M}×: ${M}·E), SGD momentum 0.9, batch 128, weight decay 1e-4, peak lr ${cfg.learningRate} with linear decay (LLR) and 10 % warm-up, the same for pretraining. SMS: m = ${M} candidates per phase differing in seed (batch order), merged uniformly or greedily (greedy on the validation split, \`>=\`), BN recalibration on (no effect on models without BN).`);
  if (cfg.ensembleBy.length)
    say(`- \`ensemble_by\` rows (SMS m=${M} uniform at E = ${cfg.variantsAt}; the candidates share the seed and differ only in): ${cfg.ensembleBy.map((v) => `${VARY_LABEL[v]} ${variantValues(v, M, cfg.variantsAt).join(' / ')}`).join('; ')}.`);
  say(`- Per phase: the soup (or IMP's single model), the best and mean candidate, the candidates' prediction ensemble (mean of their softmax outputs, \`ensembleTestAccuracy\` in \`GET /runs/{id}/report\`: the ceiling of what averaging can reach) and their mean pairwise L2 distance and angle over the prunable weights.`);
  say(`- Environment: \`${envLine(cfg)}\`.`);
  say(
    `- Time: pretraining ${fmtDuration(r.pretrainWall)}${done.map((s) => `, stage ${s.name} ${s.wallSeconds ? fmtDuration(s.wallSeconds) : 'n/a'} (overlapping the next stage's start)`).join('')}; ${fmtDuration((Date.now() - r.t0) / 1000)} so far in all. Training throughput per worker ${sps.length ? `${meanOf(sps).toFixed(0)} samples/s (${meanOf(secPerEpoch).toFixed(1)} s per epoch)` : 'n/a'}; load average ${loadavg().map((x) => x.toFixed(1)).join(' / ')} on ${info.cores} cores (shared with other work).`,
  );
  const resumed = r.stages.filter((s) => s.resumed);
  if (resumed.length) say(`- Resumed (\`SMS_RESUME=1\`): ${resumed.map((s) => `stage ${s.name} was measured by an earlier bench run (results of ${s.resumed} UTC) with the same configuration`).join('; ')}; its timings are that run's.`);
  if (r.restarts) say(`- The service stopped ${r.restarts} time${r.restarts > 1 ? 's' : ''} during the bench and was restarted on the same data folder; the runs resumed where they were.`);
  say();

  // Pretraining curve.
  if (denseList.length && denseList[0].curve.length) {
    say('## Dense pretraining: test accuracy per epoch');
    say();
    const n = Math.max(...denseList.map((d) => d.curve.length));
    const at = (e: number, f: (p: CurvePoint) => number | null) => finite(denseList.map((d) => { const p = d.curve[e]; return p ? f(p) : null; }));
    const tests = Array.from({ length: n }, (_, e) => meanOf(at(e, (p) => p.testAccuracy)));
    const bestEpoch = tests.indexOf(Math.max(...tests)) + 1;
    const back = Math.min(5, n - 1);
    say(`Evaluated after each epoch (${cfg.trainer === 'pytorch' ? 'by bench/sms_pytorch.py, in eval mode, as the built-in engine\'s `evaluateEachEpoch` does' : '`evaluateEachEpoch`'}), before any BN recalibration; the learning rate decays linearly to 0 at epoch ${cfg.pretrainEpochs}, so the last epochs also anneal. Best mean test accuracy at epoch ${bestEpoch} (${(Math.max(...tests) * 100).toFixed(2)} %)${back ? `; the last ${back} epochs added ${pp(tests[n - 1] - tests[n - 1 - back])}` : ''}.`);
    say();
    say('| epoch | test | val |');
    say('| ---: | ---: | ---: |');
    for (let e = 0; e < n; e++) say(`| ${e + 1} | ${fmt(at(e, (p) => p.testAccuracy))} | ${fmt(at(e, (p) => p.valAccuracy))} |`);
    say();
  }

  // One section per retraining length.
  for (const st of mains) {
    say(`## Retraining E = ${st.epochs} epoch${st.epochs === 1 ? '' : 's'} per candidate and phase (IMP ${M}×: ${M * st.epochs})`);
    say();
    say(`Final phase (the goal sparsity). "Best candidate" is picked by test accuracy (a baseline no real pipeline could use); "ensemble" is the candidates' prediction ensemble.`);
    say();
    say(`| goal S | ${METHODS.map((x) => LABEL[x](M)).join(' | ')} | uniform run: best / mean candidate | uniform run: ensemble | greedy run: best candidate | greedy run: ensemble |`);
    say(`| --- | ${METHODS.map(() => '---:').join(' | ')} | ---: | ---: | ---: | ---: |`);
    for (const goal of cfg.goals) {
      const cells = METHODS.map((x) => fmt(pick(sel(st, x, goal), last, soupAcc)));
      const u = sel(st, 'sms-uniform', goal);
      const g = sel(st, 'sms-greedy', goal);
      say(`| ${goal} | ${cells.join(' | ')} | ${fmt(pick(u, last, bestAcc))} / ${fmt(pick(u, last, meanAcc))} | ${fmt(pick(u, last, ensAcc))} | ${fmt(pick(g, last, bestAcc))} | ${fmt(pick(g, last, ensAcc))} |`);
    }
    say();
    for (const goal of cfg.goals) {
      const ref = sel(st, 'imp', goal)[0] ?? sel(st, 'sms-uniform', goal)[0];
      if (!ref?.report) continue;
      const sp = ref.report.phases.filter((p) => p.index >= 1).map((p) => `phase ${p.index} (${(p.sparsity * 100).toFixed(1)} %)`);
      say(`### E = ${st.epochs}, S = ${goal}: per phase`);
      say();
      say(`| method | ${sp.join(' | ')} |`);
      say(`| --- | ${sp.map(() => '---:').join(' | ')} |`);
      const row = (label: string, jobs: Job[], f: (p: Phase) => number | null | undefined, show: (xs: number[]) => string = fmt) => say(`| ${label} | ${phaseList.map((k) => show(pick(jobs, k, f))).join(' | ')} |`);
      row('IMP', sel(st, 'imp', goal), soupAcc);
      row(`IMP ${M}×`, sel(st, 'imp3', goal), soupAcc);
      for (const method of ['sms-uniform', 'sms-greedy'] as const) {
        const js = sel(st, method, goal);
        row(`${LABEL[method](M)}: soup`, js, soupAcc);
        row('… best candidate', js, bestAcc);
        row('… mean candidate', js, meanAcc);
        row('… ensemble of the candidates', js, ensAcc);
        row('… candidates: mean L2 distance', js, (p) => p.meanL2Distance, dist);
        row('… candidates: mean angle', js, (p) => p.meanAngleDegrees, deg);
      }
      const greedy = sel(st, 'sms-greedy', goal);
      if (greedy.length) say(`| greedy: candidates accepted (per seed) | ${phaseList.map((k) => greedy.map((j) => (phaseOf(j, k)?.soup?.weights ?? []).filter((w) => w > 0).length).join('/')).join(' | ')} |`);
      say();
    }
  }

  // ensemble_by rows beside the seed rows of the same E.
  for (const st of variants) {
    const base = mains.find((s) => s.epochs === st.epochs);
    say(`## What the candidates differ by (SMS m=${M} uniform, E = ${st.epochs})`);
    say();
    say(`Per phase; the seed rows are the uniform runs of the E = ${st.epochs} section. Values: ${cfg.ensembleBy.map((v) => `${VARY_LABEL[v]} ${variantValues(v, M, st.epochs).join(' / ')}`).join('; ')} (the same seed for all ${M}).`);
    say();
    for (const goal of cfg.goals) {
      say(`### S = ${goal}`);
      say();
      say(`| candidates differ by | ${phaseList.map((k) => `phase ${k}: soup / best / mean / ensemble`).join(' | ')} | final phase: L2 / angle |`);
      say(`| --- | ${phaseList.map(() => '---:').join(' | ')} | ---: |`);
      for (const vary of ['seed', ...cfg.ensembleBy] as Vary[]) {
        const js = vary === 'seed' ? (base ? sel(base, 'sms-uniform', goal) : []) : sel(st, 'sms-uniform', goal, vary);
        if (!js.length) continue;
        const cells = phaseList.map((k) => [soupAcc, bestAcc, meanAcc, ensAcc].map((f) => fmt(pick(js, k, f))).join(' / '));
        say(`| ${VARY_LABEL[vary]} | ${cells.join(' | ')} | ${dist(pick(js, last, (p) => p.meanL2Distance))} / ${deg(pick(js, last, (p) => p.meanAngleDegrees))} |`);
      }
      say();
    }
  }

  // The crossover: soups against IMP m× over retraining lengths, at the largest goal.
  const xs = mains.map((s) => s.epochs);
  if (mains.length) {
    say(`## The crossover at S = ${top}: soups against IMP ${M}× by retraining length`);
    say();
    say(`Final phase. The differences are paired (same seed, so the same dense model), mean ± standard error.`);
    say();
    const diff = (d: number[]) => (d.length ? `${pp(meanOf(d))}${d.length > 1 ? ` ± ${((sdOf(d) / Math.sqrt(d.length)) * 100).toFixed(2)}` : ''}` : 'n/a');
    say(`| E | IMP | IMP ${M}× | SMS uniform | SMS greedy | best candidate (uniform run) | ensemble (uniform run) | uniform − IMP ${M}× | greedy − IMP ${M}× | uniform − best candidate |`);
    say('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const st of mains) {
      const u = sel(st, 'sms-uniform', top);
      const g = sel(st, 'sms-greedy', top);
      const i3 = sel(st, 'imp3', top);
      say(
        `| ${st.epochs} | ${fmt(pick(sel(st, 'imp', top), last, soupAcc))} | ${fmt(pick(i3, last, soupAcc))} | ${fmt(pick(u, last, soupAcc))} | ${fmt(pick(g, last, soupAcc))} | ${fmt(pick(u, last, bestAcc))} | ${fmt(pick(u, last, ensAcc))} | ${diff(paired(u, i3, [last], soupAcc))} | ${diff(paired(g, i3, [last], soupAcc))} | ${diff(paired(u, u, [last], soupAcc, bestAcc))} |`,
      );
    }
    say();
    if (mains.length > 1) {
      mkdirSync(cfg.outDir, { recursive: true });
      const series = [
        { label: 'IMP', method: 'imp' as Method, f: soupAcc },
        { label: `IMP ${M}×`, method: 'imp3' as Method, f: soupAcc },
        { label: `SMS m=${M} uniform`, method: 'sms-uniform' as Method, f: soupAcc },
        { label: `SMS m=${M} greedy`, method: 'sms-greedy' as Method, f: soupAcc },
        { label: 'best candidate (uniform)', method: 'sms-uniform' as Method, f: bestAcc, dashed: true },
        { label: 'ensemble (uniform)', method: 'sms-uniform' as Method, f: ensAcc, dashed: true },
      ].map((s) => ({ label: s.label, dashed: s.dashed, ys: mains.map((st) => pick(sel(st, s.method, top), last, s.f)) }));
      writeFileSync(join(cfg.outDir, 'sms-crossover.svg'), crossoverSvg(`${cfg.arch}, S = ${top}, T = ${cfg.phases}, m = ${M}: final phase by retraining length`, xs, series));
      say(`![Final-phase test accuracy against retraining epochs per phase at S = ${top}](sms-crossover.svg)`);
      say();
    }
  }

  // Claims with paired verdicts.
  say("## The paper's claims");
  say();
  say('Each difference is paired (same seed, goal and phase, so the same dense model; the soup against the best candidate of its own phase); "yes" means the mean difference is positive and more than two standard errors from zero. The ensemble rows are diagnostics, not claims of the paper: an ensemble far above the best candidate means the candidates disagree enough to be worth averaging.');
  say();
  const claims: { claim: string; v: Verdict }[] = [];
  for (const st of mains) {
    const tag = `E = ${st.epochs}`;
    for (const method of ['sms-uniform', 'sms-greedy'] as const) {
      const js = ok(st.jobs.filter((j) => j.method === method && j.vary === 'seed'));
      claims.push({ claim: `${tag}: ${LABEL[method](M)}: the soup beats the best candidate of its phase (all phases and goals)`, v: verdict(paired(js, js, phaseList, soupAcc, bestAcc)) });
      claims.push({ claim: `${tag}: ${LABEL[method](M)}: … at the final phase only`, v: verdict(paired(js, js, [last], soupAcc, bestAcc)) });
    }
    const u = ok(st.jobs.filter((j) => j.method === 'sms-uniform' && j.vary === 'seed'));
    claims.push({ claim: `${tag}: diagnostic: the candidates' ensemble beats their best (all phases and goals)`, v: verdict(paired(u, u, phaseList, ensAcc, bestAcc)) });
    claims.push({ claim: `${tag}: diagnostic: the uniform soup reaches the ensemble (soup − ensemble, all phases and goals)`, v: verdict(paired(u, u, phaseList, soupAcc, ensAcc)) });
    for (const method of ['sms-uniform', 'sms-greedy'] as const)
      for (const base of ['imp', 'imp3'] as const)
        for (const goal of cfg.goals) {
          const a = sel(st, method, goal);
          const b = sel(st, base, goal);
          claims.push({ claim: `${tag}: ${LABEL[method](M)} beats ${LABEL[base](M)} at S = ${goal}, final phase`, v: verdict(paired(a, b, [last], soupAcc)) });
          claims.push({ claim: `${tag}: ${LABEL[method](M)} beats ${LABEL[base](M)} at S = ${goal}, every phase pooled`, v: verdict(paired(a, b, phaseList, soupAcc)) });
        }
  }
  for (const st of variants) {
    const base = mains.find((s) => s.epochs === st.epochs);
    for (const vary of cfg.ensembleBy) {
      const js = ok(st.jobs.filter((j) => j.vary === vary));
      claims.push({ claim: `E = ${st.epochs}, candidates differing by ${VARY_LABEL[vary]}: the uniform soup beats the best candidate (all phases and goals)`, v: verdict(paired(js, js, phaseList, soupAcc, bestAcc)) });
      if (base) claims.push({ claim: `E = ${st.epochs}: SMS uniform by ${VARY_LABEL[vary]} beats SMS uniform by seed (all phases and goals)`, v: verdict(paired(js, ok(base.jobs.filter((j) => j.method === 'sms-uniform' && j.vary === 'seed')), phaseList, soupAcc)) });
    }
  }
  say('| claim | verdict |');
  say('| --- | --- |');
  for (const c of claims) say(`| ${c.claim} | ${c.v.text} |`);
  say();

  // Plots of one seed at the longest finished E.
  const longest = mains[mains.length - 1];
  if (longest) {
    mkdirSync(cfg.outDir, { recursive: true }); // a new SMS_OUT has no folder yet at its first stage
    const plots: string[] = [];
    for (const goal of cfg.goals) {
      const of = (x: Method) => longest.jobs.find((j) => j.method === x && j.vary === 'seed' && j.goal === goal && j.seed === cfg.seeds[0] && j.report)?.runId;
      // The uniform soup's run, with whichever baselines this configuration ran (SMS_METHODS may leave some out).
      const ids = [of('sms-uniform'), ...(['imp', 'imp3', 'sms-greedy'] as Method[]).filter((x) => cfg.methods.includes(x)).map(of)];
      if (ids.some((x) => !x)) continue;
      try {
        const svg = await api.text(`/runs/${ids[0]}/report.svg?baselineIds=${ids.slice(1).join(',')}`);
        const file = join(cfg.outDir, goal === top ? 'sms-plot.svg' : `sms-plot-${goal}.svg`);
        writeFileSync(file, svg);
        plots.push(`- E = ${longest.epochs}, S = ${goal}, seed ${cfg.seeds[0]}: [${relative(cfg.outDir, file)}](${relative(cfg.outDir, file)})`);
      } catch (err) {
        plots.push(`- E = ${longest.epochs}, S = ${goal}: the plot could not be fetched (${(err as Error).message})`);
      }
    }
    say('## Plots');
    say();
    say('Test accuracy against sparsity of one seed: the SMS uniform soup as a line with its candidates as faint dots, IMP, IMP m× and SMS greedy as baselines (`GET /runs/{id}/report.svg?baselineIds=…`).');
    say();
    for (const p of plots) say(p);
  }
  mkdirSync(cfg.outDir, { recursive: true });
  const stagesOut = r.stages.map((s) => ({ ...s, jobs: s.jobs.map(({ run: _run, ...j }) => j) }));
  writeFileSync(join(cfg.outDir, 'sms-results.json'), JSON.stringify({ config: { ...cfg, outDir: relative(ROOT, cfg.outDir) || '.' }, env: envLine(cfg), machine: info, backend: r.backend, complete: r.complete, dense: Object.fromEntries(r.dense), stages: stagesOut }, null, 1));
  // Every configuration of this folder's sub-folders (other SMS_OUTs) beside this one (bench/sms-summary.ts).
  const summary = summarySection(cfg.outDir);
  if (summary.length) md.push('', ...summary);
  writeFileSync(join(cfg.outDir, 'sms-results.md'), `${md.join('\n')}\n`.replace(/\n+$/, '\n'));
  console.log(`wrote ${relative(process.cwd(), join(cfg.outDir, 'sms-results.md'))} (${done.length}/${r.stages.length} stages)`);
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const cfg = readConfig();
  const info = machineInfo();
  const t0 = Date.now();
  const started = new Date();
  console.log('# bench:sms — Sparse Model Soups against IMP through the HTTP API');
  console.log(machineLine(info));
  console.log(`config: ${cfg.arch} on ${DATASET}; ${envLine(cfg)}`);
  const service = new Service(cfg.workers);
  await service.start();
  let trainers: ChildProcess[] = [];
  const stopAll = async () => {
    for (const t of trainers) t.kill('SIGTERM');
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

    const stages = buildStages(cfg);
    const priorDense = process.env.SMS_RESUME ? resumeStages(cfg, stages) : null;
    const allResumed = !!priorDense && stages.every((s) => s.done);
    const dense = allResumed ? priorDense! : new Map<number, Dense>();
    if (cfg.trainer === 'pytorch' && !allResumed) {
      // The dense models are pretrained in PyTorch (SMS_WORKERS at a time), the runs name an external dataset.
      const dataset = await api.json<{ id: string }>('POST', '/datasets', { name: DATASET, source: 'external', classes: 10 });
      cfg.datasetId = dataset.id;
      const queue = [...cfg.seeds];
      await Promise.all(
        Array.from({ length: Math.min(cfg.workers, queue.length) }, async () => {
          for (let seed = queue.shift(); seed !== undefined; seed = queue.shift()) dense.set(seed, await pretrainPytorch(cfg, service.url, seed));
        }),
      );
      trainers = startTrainers(cfg, service.url);
      console.log(`${trainers.length} PyTorch trainer processes started (logs in .bench/sms-trainer-*.log)`);
    }
    // 1. One dense model per seed, evaluated after every epoch (unless every stage was resumed).
    const pre: Job[] = [];
    for (const seed of cfg.trainer === 'pytorch' || allResumed ? [] : cfg.seeds) {
      const template = await api.json<{ id: string }>('POST', '/models/templates', { architecture: cfg.arch, datasetId: DATASET, seed });
      const run = await api.json<Run>('POST', '/runs', { kind: 'train', modelId: template.id, datasetId: DATASET, training: { ...trainingBase(cfg, seed, cfg.pretrainEpochs), evaluateEachEpoch: true } });
      pre.push({ method: 'imp', vary: 'seed', goal: 0, seed, epochs: cfg.pretrainEpochs, runId: run.id });
    }
    const failures = { n: 0 };
    let lastLine = 0;
    for (;;) {
      await keepAlive(service);
      const { epochsDone } = await poll(api, pre, failures);
      if (pre.every((j) => j.run && FINISHED.includes(j.run.status))) break;
      if (Date.now() - lastLine > 60_000) {
        lastLine = Date.now();
        console.log(`[${fmtDuration((Date.now() - t0) / 1000)}] pretraining ${epochsDone.toFixed(1)}/${cfg.seeds.length * cfg.pretrainEpochs} epochs · load ${loadavg()[0].toFixed(1)}`);
      }
      await sleep(5000);
    }
    for (const j of pre) {
      const run = j.run!;
      if (run.status !== 'succeeded') throw new Error(`pretraining seed ${j.seed} ${run.status}: ${run.error}`);
      const c = run.candidates[0];
      const train = c.metrics?.train as { durationMs?: number; samplesPerSecond?: number; epochCurve?: CurvePoint[] } | undefined;
      dense.set(j.seed, { modelId: c.resultModelId!, test: c.testAccuracy ?? Number.NaN, seconds: (train?.durationMs ?? 0) / 1000, curve: train?.epochCurve ?? [] });
      console.log(`dense seed ${j.seed}: test accuracy ${((c.testAccuracy ?? 0) * 100).toFixed(2)} % (${((train?.durationMs ?? 0) / 1000).toFixed(0)} s training, ${(train?.samplesPerSecond ?? 0).toFixed(0)} samples/s); per epoch ${(train?.epochCurve ?? []).map((p) => ((p.testAccuracy ?? 0) * 100).toFixed(1)).join(' ')}`);
    }
    const results: Results = { cfg, info, backend, started, t0, pretrainWall: (Date.now() - t0) / 1000, dense, stages, restarts: 0, complete: stages.every((s) => s.done) };
    if (results.complete) await writeResults(api, results);

    // 2. Stages in order; the next is submitted once the pool would idle, each written out when it finishes.
    const planned = stages.filter((s) => !s.resumed).reduce((n, s) => n + s.jobs.reduce((a, j) => a + jobEpochs(j, cfg), 0), 0);
    console.log(`\n${stages.length} stages, ${stages.reduce((n, s) => n + s.jobs.length, 0)} runs, ${planned.toFixed(1)} retraining epochs in all: ${stages.map((s) => s.name).join(' → ')}`);
    const t1 = Date.now();
    lastLine = 0;
    for (;;) {
      await keepAlive(service);
      results.restarts = service.restarts;
      const inFlight = stages.filter((s) => s.submitted && !s.done);
      const { busy, epochsDone } = await poll(api, inFlight.flatMap((s) => s.jobs), failures);
      for (const st of inFlight) {
        if (!st.jobs.every((j) => j.run && FINISHED.includes(j.run.status))) continue;
        for (const j of st.jobs) {
          j.status = j.run!.status;
          j.error = j.run!.error;
          if (j.status !== 'succeeded') {
            console.log(`${LABEL[j.method](cfg.m)} by ${j.vary} S=${j.goal} seed ${j.seed} E=${j.epochs} (run ${j.runId}) ${j.status}: ${j.error}`);
            continue;
          }
          j.report = await api.json<RunReport>('GET', `/runs/${j.runId}/report`);
          j.phaseSeconds = await phaseSeconds(api, j.runId);
        }
        st.done = true;
        st.wallSeconds = (Date.now() - (st.startedAt ?? t1)) / 1000;
        st.finishedAt = new Date().toISOString().slice(0, 16).replace('T', ' ');
        console.log(`[${fmtDuration((Date.now() - t0) / 1000)}] stage ${st.name} finished in ${fmtDuration(st.wallSeconds)}`);
        results.complete = stages.every((s) => s.done);
        await writeResults(api, results);
      }
      if (stages.every((s) => s.done)) break;
      const next = stages.find((s) => !s.submitted);
      if (next && busy < cfg.workers) {
        for (const j of next.jobs) j.runId = (await api.json<Run>('POST', '/runs', runBody(j, cfg, dense.get(j.seed)!.modelId))).id;
        next.submitted = true;
        next.startedAt = Date.now();
        console.log(`[${fmtDuration((Date.now() - t0) / 1000)}] stage ${next.name}: ${next.jobs.length} runs submitted`);
        continue;
      }
      if (Date.now() - lastLine > 60_000) {
        lastLine = Date.now();
        const doneEpochs = stages.filter((s) => s.done && !s.resumed).reduce((n, s) => n + s.jobs.reduce((a, j) => a + jobEpochs(j, cfg), 0), 0) + epochsDone;
        const frac = doneEpochs / planned;
        const el = (Date.now() - t1) / 1000;
        console.log(`[${fmtDuration((Date.now() - t0) / 1000)}] stages ${stages.filter((s) => s.done).length}/${stages.length} done · retraining ${doneEpochs.toFixed(1)}/${planned.toFixed(1)} epochs (${(frac * 100).toFixed(0)} %)${frac > 0.02 ? ` · ETA ~${Math.round((el * (1 - frac)) / frac / 60)} min` : ''} · ${busy} candidates queued or training · load ${loadavg()[0].toFixed(1)}`);
      }
      await sleep(5000);
    }
    console.log(`\ndone in ${fmtDuration((Date.now() - t0) / 1000)}`);
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
