import { uniformOver } from './weights.js';

/**
 * The greedy soup (Wortsman et al. 2022, "Model soups", Recipe 1; SMS, Zimmer et al. 2024): score
 * every candidate alone, sort by score (descending; ties keep input order), start from the best,
 * and add the next candidate when the uniform mean of the accepted set plus it scores at least as
 * well as the best so far (`>=`, SMS) or strictly better (`>`, the model-soups code).
 *
 * The core decides which sets to score and in which order; scoring (building the averaged model,
 * BN recalibration, validation accuracy) is the caller's. No set is ever scored twice.
 */

export type GreedyComparison = '>=' | '>';

/**
 * Scores the uniform soup of `members` (indices into the candidates, ascending); `weights` is the
 * same set as merge weights over all candidates (1/k for members, 0 elsewhere). Higher is better.
 */
export type SoupScorer = (weights: readonly number[], members: readonly number[]) => Promise<number>;

export interface GreedyStep {
  /** Candidate index (input order). */
  index: number;
  /** The candidate's own score. */
  score: number;
  /** Score of the accepted set plus this candidate (the candidate's own score for the first step). */
  soupScore: number;
  accepted: boolean;
}

export interface GreedyResult {
  /** Accepted candidate indices, in the order they were added. */
  accepted: number[];
  /** Merge weights over all candidates: uniform over `accepted`. */
  weights: number[];
  /** Score of the final soup. */
  score: number;
  /** One step per candidate, in the order they were considered (best first). */
  trace: GreedyStep[];
  /** Scorer calls made (individual scores passed in are not counted). */
  evaluations: number;
}

export interface GreedyOptions {
  /** Default '>=' (SMS). */
  comparison?: GreedyComparison;
  /** Known individual scores (e.g. each candidate's validation accuracy after retraining): not re-scored. */
  scores?: readonly number[];
  /** How many individual scores may run at once (default 1); the greedy steps are sequential. */
  concurrency?: number;
  signal?: AbortSignal;
}

/**
 * Runs the greedy soup over `candidates` (their count, or any array of them). A NaN score counts as
 * worse than any number: such a candidate sorts last and is never accepted.
 */
export async function greedySoup(candidates: number | readonly unknown[], score: SoupScorer, opts: GreedyOptions = {}): Promise<GreedyResult> {
  const m = typeof candidates === 'number' ? candidates : candidates.length;
  if (!Number.isInteger(m) || m < 1) throw new Error(`greedySoup needs at least one candidate, got ${m}`);
  const comparison = opts.comparison ?? '>=';
  if (comparison !== '>=' && comparison !== '>') throw new Error(`greedySoup: unknown comparison ${String(comparison)}`);
  if (opts.scores && opts.scores.length !== m) throw new Error(`greedySoup: ${opts.scores.length} scores for ${m} candidates`);

  const memo = new Map<string, number>();
  let evaluations = 0;
  const evaluate = async (set: readonly number[]): Promise<number> => {
    const members = [...set].sort((a, b) => a - b);
    const key = members.join(',');
    const known = memo.get(key);
    if (known !== undefined) return known;
    opts.signal?.throwIfAborted();
    evaluations++;
    const s = await score(uniformOver(m, members), members);
    if (typeof s !== 'number') throw new Error(`the soup scorer returned ${typeof s}, not a number`);
    memo.set(key, s);
    return s;
  };

  const individual = new Array<number>(m);
  if (opts.scores) {
    for (let i = 0; i < m; i++) {
      individual[i] = opts.scores[i];
      memo.set(String(i), opts.scores[i]);
    }
  } else {
    let next = 0;
    const lanes = Math.max(1, Math.min(m, Math.floor(opts.concurrency ?? 1)));
    await Promise.all(
      Array.from({ length: lanes }, async () => {
        while (next < m) {
          const i = next++;
          individual[i] = await evaluate([i]);
        }
      }),
    );
  }

  const rank = (s: number) => (Number.isNaN(s) ? Number.NEGATIVE_INFINITY : s);
  const order = Array.from({ length: m }, (_, i) => i).sort((a, b) => {
    const d = rank(individual[b]) - rank(individual[a]);
    return d > 0 ? 1 : d < 0 ? -1 : Number.isNaN(individual[a]) !== Number.isNaN(individual[b]) ? (Number.isNaN(individual[a]) ? 1 : -1) : a - b;
  });

  const better = comparison === '>=' ? (a: number, b: number) => a >= b : (a: number, b: number) => a > b;
  const accepted = [order[0]];
  let best = individual[order[0]];
  const trace: GreedyStep[] = [{ index: order[0], score: best, soupScore: best, accepted: true }];
  for (const i of order.slice(1)) {
    const soupScore = await evaluate([...accepted, i]);
    const ok = better(soupScore, best);
    if (ok) {
      accepted.push(i);
      best = soupScore;
    }
    trace.push({ index: i, score: individual[i], soupScore, accepted: ok });
  }
  return { accepted, weights: uniformOver(m, accepted), score: best, trace, evaluations };
}
