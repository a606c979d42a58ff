/**
 * One candidate's training configuration: its fields, their defaults and their ranges. The HTTP
 * DTOs (runs/run-requests.dto.ts) read their decorators' bounds and defaults from here, the service
 * fills a request's gaps with `TRAINING_DEFAULTS`, and the training loop takes the result.
 */
import { CoreInputError } from '../errors.js';
import { isSeed } from '../random.js';

export const OPTIMIZERS = ['sgd', 'adam'] as const;
/** constant (FT), linear decay (LLR), cosine (CLR), or ALLR (SMS); all but constant warm up. */
export const SCHEDULES = ['constant', 'linear', 'cosine', 'allr'] as const;
/** Training-time data augmentation, as the SMS code's CNN runs use it (torchvision RandomCrop + RandomHorizontalFlip). */
export const AUGMENTATIONS = ['none', 'crop-flip'] as const;

export type Optimizer = (typeof OPTIMIZERS)[number];
export type Schedule = (typeof SCHEDULES)[number];
export type Augmentation = (typeof AUGMENTATIONS)[number];

export interface TrainingConfig {
  /** Fixes the batch order (a seeded shuffle of the train split each epoch). */
  seed: number;
  /** May be fractional: training stops after round(epochs · stepsPerEpoch) steps. */
  epochs: number;
  batchSize: number;
  optimizer: Optimizer;
  /** SGD momentum (PyTorch semantics, no dampening). Ignored by Adam (β = 0.9, 0.999). */
  momentum: number;
  nesterov: boolean;
  /** The peak learning rate η_max. */
  learningRate: number;
  schedule: Schedule;
  /** Fraction of steps spent warming up (all schedules but constant). Default 0.1. */
  warmupFraction?: number;
  /** Coupled L2 weight decay (added to the gradient, as PyTorch's SGD/Adam `weight_decay`). */
  weightDecay: number;
  /** Random crops (4-pixel zero padding) and horizontal flips of every training batch, seeded by `seed`. Default none. */
  augment?: Augmentation;
  /** Evaluate after every epoch (the caller's `onEpochEnd` does), for a per-epoch accuracy curve. Default false. */
  evaluateEachEpoch?: boolean;
}

export type FullTrainingConfig = Required<TrainingConfig>;

export const TRAINING_DEFAULTS: FullTrainingConfig = {
  seed: 0,
  epochs: 1,
  batchSize: 128,
  optimizer: 'sgd',
  momentum: 0.9,
  nesterov: false,
  learningRate: 0.1,
  schedule: 'linear',
  warmupFraction: 0.1,
  weightDecay: 1e-4,
  augment: 'none',
  evaluateEachEpoch: false,
};

/** What a client may ask for (inclusive bounds); the loop itself accepts more (see validateTrainingConfig). */
export const TRAINING_RANGES = {
  seed: { min: 0, max: 2 ** 31 - 1 },
  epochs: { min: 0.001, max: 10_000 },
  batchSize: { min: 1, max: 65_536 },
  momentum: { min: 0, max: 0.999999 },
  learningRate: { min: 0, max: 100 },
  warmupFraction: { min: 0, max: 0.99 },
  weightDecay: { min: 0, max: 1 },
} as const;

/** What ALLR needs about the prune that preceded this retrain (see `allrInitialRate`). */
export interface AllrInputs {
  /** d = ‖θ − θ_pruned‖₂ / ‖θ‖₂ */
  relativeDistance: number;
  /** The phase's pruning rate p (fraction of the remaining weights pruned in this phase). */
  pruneRate: number;
  /** E_retrain / E_pretrain. */
  retrainToPretrainRatio: number;
}

/** ALLR's initial rate: clip((d/√p)·η_max, min(E_retrain/E_pretrain, 1)·η_max, η_max). */
export function allrInitialRate(etaMax: number, allr: AllrInputs): number {
  const { relativeDistance: d, pruneRate: p, retrainToPretrainRatio: r } = allr;
  const raw = p > 0 ? (d / Math.sqrt(p)) * etaMax : etaMax;
  const lower = Math.min(r, 1) * etaMax;
  return Math.min(Math.max(raw, lower), etaMax);
}

/**
 * The learning rate used for optimizer step `step` (0-based) of `totalSteps`.
 * constant: η_max throughout. Others warm up over W = floor(warmupFraction · T) steps with
 * η₀(1 − cos(π t / W))/2, then linear (and ALLR) decay linearly from η₀ at t = W to 0 at t = T;
 * cosine decays as η₀(1 + cos(π (t − W)/(T − W)))/2. η₀ = η_max except for ALLR.
 */
export function learningRateAt(step: number, totalSteps: number, config: TrainingConfig, allr?: AllrInputs): number {
  const etaMax = config.learningRate;
  if (config.schedule === 'constant') return etaMax;
  let eta0 = etaMax;
  if (config.schedule === 'allr') {
    if (!allr) throw new CoreInputError('bad-training-config', 'the allr schedule needs relativeDistance, pruneRate and retrainToPretrainRatio');
    eta0 = allrInitialRate(etaMax, allr);
  }
  const T = totalSteps;
  const W = Math.floor((config.warmupFraction ?? TRAINING_DEFAULTS.warmupFraction) * T);
  const t = step;
  if (t < W) return (eta0 * (1 - Math.cos((Math.PI * t) / W))) / 2;
  const progress = T > W ? (t - W) / (T - W) : 1;
  switch (config.schedule) {
    case 'linear':
    case 'allr':
      return eta0 * (1 - progress);
    case 'cosine':
      return (eta0 * (1 + Math.cos(Math.PI * progress))) / 2;
    default:
      throw new CoreInputError('bad-training-config', `unknown schedule "${config.schedule as string}"`);
  }
}

/** Steps per epoch keep the last partial batch (PyTorch's DataLoader default, drop_last = False). */
export function stepsFor(trainSize: number, config: Pick<TrainingConfig, 'epochs' | 'batchSize'>): { stepsPerEpoch: number; totalSteps: number } {
  const stepsPerEpoch = Math.ceil(trainSize / config.batchSize);
  return { stepsPerEpoch, totalSteps: Math.max(1, Math.round(config.epochs * stepsPerEpoch)) };
}

export function validateTrainingConfig(config: TrainingConfig, allr?: AllrInputs): void {
  const bad = (field: string, why: string) => {
    throw new CoreInputError('bad-training-config', `training.${field} ${why}`, { field });
  };
  if (!isSeed(config.seed)) bad('seed', 'must be a safe integer ≥ 0');
  if (!(config.epochs > 0) || !Number.isFinite(config.epochs)) bad('epochs', 'must be a positive number');
  if (!Number.isInteger(config.batchSize) || config.batchSize < 1) bad('batchSize', 'must be a positive integer');
  if (config.optimizer !== 'sgd' && config.optimizer !== 'adam') bad('optimizer', 'must be "sgd" or "adam"');
  if (!(config.momentum >= 0 && config.momentum < 1)) bad('momentum', 'must be in [0, 1)');
  if (!(config.learningRate >= 0) || !Number.isFinite(config.learningRate)) bad('learningRate', 'must be a finite number ≥ 0');
  if (!SCHEDULES.includes(config.schedule)) bad('schedule', 'must be constant, linear, cosine or allr');
  const w = config.warmupFraction ?? TRAINING_DEFAULTS.warmupFraction;
  if (!(w >= 0 && w < 1)) bad('warmupFraction', 'must be in [0, 1)');
  if (!(config.weightDecay >= 0) || !Number.isFinite(config.weightDecay)) bad('weightDecay', 'must be a finite number ≥ 0');
  if (config.augment !== undefined && config.augment !== 'none' && config.augment !== 'crop-flip') bad('augment', 'must be "none" or "crop-flip"');
  if (config.schedule === 'allr') {
    if (!allr) bad('schedule', '"allr" needs the prune inputs (relativeDistance, pruneRate, retrainToPretrainRatio)');
    else {
      if (!(allr.relativeDistance >= 0) || !Number.isFinite(allr.relativeDistance)) bad('allr.relativeDistance', 'must be ≥ 0');
      if (!(allr.pruneRate > 0 && allr.pruneRate <= 1)) bad('allr.pruneRate', 'must be in (0, 1]');
      if (!(allr.retrainToPretrainRatio > 0) || !Number.isFinite(allr.retrainToPretrainRatio)) bad('allr.retrainToPretrainRatio', 'must be > 0');
    }
  }
}
