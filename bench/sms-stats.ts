/**
 * The statistics and result types of `bench:sms` (bench/sms.ts), shared with the summary of every
 * configuration (bench/sms-summary.ts): paired differences over seeds, verdicts, and the accessors of a
 * run report's phases.
 */
import type { Run, RunReport } from './sms-client.js';

export type Variant = 'weightDecay' | 'epochs';
export const VARIANTS: Variant[] = ['weightDecay', 'epochs'];

// ---------------------------------------------------------------- statistics

export const finite = (xs: (number | null | undefined)[]) => xs.filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
export const meanOf = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN);
export const sdOf = (xs: number[]) => {
  if (xs.length < 2) return Number.NaN;
  const m = meanOf(xs);
  return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1));
};
export const fmt = (xs: number[]) => {
  if (!xs.length) return 'n/a';
  const m = (meanOf(xs) * 100).toFixed(2);
  return xs.length > 1 ? `${m} ± ${(sdOf(xs) * 100).toFixed(2)}` : m;
};
export const pp = (x: number) => `${x >= 0 ? '+' : '−'}${Math.abs(x * 100).toFixed(2)} pp`;

export interface Verdict {
  text: string;
  holds: boolean | null;
}

/** Paired differences: "yes" when the mean is positive and more than two standard errors from 0. */
export function verdict(diffs: number[]): Verdict {
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

export type Method = 'imp' | 'imp3' | 'sms-uniform' | 'sms-greedy';
export const METHODS: Method[] = ['imp', 'imp3', 'sms-uniform', 'sms-greedy'];
export type Vary = 'seed' | Variant;

export interface Job {
  method: Method;
  vary: Vary;
  goal: number;
  seed: number;
  epochs: number;
  runId: string;
  status?: string;
  error?: string | null;
  run?: Run;
  report?: RunReport;
  phaseSeconds?: number[];
}

/** The runs of one retraining length (or its ensemble_by rows), submitted together and written out when all finish. */
export interface Stage {
  name: string;
  epochs: number;
  variant: boolean;
  jobs: Job[];
  submitted: boolean;
  done: boolean;
  wallSeconds?: number;
  startedAt?: number;
  /** Finished by an earlier bench and read back from sms-results.json (SMS_RESUME=1). */
  resumed?: string;
  /** When the stage's last run finished (UTC, 'YYYY-MM-DD HH:MM'): what a later SMS_RESUME quotes. */
  finishedAt?: string;
}

export interface CurvePoint {
  epoch: number;
  valAccuracy: number | null;
  testAccuracy: number | null;
}

export interface Dense {
  modelId: string;
  test: number;
  seconds: number;
  curve: CurvePoint[];
}

export const LABEL: Record<Method, (m: number) => string> = {
  imp: () => 'IMP',
  imp3: (m) => `IMP ${m}×`,
  'sms-uniform': (m) => `SMS m=${m} uniform`,
  'sms-greedy': (m) => `SMS m=${m} greedy`,
};
export const VARY_LABEL: Record<Vary, string> = { seed: 'seed (batch order)', weightDecay: 'weight decay', epochs: 'retraining length' };

export type Phase = RunReport['phases'][number];

export const phaseOf = (j: Job, k: number): Phase | undefined => j.report?.phases.find((p) => p.index === k);
export const pick = (jobs: Job[], k: number, f: (p: Phase) => number | null | undefined) => finite(jobs.map((j) => { const p = phaseOf(j, k); return p ? f(p) : null; }));
export const deg = (xs: number[]) => (xs.length ? `${meanOf(xs).toFixed(1)}°${xs.length > 1 ? ` ± ${sdOf(xs).toFixed(1)}` : ''}` : 'n/a');
export const dist = (xs: number[]) => (xs.length ? `${meanOf(xs).toFixed(2)}${xs.length > 1 ? ` ± ${sdOf(xs).toFixed(2)}` : ''}` : 'n/a');

/** Paired differences a − b over the seeds (same goal, phase, dense model). */
export function paired(a: Job[], b: Job[], phases: number[], fa: (p: Phase) => number | null | undefined, fb: (p: Phase) => number | null | undefined = fa): number[] {
  const out: number[] = [];
  for (const x of a) {
    const y = b.find((j) => j.seed === x.seed && j.goal === x.goal);
    if (!y) continue;
    for (const k of phases) {
      const px = phaseOf(x, k);
      const py = phaseOf(y, k);
      const vx = px ? fa(px) : null;
      const vy = py ? fb(py) : null;
      if (vx == null || vy == null) continue;
      out.push(vx - vy);
    }
  }
  return out;
}

export const soupAcc = (p: Phase) => p.result?.testAccuracy;
export const bestAcc = (p: Phase) => p.candidateBest.testAccuracy;
export const meanAcc = (p: Phase) => p.candidateMean.testAccuracy;
export const ensAcc = (p: Phase) => p.ensembleTestAccuracy;

