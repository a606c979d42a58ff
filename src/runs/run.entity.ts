import { Column, CreateDateColumn, Entity, Index, JoinColumn, ManyToOne, PrimaryColumn, PrimaryGeneratedColumn, Unique } from 'typeorm';
import { DatasetEntity } from '../datasets/dataset.entity.js';
import { MaskEntity } from '../masks/mask.entity.js';
import { ModelEntity } from '../models/model.entity.js';
import type { RunPlan } from './run-plan.js';

export type RunKind = 'train' | 'retrain' | 'imp' | 'sms';
export type RunStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';
export const FINISHED: readonly RunStatus[] = ['succeeded', 'failed', 'cancelled'];

/** A run: its request, its state, and where it came from. Candidates and events hang off it. */
@Entity('run')
@Index(['status', 'createdAt'])
export class RunEntity {
  @PrimaryGeneratedColumn('uuid')
  id: string;

  @Column({ type: 'varchar', length: 10 })
  kind: RunKind;

  @Column({ type: 'varchar', length: 10 })
  status: RunStatus;

  /** The TensorFlow.js backend that trained it (`wasm`, `tensorflow-gpu`, …), once known. */
  @Column({ type: 'varchar', length: 20, nullable: true })
  backend: string | null;

  /** The validated request, as the client sent it (provenance). */
  @Column({ type: 'jsonb' })
  request: Record<string, unknown>;

  /** What its candidates need besides their configurations, fixed at POST time (run-plan.ts). */
  @Column({ type: 'jsonb', default: () => `'{"mask": {"kind": "none"}}'` })
  plan: RunPlan;

  @Column({ type: 'uuid', name: 'model_id' })
  modelId: string;

  @ManyToOne(() => ModelEntity, { onDelete: 'RESTRICT' })
  @JoinColumn({ name: 'model_id' })
  model: ModelEntity;

  @Column({ type: 'varchar', length: 100, name: 'dataset_id' })
  datasetId: string;

  @ManyToOne(() => DatasetEntity, { onDelete: 'RESTRICT' })
  @JoinColumn({ name: 'dataset_id' })
  dataset: DatasetEntity;

  @Column({ type: 'uuid', name: 'mask_id', nullable: true })
  maskId: string | null;

  @ManyToOne(() => MaskEntity, { onDelete: 'RESTRICT', nullable: true })
  @JoinColumn({ name: 'mask_id' })
  mask: MaskEntity | null;

  @Column({ type: 'varchar', length: 2000, name: 'callback_url', nullable: true })
  callbackUrl: string | null;

  @Column({ type: 'text', nullable: true })
  error: string | null;

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt: Date;

  @Column({ type: 'timestamptz', name: 'started_at', nullable: true })
  startedAt: Date | null;

  @Column({ type: 'timestamptz', name: 'finished_at', nullable: true })
  finishedAt: Date | null;

  /** IMP / SMS: while set and in the future, one process is advancing the state machine. */
  @Column({ type: 'timestamptz', name: 'advance_lease_until', nullable: true })
  advanceLeaseUntil: Date | null;

  /** The process (`worker_process` id) holding the lease: a dead holder's lease is taken over at once. */
  @Column({ type: 'uuid', name: 'advance_lease_holder', nullable: true })
  advanceLeaseHolder: string | null;
}

export interface CandidateProgress {
  epoch: number;
  step: number;
  steps: number;
  loss?: number;
  learningRate?: number;
  samplesPerSecond?: number;
}

/** One retraining of a run: its configuration, state, attempts and result. */
@Entity('run_candidate')
@Unique(['runId', 'phase', 'index'])
export class RunCandidateEntity {
  @PrimaryGeneratedColumn('uuid')
  id: string;

  @Column({ type: 'uuid', name: 'run_id' })
  runId: string;

  @ManyToOne(() => RunEntity, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'run_id' })
  run: RunEntity;

  @Column({ type: 'int', default: 0 })
  phase: number;

  @Column({ type: 'int' })
  index: number;

  @Column({ type: 'jsonb' })
  config: Record<string, unknown>;

  @Column({ type: 'varchar', length: 10 })
  status: RunStatus;

  @Column({ type: 'int', default: 0 })
  attempts: number;

  @Column({ type: 'jsonb', nullable: true })
  progress: CandidateProgress | null;

  /** The process that runs it now (a worker_process id): how dead workers' candidates are found. */
  @Column({ type: 'uuid', name: 'worker_id', nullable: true })
  workerId: string | null;

  @Column({ type: 'uuid', name: 'job_id', nullable: true })
  jobId: string | null;

  @Column({ type: 'uuid', name: 'result_model_id', nullable: true })
  resultModelId: string | null;

  @ManyToOne(() => ModelEntity, { onDelete: 'RESTRICT', nullable: true })
  @JoinColumn({ name: 'result_model_id' })
  resultModel: ModelEntity | null;

  @Column({ type: 'double precision', name: 'val_accuracy', nullable: true })
  valAccuracy: number | null;

  @Column({ type: 'double precision', name: 'test_accuracy', nullable: true })
  testAccuracy: number | null;

  /** Everything measured: per-split metrics, training throughput, losses. */
  @Column({ type: 'jsonb', nullable: true })
  metrics: Record<string, unknown> | null;

  @Column({ type: 'text', nullable: true })
  error: string | null;

  @Column({ type: 'timestamptz', name: 'started_at', nullable: true })
  startedAt: Date | null;

  @Column({ type: 'timestamptz', name: 'finished_at', nullable: true })
  finishedAt: Date | null;
}

/** What happened to a run, in order: the SSE stream replays it (Last-Event-ID) and reports read it. */
@Entity('run_event')
@Index(['runId', 'id'])
export class RunEventEntity {
  @PrimaryGeneratedColumn('increment', { type: 'bigint' })
  id: number;

  @Column({ type: 'uuid', name: 'run_id' })
  runId: string;

  @ManyToOne(() => RunEntity, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'run_id' })
  run: RunEntity;

  @Column({ type: 'varchar', length: 40 })
  type: string;

  @Column({ type: 'uuid', name: 'candidate_id', nullable: true })
  candidateId: string | null;

  @Column({ type: 'jsonb' })
  data: Record<string, unknown>;

  @CreateDateColumn({ type: 'timestamptz' })
  at: Date;
}

/** A process that works jobs; its heartbeat says it is alive. */
@Entity('worker_process')
export class WorkerProcessEntity {
  @PrimaryColumn({ type: 'uuid' })
  id: string;

  @Column({ type: 'varchar', length: 200 })
  hostname: string;

  @Column({ type: 'int' })
  pid: number;

  @Column({ type: 'int' })
  threads: number;

  @Column({ type: 'timestamptz', name: 'started_at' })
  startedAt: Date;

  @Column({ type: 'timestamptz', name: 'heartbeat_at' })
  heartbeatAt: Date;
}

export type PhaseStatus = 'queued' | 'pruned' | 'training' | 'merging' | 'succeeded' | 'failed' | 'cancelled';

/**
 * One prune–retrain–merge phase of an IMP or SMS run: the run's state machine. Each step records its
 * output before the next starts, so a restart continues from the last recorded step.
 */
@Entity('run_phase')
export class RunPhaseEntity {
  @PrimaryColumn({ type: 'uuid', name: 'run_id' })
  runId: string;

  /** 1-based, as the paper counts phases. */
  @PrimaryColumn({ type: 'int' })
  index: number;

  @ManyToOne(() => RunEntity, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'run_id' })
  run: RunEntity;

  /** The target sparsity s_k = 1 − (1 − S)^(k/T). */
  @Column({ type: 'double precision' })
  sparsity: number;

  @Column({ type: 'varchar', length: 10 })
  status: PhaseStatus;

  @Column({ type: 'uuid', name: 'input_model_id', nullable: true })
  inputModelId: string | null;

  @Column({ type: 'uuid', name: 'pruned_model_id', nullable: true })
  prunedModelId: string | null;

  @ManyToOne(() => ModelEntity, { onDelete: 'RESTRICT', nullable: true })
  @JoinColumn({ name: 'pruned_model_id' })
  prunedModel: ModelEntity | null;

  @Column({ type: 'uuid', name: 'mask_id', nullable: true })
  maskId: string | null;

  @ManyToOne(() => MaskEntity, { onDelete: 'RESTRICT', nullable: true })
  @JoinColumn({ name: 'mask_id' })
  mask: MaskEntity | null;

  @Column({ type: 'uuid', name: 'soup_id', nullable: true })
  soupId: string | null;

  @Column({ type: 'uuid', name: 'result_model_id', nullable: true })
  resultModelId: string | null;

  @ManyToOne(() => ModelEntity, { onDelete: 'RESTRICT', nullable: true })
  @JoinColumn({ name: 'result_model_id' })
  resultModel: ModelEntity | null;

  /** The phase's figures: result accuracy, ECE, candidate mean and best, L2 distances, … */
  @Column({ type: 'jsonb', nullable: true })
  metrics: Record<string, unknown> | null;

  @Column({ type: 'timestamptz', name: 'finished_at', nullable: true })
  finishedAt: Date | null;
}
