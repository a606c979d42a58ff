/**
 * `npm run demo`: sparse model soups end to end against a running service (start it with `npm start`).
 *
 *  1. creates a model template (lenet-300-100 on Fashion-MNIST; `DEMO_ARCH=cnn-bn` for the small CNN),
 *  2. pretrains it densely (a `train` run),
 *  3. starts an IMP run and an SMS run (m = 3 candidates, T = 3 phases, goal sparsity 0.9, uniform
 *     soup) from the dense model and follows both live over server-sent events,
 *  4. prints the comparison table (GET /runs/compare) and saves the accuracy-against-sparsity plot
 *     (GET /runs/{id}/report.svg with the IMP run as baseline).
 *
 * Environment: SPARSOUP_URL (default http://localhost:3000), SPARSOUP_API_KEY (a write key, when the
 * service has API_KEYS), DEMO_ARCH, DEMO_PRETRAIN_EPOCHS, DEMO_EPOCHS (per candidate and phase),
 * DEMO_SEED, DEMO_OUT (the SVG path). Budgets are small on purpose (fractional epochs): the point is
 * to watch the recipe run in a few minutes on two cores, not to reach the paper's accuracies.
 * Ctrl-C cancels the runs it started.
 */
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { resolve } from 'node:path';
import { elapsed, RunProgress } from '../bench/run-progress.js';
import { ApiError, client, pct, type Run, type RunCompare, waitForRun } from '../bench/sms-client.js';

const ARCH = process.env.DEMO_ARCH ?? 'lenet-300-100';
/** Per architecture: dense pretraining epochs, retraining epochs per candidate and phase (measured on 2 shared cores). */
const BUDGETS: Record<string, { pretrain: number; retrain: number }> = {
  'lenet-300-100': { pretrain: 2, retrain: 0.5 },
  'cnn-bn': { pretrain: 0.3, retrain: 0.05 },
  'resnet-small': { pretrain: 0.1, retrain: 0.02 },
};

function numberEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`${name} must be a positive number, got "${raw}"`);
  return v;
}

async function main(): Promise<void> {
  const t0 = Date.now();
  const api = client(process.env.SPARSOUP_URL ?? 'http://localhost:3000');
  const budget = BUDGETS[ARCH] ?? BUDGETS['cnn-bn'];
  const pretrainEpochs = numberEnv('DEMO_PRETRAIN_EPOCHS', budget.pretrain);
  const retrainEpochs = numberEnv('DEMO_EPOCHS', budget.retrain);
  const seed = Math.floor(numberEnv('DEMO_SEED', 1));
  const dataset = 'fashion-mnist';
  const S = 0.9;
  const T = 3;
  const m = 3;

  const health = await api.json<{ backend?: { name?: string } }>('GET', '/health');
  console.log(`sparsoup demo — ${api.url} (backend ${health.backend?.name ?? 'unknown'})`);
  console.log(`${ARCH} on ${dataset}: dense pretraining ${pretrainEpochs} epochs; IMP and SMS (m = ${m}, T = ${T}, S = ${S}, uniform soup), ${retrainEpochs} epochs per candidate and phase\n`);

  const progress = new RunProgress();
  const started: string[] = [];
  let interrupted = false;
  process.once('SIGINT', () => {
    interrupted = true;
    progress.stop();
    console.log('\ninterrupted: cancelling the runs this demo started…');
    Promise.allSettled(started.map((id) => api.json('POST', `/runs/${id}/cancel`))).finally(() => process.exit(130));
  });

  const follow = async (run: Run, label: string, phases = 0, perPhase = 1): Promise<Run> => {
    started.push(run.id);
    progress.add(run.id, label, phases, perPhase);
    await api.events(run.id, (e) => progress.handle(run.id, e));
    return waitForRun(api, run.id, 500);
  };

  try {
    const template = await api.json<{ id: string; paramCount: number }>('POST', '/models/templates', { architecture: ARCH, datasetId: dataset, seed });
    progress.log(`template ${template.id} (${template.paramCount.toLocaleString('en-US')} parameters)`);
    const training = { seed, batchSize: 128, learningRate: 0.1, momentum: 0.9, schedule: 'linear' };
    const pretrain = await follow(
      await api.json<Run>('POST', '/runs', { kind: 'train', modelId: template.id, datasetId: dataset, training: { ...training, epochs: pretrainEpochs } }),
      'dense pretraining',
    );
    if (pretrain.status !== 'succeeded') throw new Error(`pretraining ${pretrain.status}: ${pretrain.error ?? 'no error recorded'}`);
    const dense = pretrain.candidates[0];
    progress.log(`dense model ${dense.resultModelId}: test accuracy ${pct(dense.testAccuracy)}\n`);

    const retrain = { ...training, epochs: retrainEpochs, learningRate: 0.05 };
    const common = { modelId: dense.resultModelId, datasetId: dataset, goalSparsity: S, phases: T, pruning: { method: 'magnitude-global' }, training: retrain };
    const imp = await api.json<Run>('POST', '/runs', { kind: 'imp', ...common });
    const sms = await api.json<Run>('POST', '/runs', { kind: 'sms', ...common, m, vary: 'seed', soup: { method: 'uniform' } });
    progress.log(`IMP run ${imp.id}\nSMS run ${sms.id}`);
    const [impDone, smsDone] = await Promise.all([follow(imp, 'IMP', T, 1), follow(sms, `SMS m=${m}`, T, m)]);
    progress.stop();
    for (const r of [impDone, smsDone]) if (r.status !== 'succeeded') throw new Error(`${r.kind} run ${r.id} ${r.status}: ${r.error ?? 'no error recorded'}`);

    const cmp = await api.json<RunCompare>('GET', `/runs/compare?ids=${imp.id},${sms.id}`);
    console.log(`\nIMP against SMS on ${dataset} (${ARCH}, dense ${pct(dense.testAccuracy)} test accuracy):\n`);
    const rows = [['phase', 'sparsity', 'IMP test', 'SMS soup test', 'best SMS candidate', 'soup − best', 'soup − IMP']];
    for (const row of cmp.rows) {
      const [i, s] = [row.cells.find((c) => c.runId === imp.id), row.cells.find((c) => c.runId === sms.id)];
      const diff = (a: number | null | undefined, b: number | null | undefined) => (a == null || b == null ? 'n/a' : `${((a - b) * 100).toFixed(2)} pp`);
      rows.push([
        String(row.phase),
        row.sparsity == null ? 'n/a' : `${(row.sparsity * 100).toFixed(1)} %`,
        pct(i?.testAccuracy),
        pct(s?.testAccuracy),
        pct(s?.bestCandidateTestAccuracy),
        diff(s?.testAccuracy, s?.bestCandidateTestAccuracy),
        diff(s?.testAccuracy, i?.testAccuracy),
      ]);
    }
    const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
    rows.forEach((r, k) => {
      console.log(r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  '));
      if (k === 0) console.log(widths.map((w) => '-'.repeat(w)).join('  '));
    });

    const svg = await api.text(`/runs/${sms.id}/report.svg?baselineIds=${imp.id}`);
    const out = resolve(process.env.DEMO_OUT ?? `${tmpdir()}/sparsoup-demo-${sms.id.slice(0, 8)}.svg`);
    writeFileSync(out, svg);
    console.log(`\nplot (test accuracy against sparsity, SMS with IMP as baseline): ${out}`);
    console.log(`report: ${api.url}/runs/${sms.id}/report · finished in ${elapsed(t0)}`);
  } catch (err) {
    progress.stop();
    if (interrupted) return;
    console.error(`\ndemo failed: ${err instanceof ApiError || err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  }
}

main().catch((err) => {
  console.error(`demo failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
