import { Injectable } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import { type DataSource, In } from 'typeorm';
import { badRequest } from '../common/problem.js';
import { ModelEntity } from '../models/model.entity.js';
import { SoupEntity, SoupIngredientEntity } from '../soups/soup.entity.js';
import { accuracySparsitySvg, type PlotSeries } from './report-svg.js';
import { RunCandidateEntity, type RunEntity, RunPhaseEntity } from './run.entity.js';
import type { RunCompareDto, RunReportDto, RunReportPhaseDto } from './run-reports.dto.js';
import { RunsService } from './runs.service.js';

const mean = (xs: (number | null)[]) => {
  const v = xs.filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
};
const best = (xs: (number | null)[]) => {
  const v = xs.filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
  return v.length ? Math.max(...v) : null;
};

/** The report of a run (per phase: candidates, their mean and best, the result), its plot, and comparisons. */
@Injectable()
export class RunReportService {
  constructor(
    @InjectDataSource() private readonly dataSource: DataSource,
    private readonly runs: RunsService,
  ) {}

  async report(id: string): Promise<RunReportDto> {
    const run = await this.runs.entity(id);
    const [candidates, phases] = await Promise.all([
      this.dataSource.getRepository(RunCandidateEntity).find({ where: { runId: id }, order: { phase: 'ASC', index: 'ASC' } }),
      this.dataSource.getRepository(RunPhaseEntity).find({ where: { runId: id }, order: { index: 'ASC' } }),
    ]);
    const resultIds = candidates.map((c) => c.resultModelId).filter((x): x is string => !!x);
    const models = resultIds.length ? await this.dataSource.getRepository(ModelEntity).findBy({ id: In(resultIds) }) : [];
    const sparsityOf = new Map(models.map((m) => [m.id, m.prunableSparsity]));
    const soups = phases.some((p) => p.soupId) ? await this.dataSource.getRepository(SoupEntity).findBy({ id: In(phases.map((p) => p.soupId).filter((x): x is string => !!x)) }) : [];
    // A retrain run has no phases: its soup is one made afterwards (POST /soups) from its candidates.
    const candidateSoup = !phases.length && resultIds.length ? await this.latestSoupOf(resultIds) : null;
    const phaseRows: RunReportPhaseDto[] = (phases.length ? phases.map((p) => p.index) : [0]).map((index) => {
      const p = phases.find((x) => x.index === index);
      const cs = candidates.filter((c) => c.phase === index);
      const metrics = (p?.metrics ?? {}) as Record<string, number | null | undefined>;
      const soup = soups.find((s) => s.id === p?.soupId) ?? (p ? undefined : (candidateSoup ?? undefined));
      const sparsity = p?.sparsity ?? mean(cs.map((c) => (c.resultModelId ? (sparsityOf.get(c.resultModelId) ?? null) : null))) ?? 0;
      return {
        index,
        sparsity,
        actualSparsity: (metrics.actualSparsity as number | undefined) ?? sparsity,
        status: p?.status ?? run.status,
        candidates: cs.map((c) => ({ id: c.id, index: c.index, seed: (c.config as { seed?: number }).seed ?? null, config: c.config, status: c.status, valAccuracy: c.valAccuracy, testAccuracy: c.testAccuracy, resultModelId: c.resultModelId })),
        candidateMean: { valAccuracy: mean(cs.map((c) => c.valAccuracy)), testAccuracy: mean(cs.map((c) => c.testAccuracy)) },
        candidateBest: { valAccuracy: best(cs.map((c) => c.valAccuracy)), testAccuracy: best(cs.map((c) => c.testAccuracy)) },
        result: p?.resultModelId
          ? {
              modelId: p.resultModelId,
              valAccuracy: metrics.valAccuracy ?? null,
              testAccuracy: metrics.testAccuracy ?? null,
              ece: metrics.ece ?? null,
              worstClassAccuracy: metrics.worstClassAccuracy ?? null,
              meanCorruptionAccuracy: metrics.meanCorruptionAccuracy ?? null,
            }
          : null,
        soup: soup ? { id: soup.id, method: soup.method, weights: soup.weights ?? [], valAccuracy: soup.valAccuracy } : null,
        ensembleTestAccuracy: (metrics.ensembleTestAccuracy as number | undefined) ?? null,
        meanL2Distance: (metrics.meanL2Distance as number | undefined) ?? null,
        meanAngleDegrees: (metrics.meanAngleDegrees as number | undefined) ?? null,
      };
    });
    return { id: run.id, kind: run.kind, status: run.status, datasetId: run.datasetId, modelId: run.modelId, label: label(run), phases: phaseRows };
  }

  /** The newest succeeded soup whose ingredients are all among these models, or null. */
  private async latestSoupOf(modelIds: string[]): Promise<SoupEntity | null> {
    const ingredients = this.dataSource.getRepository(SoupIngredientEntity);
    const touching = await ingredients.find({ where: { modelId: In(modelIds) }, select: { soupId: true } });
    const soupIds = [...new Set(touching.map((i) => i.soupId))];
    if (!soupIds.length) return null;
    const all = await ingredients.find({ where: { soupId: In(soupIds) }, select: { soupId: true, modelId: true } });
    const ours = new Set(modelIds);
    const within = soupIds.filter((id) => all.filter((i) => i.soupId === id).every((i) => ours.has(i.modelId)));
    if (!within.length) return null;
    return this.dataSource.getRepository(SoupEntity).findOne({ where: { id: In(within), status: 'succeeded' }, order: { createdAt: 'DESC' } });
  }

  /** Accuracy against sparsity: this run and any baselines, one series each. */
  async svg(id: string, baselineIds: string[], metric: 'test' | 'val'): Promise<string> {
    const reports = await Promise.all([id, ...baselineIds].map((x) => this.report(x)));
    const key = metric === 'val' ? 'valAccuracy' : 'testAccuracy';
    const series: PlotSeries[] = reports.map((r) => ({
      label: r.label,
      line: r.phases.filter((p) => p.result).map((p) => ({ sparsity: p.actualSparsity, accuracy: p.result?.[key] ?? Number.NaN })),
      points: r.phases.flatMap((p) => p.candidates.map((c) => ({ sparsity: p.actualSparsity, accuracy: c[key] ?? Number.NaN }))),
    }));
    for (const s of series) if (!s.line.length) s.line = reports[series.indexOf(s)].phases.map((p) => ({ sparsity: p.actualSparsity, accuracy: p.candidateMean[key] ?? Number.NaN }));
    return accuracySparsitySvg(`${metric} accuracy against sparsity — ${reports[0].label} on ${reports[0].datasetId}`, series, `${metric} accuracy`);
  }

  async compare(ids: string[]): Promise<RunCompareDto> {
    if (ids.length < 1 || ids.length > 12) throw badRequest('ids: give between 1 and 12 run ids, comma-separated', 'validation');
    const reports = await Promise.all(ids.map((id) => this.report(id)));
    const phaseCount = Math.max(...reports.map((r) => r.phases.length));
    return {
      runs: reports.map((r) => ({ id: r.id, kind: r.kind, label: r.label, status: r.status })),
      rows: Array.from({ length: phaseCount }, (_, i) => ({
        phase: reports[0].phases[i]?.index ?? i + 1,
        sparsity: reports.find((r) => r.phases[i])?.phases[i].sparsity ?? null,
        cells: reports.map((r) => {
          const p = r.phases[i];
          return { runId: r.id, testAccuracy: p?.result?.testAccuracy ?? p?.candidateMean.testAccuracy ?? null, valAccuracy: p?.result?.valAccuracy ?? p?.candidateMean.valAccuracy ?? null, bestCandidateTestAccuracy: p?.candidateBest.testAccuracy ?? null };
        }),
      })),
    };
  }
}

function label(run: RunEntity): string {
  const req = run.request as { m?: number; epochsMultiplier?: number; soup?: { method?: string } };
  if (run.kind === 'sms') return `SMS m=${req.m ?? '?'} (${req.soup?.method ?? 'uniform'})`;
  if (run.kind === 'imp') return req.epochsMultiplier && req.epochsMultiplier !== 1 ? `IMP ${req.epochsMultiplier}×` : 'IMP';
  return `${run.kind} ${run.id.slice(0, 8)}`;
}
