/**
 * The contract between the main thread and the worker threads: every task's payload and result,
 * keyed by the task's name in `TaskMap`. `WorkerPool.run()` is typed from it, so a task's result
 * type follows from its `type`; `task-worker.ts` checks that each handler returns what the map says.
 *
 * Tasks carry ids, refs and configurations; tensors stay in artifacts. Results are small; big
 * outputs are written as artifacts by the worker and returned as their sha256. This file imports
 * types only, and nothing from the handlers.
 */
import type { ImageDataset, SplitName } from '../core/data/dataset.js';
import type { MaskSummary } from '../core/masks/index.js';
import type { KernelLayout, PruneMethod, PruneStats } from '../core/pruning/methods.js';
import type { GreedyComparison, GreedyStep } from '../core/soups/greedy.js';
import type { TensorEntry } from '../core/tensors.js';
import type { BackendInfo, BackendPreference } from '../core/tf/backend.js';
import type { WasmKernels } from '../core/tf/kernel-set.js';
import type { SparseMatMulMode } from '../core/tf/sparse-matmul.js';
import type { TrainingConfig, TrainResult } from '../core/tf/train.js';
import type { StoredArtifact } from '../storage/artifact-store.js';
import type { WrittenCheckpoint } from '../storage/checkpoint-output.js';
import type { ArtifactStoreConfig } from '../storage/create.js';

/** What every worker thread starts with. */
export interface WorkerInit {
  backend: BackendPreference;
  /** EVAL_SPARSE for this thread's evaluations (absent: 'auto'). */
  evalSparse?: SparseMatMulMode;
  /** WASM_THREADS: XNNPACK threads of this thread's wasm backend (absent: 1). */
  wasmThreads?: number;
  /** WASM_KERNELS for this thread (absent: 'sparsoup'). */
  wasmKernels?: WasmKernels;
  /** The artifact store the thread opens (once) and hands to every handler. */
  artifacts: ArtifactStoreConfig;
  cacheDir: string;
  /** Lets tests ask a thread to crash, to check that the pool replaces it. */
  allowDiagnostics?: boolean;
}

// ── Refs: how tasks name stored things ──────────────────────────────────────────────────────────

/** A stored model as tasks name it: enough to open its weights, nothing big. */
export interface StoredModelRef {
  format: 'safetensors' | 'tfjs-layers' | 'tfjs-graph';
  weightsSha256: string;
  /** The weights layout (absolute offsets): needed for TensorFlow.js weights, informative for safetensors. */
  entries: TensorEntry[];
}

/** A TensorFlow.js layers model as tasks name it: its model.json and weights artifacts. */
export interface StoredLayersModelRef extends StoredModelRef {
  topologySha256: string | null;
}

/** A dataset as tasks name it: built-in by name, or uploaded files by role → sha256. */
export interface DatasetRef {
  id: string;
  source: 'builtin' | 'upload';
  format?: 'idx' | 'npz' | 'safetensors';
  files?: Record<string, string>;
  classes?: number;
}

/** A layers model a worker stored: its model.json and its weights. */
export interface StoredLayersModel {
  topology: StoredArtifact;
  model: WrittenCheckpoint;
}

// ── Tasks and their results ─────────────────────────────────────────────────────────────────────

export interface InfoTask {
  type: 'info';
}
export interface InfoResult {
  backend: BackendInfo;
  threadId: number;
}

export interface CrashTask {
  type: 'crash';
  /** `sleep`: keeps the thread for `ms` and then succeeds (returns null). */
  how: 'exit' | 'throw' | 'hang' | 'spin' | 'sleep';
  ms?: number;
}

export interface PruneTask {
  type: 'prune';
  model: StoredModelRef;
  options: {
    method: PruneMethod;
    sparsity?: number;
    n?: number;
    m?: number;
    seed?: number;
    layout?: KernelLayout;
    include?: string[];
    exclude?: string[];
  };
}

export interface ApplyMaskTask {
  type: 'apply-mask';
  model: StoredModelRef;
  maskSha256: string;
}

export interface MaskedModelResult {
  mask: { stored: StoredArtifact; hash: string; summary: MaskSummary };
  model: WrittenCheckpoint;
  /** Hash of the written model's exact-zero pattern: the mask hash, unless kept weights were already zero. */
  impliedMaskHash: string;
  stats?: PruneStats;
}

export interface InspectDatasetTask {
  type: 'inspect-dataset';
  dataset: DatasetRef;
}

export interface DatasetSummary {
  inputShape: [number, number, number];
  classes: number;
  splits: { train: number; val: number; test: number };
  pixels: 'uint8' | 'float32';
}

export interface EvaluateTask {
  type: 'evaluate';
  model: StoredLayersModelRef;
  dataset: DatasetRef;
  split: SplitName;
  corruptions?: { name: string; severity: number }[];
  /** Seeds the corruptions (same seed, same corrupted images). */
  seed?: number;
}

export interface EvaluationMetrics {
  count: number;
  accuracy: number;
  loss: number;
  ece: number;
  perClassAccuracy: (number | null)[];
  worstClass: number | null;
  worstClassAccuracy: number | null;
  corruptions: { name: string; severity: number; accuracy: number }[];
  meanCorruptionAccuracy: number | null;
}

export interface TemplateTask {
  type: 'template';
  architecture: string;
  inputShape: [number, number, number];
  classes: number;
  seed: number;
}

export interface TrainTask {
  type: 'train';
  model: StoredLayersModelRef;
  dataset: DatasetRef;
  config: TrainingConfig;
  /** `none`: dense training; `implied`: the model's own zero pattern; otherwise a stored mask. */
  mask: { kind: 'none' } | { kind: 'implied' } | { kind: 'stored'; sha256: string };
  /**
   * ALLR: p and E_retrain / E_pretrain, with d as the run's check measured it or, when not measured
   * (a phase's prune, runs stored before), the dense model the pruned one came from to measure it against.
   */
  allr?: { pruneRate: number; retrainToPretrainRatio: number } & ({ relativeDistance: number } | { reference: StoredLayersModelRef });
  /** Re-estimate batch-norm statistics after training (SMS does, for every candidate). */
  recalibrate: boolean;
  evaluate: SplitName[];
  progressEvery?: number;
}

/** Accuracy after one epoch of training (before BN recalibration), for `evaluateEachEpoch`. */
export interface EpochPoint {
  epoch: number;
  valAccuracy: number | null;
  testAccuracy: number | null;
}

export interface TrainTaskResult {
  stored: StoredLayersModel;
  train: TrainResult & { epochCurve?: EpochPoint[] };
  metrics: Partial<Record<SplitName, EvaluationMetrics>>;
  /** Pruned weights that are non-zero after training: always 0 (checked, or the task fails). */
  revived: number;
  backend: string;
}

/** Checks, before any training, that a training task can run: model, dataset and mask fit. */
export interface CheckTrainTask {
  type: 'check-train';
  model: StoredLayersModelRef;
  dataset: DatasetRef;
  maskSha256?: string;
  /** ALLR of a retrain run: the dense model to measure d against, here where the model is loaded anyway. */
  allrReference?: StoredLayersModelRef;
}

export interface CheckTrainResult {
  /** Elements of the model's prunable trainable weights. */
  prunableWeights: number;
  hasBatchNorm: boolean;
  /** ALLR's d = ‖θ − θ_pruned‖₂ / ‖θ‖₂ against `allrReference`, when one was given. */
  relativeDistance?: number;
}

export interface SoupTask {
  type: 'soup';
  models: StoredLayersModelRef[];
  /** Known implied-mask hashes: when all equal, validation reads no tensor data for masks. */
  maskHashes: (string | null)[];
  method: 'uniform' | 'weighted' | 'greedy';
  weights?: number[];
  comparison?: GreedyComparison;
  dataset?: DatasetRef;
  /** Re-estimate batch-norm statistics of every scored set and of the result (layers models with BN). */
  recalibrate: boolean;
  /** Fraction of the train split the recalibration runs over (default 0.2, as SMS). */
  recalibrationFraction?: number;
  /** Only check that the candidates can be merged (a 422 now rather than a failed job later). */
  validateOnly?: boolean;
  /**
   * Greedy: the candidates' own validation accuracies (models order), measured by the caller. The
   * singles are then ranked by these and not scored again (m − 1 scorings instead of 2m − 1); with
   * scores measured the way greedy measures a single (merged alone, recalibrated on the same fraction
   * of train with the same subset, val at batch 512) the soup is the same set and the same bytes.
   */
  knownScores?: number[];
}

export interface SoupTaskResult {
  maskHash: string;
  weights: number[];
  steps: GreedyStep[] | null;
  /** Validation accuracy of the result (when a dataset was given and the models are layers models). */
  valAccuracy: number | null;
  stored: { weights: WrittenCheckpoint; topology: StoredArtifact | null } | null;
  /** Threads that ran the recalibration and validation passes (2 when a score helper took part). */
  scoringThreads?: number;
  /** Greedy: the sets recalibrated and scored (fewer when the task carried `knownScores`). */
  scorings?: number;
}

export interface CompareModelsTask {
  type: 'compare-models';
  models: StoredModelRef[];
}

export interface ModelDistance {
  a: number;
  b: number;
  /** ‖θa − θb‖₂ over the prunable weights. */
  l2: number;
  /** The angle between θa and θb in degrees (null when one is all zeros). */
  angleDegrees: number | null;
}

/** The prediction ensemble of a phase's candidates (mean of their softmax outputs). */
export interface EnsembleEvaluateTask {
  type: 'ensemble-evaluate';
  models: StoredLayersModelRef[];
  dataset: DatasetRef;
  split: SplitName;
}

export interface EnsembleEvaluation {
  count: number;
  members: number;
  /** Accuracy of the mean of the members' softmax outputs. */
  accuracy: number;
}

/**
 * Loads a dataset once for the whole process: the worker reads it and returns it copied into
 * SharedArrayBuffers, which the pool keeps and hands to every later task that names the dataset
 * (threads then share that memory instead of each holding a copy). Sent by the pool itself.
 */
export interface ShareDatasetTask {
  type: 'share-dataset';
  dataset: DatasetRef;
}

/** Diagnostics (tests, benches): what a thread sees of a dataset. */
export interface ProbeDatasetTask {
  type: 'probe-dataset';
  dataset: DatasetRef;
  /** Index into `x` whose value is returned. */
  index: number;
  /**
   * A rendezvous (an Int32Array counter over a SharedArrayBuffer): the thread counts itself in and
   * waits (at most 20 s) until `parties` threads have, so that many probes run on distinct threads.
   */
  rendezvous?: { counter: SharedArrayBuffer; parties: number };
}

export interface ProbeDatasetResult {
  threadId: number;
  /** Whether the thread's `x` lies in a SharedArrayBuffer. */
  shared: boolean;
  value: number;
  byteLength: number;
}

/** Every task by name: its payload and its result. */
export interface TaskMap {
  info: { task: InfoTask; result: InfoResult };
  crash: { task: CrashTask; result: null };
  prune: { task: PruneTask; result: MaskedModelResult };
  'apply-mask': { task: ApplyMaskTask; result: MaskedModelResult };
  'inspect-dataset': { task: InspectDatasetTask; result: DatasetSummary };
  evaluate: { task: EvaluateTask; result: EvaluationMetrics };
  template: { task: TemplateTask; result: StoredLayersModel };
  train: { task: TrainTask; result: TrainTaskResult };
  'check-train': { task: CheckTrainTask; result: CheckTrainResult };
  soup: { task: SoupTask; result: SoupTaskResult };
  'compare-models': { task: CompareModelsTask; result: ModelDistance[] };
  'ensemble-evaluate': { task: EnsembleEvaluateTask; result: EnsembleEvaluation };
  'share-dataset': { task: ShareDatasetTask; result: ImageDataset };
  'probe-dataset': { task: ProbeDatasetTask; result: ProbeDatasetResult };
}

export type TaskName = keyof TaskMap;
export type TaskOf<K extends TaskName> = TaskMap[K]['task'];
export type ResultOf<K extends TaskName> = TaskMap[K]['result'];
export type WorkerTask = TaskOf<TaskName>;

/** Messages a running task sends back on its progress port. */
export interface ProgressMessage {
  kind: 'progress';
  [key: string]: unknown;
}

/** Key of a task result that is really a client error (CoreInputError) raised in the worker. */
export const CORE_INPUT_ERROR = '__coreInputError';
