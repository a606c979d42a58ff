import { Inject, Injectable } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import { type DataSource, type EntityManager, In } from 'typeorm';
import { ArtifactsService } from '../artifacts/artifacts.service.js';
import type { AppConfig } from '../config/config.js';
import { APP_CONFIG } from '../config/config.module.js';
import { type GreedyStep, greedySoup } from '../core/soups/greedy.js';
import type { ModelEntity } from '../models/model.entity.js';
import { modelRef } from '../models/model-ref.js';
import { ModelsService } from '../models/models.service.js';
import { RunEntity, RunPhaseEntity } from '../runs/run.entity.js';
import { SoupEntity, SoupIngredientEntity } from '../soups/soup.entity.js';
import { WebhooksService } from '../webhooks/webhooks.service.js';
import { WorkerPoolService } from '../workers/worker-pool.service.js';
import { BN_STATISTIC } from './bn.js';
import { enqueueTask, TaskEntity } from './task.entity.js';
import type { TaskMetrics } from './tasks.dto.js';

/** Thrown inside the scorer when a set's score is not known yet: the greedy replay stops there. */
class Pending extends Error {}
/** A scoring task failed for good (its failure already ended the soup, or the run). */
class ScoringFailed extends Error {}

const OPEN = (t: TaskEntity) => t.status === 'queued' || t.status === 'leased';

/** How a scored set came out: its score (val accuracy), the model that was scored (the one stored if it wins), the task that scored it. */
export interface ScoredSet {
  score: number;
  modelId: string;
  taskId: string;
  metrics: TaskMetrics;
}

export interface ExternalGreedyOutcome {
  weights: number[];
  trace: GreedyStep[];
  score: number;
  /** The final set as scored: with batch norm, the trainer's recalibration of its merge; else the merge itself. */
  result: ScoredSet;
}

/** An external phase's result and the task whose metrics evaluated it. */
export interface ExternalPhaseScore {
  resultModelId: string;
  soupId: string | null;
  metrics: { valAccuracy?: number | null; testAccuracy?: number | null; ece?: number; loss?: number | null; perClassAccuracy?: (number | null)[] };
  taskId: string;
}

/** Who the scoring tasks serve: an SMS run's phase (runId, phase), or a soup of its own (runId null). */
export interface GreedyOwner {
  runId: string | null;
  phase: number;
}

/**
 * Greedy soups whose sets an external trainer scores. The service decides which sets to score
 * (`greedySoup`, the same core as the built-in path) and merges each one itself (`mergeCheckpoints`:
 * float64 sums, the shared mask re-applied); a trainer recalibrates its batch norm (a `recalibrate`
 * task, when the models have any) and measures val accuracy (the recalibration's metrics, or an
 * `evaluate` task). The state is the task rows: each call replays the greedy algorithm over the
 * scores known so far and enqueues the next set it needs, so a restart loses nothing. The model a
 * set was scored on is the model stored when that set wins, so the trace's score is the soup's.
 */
@Injectable()
export class ExternalGreedyService {
  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @InjectDataSource() private readonly dataSource: DataSource,
    private readonly models: ModelsService,
    private readonly pool: WorkerPoolService,
    private readonly artifacts: ArtifactsService,
    private readonly webhooks: WebhooksService,
  ) {}

  /** A greedy soup's row and ingredients, scored by external trainers; `record` runs in the same transaction. */
  async createRow(
    tx: EntityManager,
    soup: { modelIds: string[]; datasetId: string; comparison: '>=' | '>'; bnRecalibration: boolean; name: string | null; callbackUrl: string | null },
  ): Promise<SoupEntity> {
    const s = await tx.save(
      tx.create(SoupEntity, {
        status: 'queued',
        method: 'greedy',
        params: { weights: null, comparison: soup.comparison, bnRecalibration: soup.bnRecalibration, name: soup.name, trainer: 'external' },
        datasetId: soup.datasetId,
        steps: [],
        callbackUrl: soup.callbackUrl,
      }),
    );
    await tx.insert(SoupIngredientEntity, soup.modelIds.map((modelId, position) => ({ soupId: s.id, modelId, position })));
    return s;
  }

  /**
   * An SMS phase's greedy soup over its candidates: the soup's row is noted on the phase as it is
   * created (a repeated step continues that soup). Null while scoring; then the final set, whose
   * scoring task's metrics (val and test) are the phase's evaluation.
   */
  async phase(run: RunEntity, phase: RunPhaseEntity, modelIds: string[], comparison: '>=' | '>'): Promise<ExternalPhaseScore | null> {
    let soupId = phase.soupId;
    if (!soupId) {
      soupId = await this.dataSource.transaction(async (tx) => {
        const s = await this.createRow(tx, { modelIds, datasetId: run.datasetId, comparison, bnRecalibration: true, name: `${run.kind}-${run.id.slice(0, 8)}-p${phase.index}-soup`, callbackUrl: null });
        await tx.update(RunPhaseEntity, { runId: run.id, index: phase.index }, { soupId: s.id });
        return s.id;
      });
    }
    let outcome: ExternalGreedyOutcome | null;
    try {
      outcome = await this.advance(soupId, { runId: run.id, phase: phase.index });
    } catch (err) {
      // A failed scoring task has ended the run already; nothing more to do in this phase.
      if (err instanceof ScoringFailed) return null;
      throw err;
    }
    if (!outcome) return null;
    const m = outcome.result.metrics;
    // The phase reports the test accuracy of the model stored; a trainer's evaluate on val sends it too.
    return { resultModelId: outcome.result.modelId, soupId, metrics: m, taskId: outcome.result.taskId };
  }

  /**
   * Moves the soup as far as the known scores allow. Null while a scoring task is out (its result
   * calls this again); the outcome once the greedy algorithm has finished, with the soup's row
   * succeeded. Throws when a scoring task failed for good.
   */
  async advance(soupId: string, owner: GreedyOwner): Promise<ExternalGreedyOutcome | null> {
    const soup = await this.dataSource.getRepository(SoupEntity).findOneByOrFail({ id: soupId });
    if (soup.status === 'succeeded') return this.outcomeOf(soup);
    if (soup.status === 'failed' || soup.status === 'cancelled') throw new ScoringFailed(soup.error ?? `soup ${soupId} ${soup.status}`);
    const ingredients = await this.dataSource.getRepository(SoupIngredientEntity).find({ where: { soupId }, order: { position: 'ASC' } });
    const candidates = await Promise.all(ingredients.map((i) => this.models.entity(i.modelId)));
    const recalibrate = soup.params.bnRecalibration !== false && candidates[0].tensors.some((t) => BN_STATISTIC.test(t.name));
    const maskIds = [...new Set(candidates.map((c) => c.maskId))];
    const maskId = maskIds.length === 1 ? maskIds[0] : null;
    if (soup.status === 'queued') await this.dataSource.getRepository(SoupEntity).update({ id: soupId, status: 'queued' }, { status: 'running' });

    const tasks = await this.dataSource.getRepository(TaskEntity).find({ where: { soupId }, order: { createdAt: 'ASC', id: 'ASC' } });
    const latest = (members: readonly number[], kind: 'recalibrate' | 'evaluate') => {
      const key = members.join(',');
      return tasks.filter((t) => t.kind === kind && (t.members ?? []).join(',') === key).at(-1) ?? null;
    };
    const enqueue = async (members: readonly number[], kind: 'recalibrate' | 'evaluate', modelId: string | null) => {
      const merged = modelId ? null : await this.mergeSet(soup, candidates.filter((_, i) => members.includes(i)), members, maskId);
      const input = modelId ?? merged!;
      const made = await this.dataSource.transaction(async (tx) => {
        // One scoring task per set and kind, however many advances race here.
        await tx.findOne(SoupEntity, { where: { id: soupId }, lock: { mode: 'pessimistic_write' } });
        const existing = await tx.findBy(TaskEntity, { soupId, kind });
        if (existing.some((t) => (t.members ?? []).join(',') === members.join(',') && t.status !== 'failed')) return false;
        await enqueueTask(tx, {
          kind,
          runId: owner.runId,
          soupId,
          members: [...members],
          // An SMS phase's candidates' ensemble rides along with the first candidate's scoring.
          ensembleModelIds: owner.runId && members.length === 1 && members[0] === 0 && candidates.length > 1 ? candidates.map((c) => c.id) : null,
          phase: owner.phase,
          modelId: input,
          maskId,
          datasetId: soup.datasetId!,
          split: kind === 'evaluate' ? 'val' : 'train',
          maxAttempts: this.config.taskMaxAttempts,
        });
        return true;
      });
      if (!made && merged) await this.models.delete(merged).catch(() => {});
    };

    /** A set's score when its tasks are done; enqueues the next task it needs (and answers Pending) otherwise. */
    const scoreOf = async (members: readonly number[]): Promise<ScoredSet> => {
      let evaluateOn: string | null = null;
      if (recalibrate) {
        const r = latest(members, 'recalibrate');
        if (!r) {
          await enqueue(members, 'recalibrate', null);
          throw new Pending();
        }
        if (OPEN(r)) throw new Pending();
        if (r.status !== 'succeeded') throw new ScoringFailed(r.error ?? `the recalibration of set {${members.join(', ')}} ${r.status}`);
        const m = (r.result?.metrics ?? null) as TaskMetrics | null;
        // A trainer that evaluated the model it recalibrated sent the score with it: no second pass.
        if (typeof m?.valAccuracy === 'number' && typeof m.testAccuracy === 'number') return { score: m.valAccuracy, modelId: r.resultModelId!, taskId: r.id, metrics: m };
        evaluateOn = r.resultModelId!;
      }
      const e = latest(members, 'evaluate');
      if (!e) {
        await enqueue(members, 'evaluate', evaluateOn);
        throw new Pending();
      }
      if (OPEN(e)) throw new Pending();
      if (e.status !== 'succeeded') throw new ScoringFailed(e.error ?? `the evaluation of set {${members.join(', ')}} ${e.status}`);
      const m = e.result?.metrics as TaskMetrics;
      return { score: m.valAccuracy!, modelId: e.modelId, taskId: e.id, metrics: m };
    };

    // Every candidate alone first, all at once: as many trainers as candidates can work in parallel.
    const individual: ScoredSet[] = [];
    let waiting = false;
    for (let i = 0; i < candidates.length; i++) {
      try {
        individual.push(await scoreOf([i]));
      } catch (err) {
        if (!(err instanceof Pending)) throw err;
        waiting = true;
      }
    }
    if (waiting) return null;

    const scored = new Map<string, ScoredSet>(individual.map((s, i) => [String(i), s]));
    let g: Awaited<ReturnType<typeof greedySoup>>;
    try {
      g = await greedySoup(
        candidates.length,
        async (_weights, members) => {
          const s = await scoreOf(members);
          scored.set(members.join(','), s);
          return s.score;
        },
        { comparison: (soup.params.comparison as '>=' | '>' | null) ?? '>=', scores: individual.map((s) => s.score) },
      );
    } catch (err) {
      if (err instanceof Pending) return null;
      throw err;
    }
    const result = scored.get([...g.accepted].sort((a, b) => a - b).join(','));
    if (!result) throw new Error('the greedy soup accepted a set it never scored');
    await this.finish(soup, candidates, g, result);
    return { weights: g.weights, trace: g.trace, score: g.score, result };
  }

  /** A finished soup's outcome again (a phase step repeated after the soup landed). */
  private async outcomeOf(soup: SoupEntity): Promise<ExternalGreedyOutcome> {
    const task = await this.dataSource.getRepository(TaskEntity).findOne({ where: [{ soupId: soup.id, resultModelId: soup.resultModelId! }, { soupId: soup.id, kind: 'evaluate', modelId: soup.resultModelId!, status: 'succeeded' }], order: { createdAt: 'DESC' } });
    if (!task) throw new Error(`soup ${soup.id} succeeded but no scoring task made its model`);
    const metrics = task.result?.metrics as TaskMetrics;
    return { weights: soup.weights ?? [], trace: [], score: soup.valAccuracy ?? Number.NaN, result: { score: soup.valAccuracy ?? Number.NaN, modelId: soup.resultModelId!, taskId: task.id, metrics } };
  }

  /** The soup's row as the built-in path leaves it: the scored model of the final set is its result. */
  private async finish(soup: SoupEntity, candidates: ModelEntity[], g: Awaited<ReturnType<typeof greedySoup>>, result: ScoredSet): Promise<void> {
    const model = await this.models.entity(result.modelId);
    const maskHashes = [...new Set(candidates.map((c) => c.impliedMaskHash))];
    await this.dataSource.transaction(async (tx) => {
      const done = await tx.update(SoupEntity, { id: soup.id, status: 'running' }, {
        status: 'succeeded',
        resultModelId: model.id,
        maskHash: maskHashes.length === 1 ? maskHashes[0] : model.impliedMaskHash,
        sparsity: model.prunableSparsity,
        weights: g.weights,
        steps: g.trace.map((s) => ({ modelId: candidates[s.index].id, score: s.score, soupScore: s.soupScore, accepted: s.accepted })),
        valAccuracy: g.score,
        error: null,
        finishedAt: new Date(),
      });
      if (!done.affected) return;
      await this.webhooks.notify({ resource: 'soup', id: soup.id, status: 'succeeded', callbackUrl: soup.callbackUrl, data: { resultModelId: model.id, method: soup.method, valAccuracy: g.score } }, { manager: tx });
    });
  }

  /** The uniform mean of a set, written by the core merge (the bytes a trainer then recalibrates or evaluates). */
  private async mergeSet(soup: SoupEntity, members: ModelEntity[], indices: readonly number[], maskId: string | null): Promise<string> {
    const merged = await this.pool.run({ type: 'soup', models: members.map(modelRef), maskHashes: members.map((m) => m.impliedMaskHash), method: 'uniform', recalibrate: false });
    const stored = merged.stored!.weights;
    try {
      const model = await this.models.create({
        name: `soup-${soup.id.slice(0, 8)}-set-${indices.join('.')}`,
        format: 'safetensors',
        weights: stored.weights,
        topology: null,
        entries: stored.entries,
        stats: stored.stats,
        impliedMaskHash: stored.impliedMaskHash,
        metadata: members[0].metadata,
        origin: { kind: 'soup', soupId: soup.id, method: 'uniform', greedySet: [...indices], weights: merged.weights },
        parentIds: members.map((m) => m.id),
        maskId,
      });
      return model.id;
    } catch (err) {
      await this.artifacts.discard(stored.weights);
      throw err;
    }
  }

  /** A scoring task failed for good outside a run: the soup fails with its reason. */
  static async failSoup(tx: EntityManager, soupId: string, error: string): Promise<void> {
    await tx.update(SoupEntity, { id: soupId, status: In(['queued', 'running']) }, { status: 'failed', error, finishedAt: new Date() });
    // Its other scorings are moot: a trainer holding one hears "cancelled" on its next heartbeat.
    await tx.update(TaskEntity, { soupId, status: In(['queued', 'leased']) }, { status: 'cancelled', leaseExpiresAt: null, finishedAt: new Date() });
  }
}

export { Pending as GreedyPending, ScoringFailed as GreedyScoringFailed };

/**
 * The prediction ensemble of an external phase's candidates (mean of their softmax outputs, test
 * accuracy), as a trainer measured it alongside a task that named the candidates; null when none did.
 */
export async function ensembleTestAccuracy(dataSource: DataSource, runId: string, phase: number): Promise<number | null> {
  const tasks = await dataSource.getRepository(TaskEntity).find({ where: { runId, phase, status: 'succeeded' }, order: { finishedAt: 'DESC' } });
  for (const t of tasks) {
    const v = (t.result?.metrics as TaskMetrics | null | undefined)?.ensembleTestAccuracy;
    if (t.ensembleModelIds && typeof v === 'number') return v;
  }
  return null;
}
