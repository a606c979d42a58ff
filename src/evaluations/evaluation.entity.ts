import { Column, CreateDateColumn, Entity, Index, JoinColumn, ManyToOne, PrimaryGeneratedColumn } from 'typeorm';
import { DatasetEntity } from '../datasets/dataset.entity.js';
import { ModelEntity } from '../models/model.entity.js';

/** A model's figures on one dataset split, stored with the model (deleted with it). */
@Entity('evaluation')
export class EvaluationEntity {
  @PrimaryGeneratedColumn('uuid')
  id: string;

  @Index()
  @Column({ type: 'uuid', name: 'model_id' })
  modelId: string;

  @ManyToOne(() => ModelEntity, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'model_id' })
  model: ModelEntity;

  @Column({ type: 'varchar', length: 100, name: 'dataset_id' })
  datasetId: string;

  @ManyToOne(() => DatasetEntity, { onDelete: 'RESTRICT' })
  @JoinColumn({ name: 'dataset_id' })
  dataset: DatasetEntity;

  @Column({ type: 'varchar', length: 10 })
  split: 'train' | 'val' | 'test';

  @Column({ type: 'int' })
  count: number;

  @Column({ type: 'double precision' })
  accuracy: number;

  @Column({ type: 'double precision' })
  loss: number;

  @Column({ type: 'double precision' })
  ece: number;

  @Column({ type: 'jsonb', name: 'per_class_accuracy' })
  perClassAccuracy: (number | null)[];

  @Column({ type: 'int', name: 'worst_class', nullable: true })
  worstClass: number | null;

  @Column({ type: 'double precision', name: 'worst_class_accuracy', nullable: true })
  worstClassAccuracy: number | null;

  @Column({ type: 'jsonb' })
  corruptions: { name: string; severity: number; accuracy: number }[];

  @Column({ type: 'double precision', name: 'mean_corruption_accuracy', nullable: true })
  meanCorruptionAccuracy: number | null;

  @Column({ type: 'int' })
  seed: number;

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt: Date;
}
