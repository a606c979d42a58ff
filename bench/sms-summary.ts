/**
 * Every `bench:sms` configuration on one page: the section "Every configuration" at the end of
 * docs/sms-results.md. `bench:sms` writes it whenever it writes a results page (from the
 * sms-results.json files in the sub-folders of its SMS_OUT), and `npm run bench:sms-summary` rewrites
 * it in place, without running anything, after another configuration (`SMS_OUT=docs/<name>`) finishes.
 *
 * Per configuration and retraining length: the final-phase accuracies of every method that ran, and the
 * paired differences the paper's claims rest on (soup − best candidate over all phases, soup − IMP m×
 * and soup − IMP at the final phase). Configurations with the same dense models (the built-in engine
 * pretrains bit for bit the same model from the same seed and settings) are also paired with each
 * other: m = 5 against m = 3, or one goal against another, on the same dense models.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  bestAcc,
  ensAcc,
  fmt,
  type Job,
  LABEL,
  type Method,
  meanOf,
  paired,
  pick,
  pp,
  type Stage,
  sdOf,
  soupAcc,
} from './sms-stats.js';

export const SUMMARY_HEADING = '## Every configuration';

interface Saved {
  dir: string;
  config: {
    arch: string;
    seeds: number[];
    goals: number[];
    phases: number;
    pretrainEpochs: number;
    m: number;
    learningRate: number;
    augment?: string;
    trainLimit?: number;
    trainer?: 'builtin' | 'pytorch';
    methods?: Method[];
  };
  env: string;
  complete: boolean;
  dense: Record<string, { test: number }>;
  stages: Stage[];
}

function load(dir: string): Saved | null {
  const file = join(dir, 'sms-results.json');
  if (!existsSync(file)) return null;
  return { dir, ...(JSON.parse(readFileSync(file, 'utf8')) as Omit<Saved, 'dir'>) };
}

/** mean ± standard error of paired differences, with wins; bold when more than two standard errors from 0. */
function diffCell(d: number[]): string {
  if (!d.length) return 'n/a';
  const m = meanOf(d);
  const se = d.length > 1 ? sdOf(d) / Math.sqrt(d.length) : Number.NaN;
  const wins = d.filter((x) => x > 0).length;
  const text = `${pp(m)}${d.length > 1 ? ` ± ${(se * 100).toFixed(2)}` : ''} (${wins}/${d.length})`;
  return d.length > 1 && Math.abs(m) > 2 * se ? `**${text}**` : text;
}

function describe(s: Saved): string {
  const c = s.config;
  const trainer = c.trainer === 'pytorch' ? 'PyTorch trainer' : 'built-in engine';
  const split = c.trainLimit ? `${c.trainLimit.toLocaleString('en')}-sample train subset` : 'whole train split';
  return `\`${c.arch}\`, ${trainer}, ${split}, augmentation ${c.augment ?? 'none'}, ${c.pretrainEpochs} pretraining epochs, T = ${c.phases}, m = ${c.m}, seeds ${c.seeds.join(',')}`;
}

/** The same dense models: same engine, template, seeds and pretraining, and the same dense accuracies to the digit. */
function sameDense(a: Saved, b: Saved): boolean {
  if ((a.config.trainer ?? 'builtin') !== 'builtin' || (b.config.trainer ?? 'builtin') !== 'builtin') return false;
  const keys = ['arch', 'pretrainEpochs', 'learningRate'] as const;
  if (keys.some((k) => a.config[k] !== b.config[k]) || (a.config.augment ?? 'none') !== (b.config.augment ?? 'none')) return false;
  const seeds = a.config.seeds.filter((x) => b.config.seeds.includes(x));
  return seeds.length > 0 && seeds.every((x) => a.dense[x] && b.dense[x] && a.dense[x].test === b.dense[x].test);
}

const seedJobs = (st: Stage, method: Method, goal: number): Job[] => st.jobs.filter((j) => j.method === method && j.vary === 'seed' && j.goal === goal && j.report);
const mainStages = (s: Saved) => s.stages.filter((st) => st.done && !st.variant);

/** The markdown of the section (heading included). `outDir` is the folder whose sms-results.md it ends. */
export function summarySection(outDir: string): string[] {
  const main = load(outDir);
  const others = existsSync(outDir)
    ? readdirSync(outDir, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => join(outDir, e.name))
        .sort()
    : [];
  const saved = [main, ...others.map(load)].filter((s): s is Saved => !!s);
  const mdOnly = others.filter((d) => !existsSync(join(d, 'sms-results.json')) && existsSync(join(d, 'sms-results.md')));
  if (saved.length + mdOnly.length <= 1) return [];
  const md: string[] = [];
  const say = (line = '') => md.push(line);
  const where = (s: Saved) => (s === main ? 'this page' : `[${relative(outDir, s.dir)}/](${relative(outDir, join(s.dir, 'sms-results.md'))})`);
  say(SUMMARY_HEADING);
  say();
  say(
    'Every configuration `bench:sms` has results for in this folder (each sub-folder is one `SMS_OUT`; this section is rewritten by `bench:sms` and by `npm run bench:sms-summary`). Final phase, test accuracy in % (mean ± sd over seeds); the differences are paired over seeds (same dense model), mean ± standard error (better in k of n pairs), **bold** when more than two standard errors from zero.',
  );
  say();
  say('| configuration | E | S | IMP | IMP m× | SMS uniform | SMS greedy | best candidate | ensemble | uniform − best candidate, all phases | greedy − best candidate, all phases | uniform − IMP m×, final phase | uniform − IMP, final phase | results |');
  say('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |');
  for (const s of saved) {
    const c = s.config;
    const last = c.phases;
    const phases = Array.from({ length: c.phases }, (_, i) => i + 1);
    for (const st of mainStages(s))
      for (const goal of c.goals) {
        const at = (x: Method) => seedJobs(st, x, goal);
        const u = at('sms-uniform');
        const g = at('sms-greedy');
        const acc = (x: Method) => fmt(pick(at(x), last, soupAcc));
        say(
          `| ${describe(s)}${s.complete ? '' : ' (partial)'} | ${st.epochs} | ${goal} | ${acc('imp')} | ${acc('imp3')} | ${acc('sms-uniform')} | ${acc('sms-greedy')} | ${fmt(pick(u, last, bestAcc))} | ${fmt(pick(u, last, ensAcc))} | ${diffCell(paired(u, u, phases, soupAcc, bestAcc))} | ${diffCell(paired(g, g, phases, soupAcc, bestAcc))} | ${diffCell(paired(u, at('imp3'), [last], soupAcc))} | ${diffCell(paired(u, at('imp'), [last], soupAcc))} | ${where(s)} |`,
        );
      }
  }
  say();
  say('"IMP m×" is IMP with m times the retraining epochs of one candidate (the same compute as SMS with m candidates); "n/a" where that configuration did not run the method (`SMS_METHODS`).');
  if (mdOnly.length) say(`Earlier, shorter configurations without a results file for this table: ${mdOnly.map((d) => `[${relative(outDir, d)}/](${relative(outDir, join(d, 'sms-results.md'))})`).join(', ')}.`);
  say();

  // Across configurations on the same dense models.
  const pairs: string[] = [];
  for (let i = 0; i < saved.length; i++)
    for (let k = i + 1; k < saved.length; k++) {
      const a = saved[i];
      const b = saved[k];
      if (!sameDense(a, b) || a.config.phases !== b.config.phases) continue;
      const last = a.config.phases;
      const phases = Array.from({ length: last }, (_, x) => x + 1);
      for (const sa of mainStages(a))
        for (const sb of mainStages(b).filter((x) => x.epochs === sa.epochs))
          for (const goal of a.config.goals.filter((x) => b.config.goals.includes(x))) {
            if (a.config.m === b.config.m) continue;
            const [hi, lo, shi, slo] = a.config.m > b.config.m ? [a, b, sa, sb] : [b, a, sb, sa];
            for (const method of ['sms-uniform', 'sms-greedy'] as const) {
              const x = seedJobs(shi, method, goal);
              const y = seedJobs(slo, method, goal);
              if (!x.length || !y.length) continue;
              pairs.push(
                `| ${LABEL[method](hi.config.m)} − ${LABEL[method](lo.config.m)} | ${sa.epochs} | ${goal} | ${fmt(pick(x, last, soupAcc))} | ${fmt(pick(y, last, soupAcc))} | ${diffCell(paired(x, y, [last], soupAcc))} | ${diffCell(paired(x, y, phases, soupAcc))} | ${where(hi)} against ${where(lo)} |`,
              );
            }
            const x = seedJobs(shi, 'sms-uniform', goal);
            const y = seedJobs(slo, 'imp3', goal);
            if (x.length && y.length)
              pairs.push(
                `| ${LABEL['sms-uniform'](hi.config.m)} − ${LABEL.imp3(lo.config.m)} | ${sa.epochs} | ${goal} | ${fmt(pick(x, last, soupAcc))} | ${fmt(pick(y, last, soupAcc))} | ${diffCell(paired(x, y, [last], soupAcc))} | ${diffCell(paired(x, y, phases, soupAcc))} | ${where(hi)} against ${where(lo)} |`,
              );
          }
    }
  if (pairs.length) {
    say('### Across configurations, on the same dense models');
    say();
    say('Rows of different configurations whose dense models are the same (the built-in engine, the same template, seeds and pretraining: the dense accuracies agree to the digit), so the differences are paired by seed.');
    say();
    say('| comparison | E | S | first | second | first − second, final phase | first − second, all phases | configurations |');
    say('| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |');
    for (const p of pairs) say(p);
    say();
  }
  return md;
}

/** Replaces the section at the end of `outDir/sms-results.md` (or appends it). */
export function rewriteSummary(outDir: string): boolean {
  const file = join(outDir, 'sms-results.md');
  if (!existsSync(file)) return false;
  const text = readFileSync(file, 'utf8');
  const at = text.indexOf(`\n${SUMMARY_HEADING}\n`);
  const head = at >= 0 ? text.slice(0, at + 1) : `${text.replace(/\n*$/, '')}\n\n`;
  const section = summarySection(outDir);
  writeFileSync(file, `${head}${section.join('\n')}${section.length ? '\n' : ''}`.replace(/\n+$/, '\n'));
  return true;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const root = fileURLToPath(new URL('../../', import.meta.url));
  const outDir = resolve(root, process.env.SMS_OUT || 'docs');
  if (!rewriteSummary(outDir)) {
    console.error(`${relative(process.cwd(), join(outDir, 'sms-results.md'))} does not exist: run npm run bench:sms first`);
    process.exit(1);
  }
  console.log(`rewrote the section "${SUMMARY_HEADING.slice(3)}" of ${relative(process.cwd(), join(outDir, 'sms-results.md'))}`);
}
