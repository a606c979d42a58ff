import type { EntityManager } from 'typeorm';
import { Column, CreateDateColumn, Entity, Index, JoinColumn, ManyToOne, PrimaryGeneratedColumn } from 'typeorm';
import { RunEntity } from '../runs/run.entity.js';

export type TaskKind = 'train' | 'evaluate' | 'recalibrate';
export const TASK_KINDS: readonly TaskKind[] = ['train', 'evaluate', 'recalibrate'];
export type TaskStatus = 'queued' | 'leased' | 'succeeded' | 'failed' | 'cancelled';
export const TASK_STATUSES: readonly TaskStatus[] = ['queued', 'leased', 'succeeded', 'failed', 'cancelled'];
export const SETTLED_TASK: readonly TaskStatus[] = ['succeeded', 'failed', 'cancelled'];

/**
 * One framework-specific step (train a candidate under a mask, evaluate a model, recalibrate batch
 * norm) that an external trainer leases over HTTP. A row, so the queue survives a restart; a lease
 * that lapses returns it to the queue.
 */
@Entity('task')
@Index(['status', 'kind', 'createdAt'])
@Index(['runId'])
@Index(['soupId'])
export class TaskEntity {
  @PrimaryGeneratedColumn('uuid')
  id: string;

  @Column({ type: 'varchar', length: 12 })
  kind: TaskKind;

  @Column({ type: 'varchar', length: 10 })
  status: TaskStatus;

  /** Leases so far (each lease is an attempt; a refused result or a lapsed lease ends one). */
  @Column({ type: 'int', default: 0 })
  attempts: number;

  @Column({ type: 'int', name: 'max_attempts', default: 3 })
  maxAttempts: number;

  @Column({ type: 'timestamptz', name: 'lease_expires_at', nullable: true })
  leaseExpiresAt: Date | null;

  /** The trainer that holds the lease (as it named itself). */
  @Column({ type: 'varchar', length: 200, name: 'worker_id', nullable: true })
  workerId: string | null;

  /** The run the task serves; null for a greedy soup's scoring outside any run (POST /soups). */
  @Column({ type: 'uuid', name: 'run_id', nullable: true })
  runId: string | null;

  @ManyToOne(() => RunEntity, { onDelete: 'CASCADE', nullable: true })
  @JoinColumn({ name: 'run_id' })
  run: RunEntity | null;

  @Column({ type: 'uuid', name: 'candidate_id', nullable: true })
  candidateId: string | null;

  @Column({ type: 'uuid', name: 'soup_id', nullable: true })
  soupId: string | null;

  /** A phase's candidates (SMS, m > 1) whose prediction ensemble the trainer may also evaluate on test. */
  @Column({ type: 'jsonb', name: 'ensemble_model_ids', nullable: true })
  ensembleModelIds: string[] | null;

  /** Greedy soups: the candidate set being scored (indices into the soup's ingredients, ascending). */
  @Column({ type: 'jsonb', nullable: true })
  members: number[] | null;

  /** The run's phase (0: a retrain run's candidates). */
  @Column({ type: 'int', default: 0 })
  phase: number;

  /** The input model (what the trainer downloads). */
  @Column({ type: 'uuid', name: 'model_id' })
  modelId: string;

  @Column({ type: 'uuid', name: 'mask_id', nullable: true })
  maskId: string | null;

  /** train: the full training configuration, with `initialLearningRate` (ALLR's η₀, else η_max). */
  @Column({ type: 'jsonb', nullable: true })
  training: Record<string, unknown> | null;

  @Column({ type: 'varchar', length: 100, name: 'dataset_id' })
  datasetId: string;

  @Column({ type: 'varchar', length: 10 })
  split: 'train' | 'val' | 'test';

  /** What the accepted result was: metrics, and the model it stored (train, recalibrate). */
  @Column({ type: 'jsonb', nullable: true })
  result: Record<string, unknown> | null;

  @Column({ type: 'uuid', name: 'result_model_id', nullable: true })
  resultModelId: string | null;

  @Column({ type: 'text', nullable: true })
  error: string | null;

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt: Date;

  @Column({ type: 'timestamptz', name: 'finished_at', nullable: true })
  finishedAt: Date | null;
}

/** A new task for the queue, in the caller's transaction; trainers long-polling in this process wake up. */
export async function enqueueTask(
  tx: EntityManager,
  t: Pick<TaskEntity, 'kind' | 'runId' | 'modelId' | 'datasetId' | 'split'> & Partial<Pick<TaskEntity, 'candidateId' | 'soupId' | 'members' | 'ensembleModelIds' | 'phase' | 'maskId' | 'training' | 'maxAttempts'>>,
): Promise<TaskEntity> {
  const saved = await tx.save(tx.create(TaskEntity, { candidateId: null, soupId: null, members: null, ensembleModelIds: null, phase: 0, maskId: null, training: null, ...t, status: 'queued', attempts: 0 }));
  taskNotifier.pending = true;
  // Wakes the waiters after the caller's transaction had a moment to commit; they check the table anyway.
  setImmediate(() => taskNotifier.wake());
  return saved;
}

/** In-process wake-up for long-polling leases (other processes find new rows by their periodic check). */
class TaskNotifier {
  pending = false;
  private waiters = new Set<() => void>();
  wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
    });
  }
  wake(): void {
    for (const w of [...this.waiters]) w();
  }
}
export const taskNotifier = new TaskNotifier();
