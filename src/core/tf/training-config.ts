/**
 * One candidate's training configuration: its fields, their defaults and their ranges. The HTTP
 * DTOs (runs/run-requests.dto.ts) read their decorators' bounds and defaults from here, the service
 * fills a request's gaps with `TRAINING_DEFAULTS`, and the training loop takes the result.
 */

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
