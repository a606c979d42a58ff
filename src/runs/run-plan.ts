import type { FullTrainingConfig } from '../core/tf/training-config.js';

/**
 * What a run's candidates need besides their configurations, fixed at POST time: the run's `plan`
 * column (RunEntity.plan), the one home of the mask a run trains under, ALLR's inputs and the phases.
 */
export interface RunPlan {
  mask: { kind: 'none' } | { kind: 'implied' } | { kind: 'stored'; sha256: string };
  /** Retrain runs: d is measured once, by the pre-flight check (absent in runs stored before it was). */
  allr?: { referenceModelId: string; pruneRate: number; retrainToPretrainRatio: number; relativeDistance?: number };
  /** What the pre-flight check found in the model (built-in trainer). */
  check?: { prunableWeights: number; hasBatchNorm: boolean };
  /** imp / sms: the candidate configurations every phase retrains, and how phases prune and merge. */
  phases?: {
    configs: FullTrainingConfig[];
    goalSparsity: number;
    count: number;
    pruning: { method: 'magnitude-global' | 'magnitude-layerwise' | 'random'; include?: string[]; exclude?: string[] };
    soup: { method: 'uniform' | 'greedy'; comparison: '>=' | '>' } | null;
    /** ALLR: E_retrain / E_pretrain (p and the reference are per phase). */
    retrainToPretrainRatio?: number;
    /** Dense training of the starting model before phase 1 (phase 0's single candidate). */
    pretrain?: FullTrainingConfig;
  };
}

/** Phase k of T prunes to s_k = 1 − (1 − S)^(k/T) (per-phase rate p = 1 − (1 − S)^(1/T)). */
export function phaseSparsity(goal: number, phases: number, k: number): number {
  return 1 - (1 - goal) ** (k / phases);
}

/**
 * ALLR's p: the fraction of the remaining weights a prune removed, from what was kept before and
 * after it (counts, or kept fractions 1 − s). The one formula for retrain runs and for phases.
 */
export function allrPruneRate(keptBefore: number, keptAfter: number): number {
  return 1 - keptAfter / keptBefore;
}

/** ALLR's p for phase k of an IMP / SMS run: from the previous phase's sparsity to this one's. */
export function phasePruneRate(phases: Pick<NonNullable<RunPlan['phases']>, 'goalSparsity' | 'count'>, k: number, sparsity: number): number {
  const previous = k === 1 ? 0 : phaseSparsity(phases.goalSparsity, phases.count, k - 1);
  return allrPruneRate(1 - previous, 1 - sparsity);
}
