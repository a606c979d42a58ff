import { Column, CreateDateColumn, Entity, JoinColumn, ManyToOne, PrimaryColumn, PrimaryGeneratedColumn } from 'typeorm';
import { DatasetEntity } from '../datasets/dataset.entity.js';
import { ModelEntity } from '../models/model.entity.js';
import type { RunStatus } from '../runs/run.entity.js';

export interface SoupStep {
  modelId: string;
  score: number;
  soupScore: number;
  accepted: boolean;
}

/** A merge of candidates that share one mask: its method, ingredients (in order), trace and result. */
@Entity('soup')
export class SoupEntity {
  @PrimaryGeneratedColumn('uuid')
  id: string;

  @Column({ type: 'varchar', length: 10 })
  status: RunStatus;

  @Column({ type: 'varchar', length: 20 })
  method: 'uniform' | 'weighted' | 'greedy';

  /** The method's parameters as resolved: weights, comparison, bnRecalibration. */
  @Column({ type: 'jsonb' })
  params: Record<string, unknown>;

  @Column({ type: 'varchar', length: 100, name: 'dataset_id', nullable: true })
  datasetId: string | null;

  @ManyToOne(() => DatasetEntity, { onDelete: 'RESTRICT', nullable: true })
  @JoinColumn({ name: 'dataset_id' })
  dataset: DatasetEntity | null;

  @Column({ type: 'uuid', name: 'result_model_id', nullable: true })
  resultModelId: string | null;

  @ManyToOne(() => ModelEntity, { onDelete: 'RESTRICT', nullable: true })
  @JoinColumn({ name: 'result_model_id' })
  resultModel: ModelEntity | null;

  @Column({ type: 'char', length: 64, name: 'mask_hash', nullable: true })
  maskHash: string | null;

  @Column({ type: 'double precision', nullable: true })
  sparsity: number | null;

  /** The normalised merge weights over the ingredients. */
  @Column({ type: 'jsonb', nullable: true })
  weights: number[] | null;

  @Column({ type: 'jsonb', default: () => "'[]'" })
  steps: SoupStep[];

  @Column({ type: 'double precision', name: 'val_accuracy', nullable: true })
  valAccuracy: number | null;

  @Column({ type: 'text', nullable: true })
  error: string | null;

  @Column({ type: 'varchar', length: 2000, name: 'callback_url', nullable: true })
  callbackUrl: string | null;

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt: Date;

  @Column({ type: 'timestamptz', name: 'finished_at', nullable: true })
  finishedAt: Date | null;
}

@Entity('soup_ingredient')
export class SoupIngredientEntity {
  @PrimaryColumn({ type: 'uuid', name: 'soup_id' })
  soupId: string;

  @PrimaryColumn({ type: 'int' })
  position: number;

  @Column({ type: 'uuid', name: 'model_id' })
  modelId: string;

  @ManyToOne(() => SoupEntity, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'soup_id' })
  soup: SoupEntity;

  @ManyToOne(() => ModelEntity, { onDelete: 'RESTRICT' })
  @JoinColumn({ name: 'model_id' })
  model: ModelEntity;
}
