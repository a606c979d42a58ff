import { Column, CreateDateColumn, Entity, Index, JoinColumn, ManyToOne, PrimaryGeneratedColumn } from 'typeorm';
import { ArtifactEntity } from '../artifacts/artifact.entity.js';
import { ModelEntity } from '../models/model.entity.js';
import type { MaskRow } from './mask-row.js';

export interface MaskTensorSummary {
  name: string;
  shape: number[];
  size: number;
  kept: number;
  sparsity: number;
}

/** A pruning mask: one bit per prunable weight, stored as an artifact, identified by its canonical hash. */
@Entity('mask')
export class MaskEntity implements MaskRow {
  @PrimaryGeneratedColumn('uuid')
  id: string;

  @Index()
  @Column({ type: 'char', length: 64 })
  hash: string;

  @Column({ type: 'varchar', length: 32 })
  method: string;

  /** The request that made it: sparsity, n, m, include, exclude, seed, layout. */
  @Column({ type: 'jsonb' })
  params: Record<string, unknown>;

  @Column({ type: 'double precision' })
  sparsity: number;

  @Column({ type: 'bigint', name: 'prunable_count' })
  prunableCount: number;

  @Column({ type: 'bigint', name: 'kept_count' })
  keptCount: number;

  @Column({ type: 'jsonb' })
  tensors: MaskTensorSummary[];

  @ManyToOne(() => ModelEntity, { onDelete: 'RESTRICT', nullable: true })
  @JoinColumn({ name: 'source_model_id' })
  sourceModel: ModelEntity | null;

  @Column({ type: 'uuid', name: 'source_model_id', nullable: true })
  sourceModelId: string | null;

  @ManyToOne(() => ArtifactEntity, { onDelete: 'RESTRICT', nullable: false })
  @JoinColumn({ name: 'artifact_sha256' })
  artifact: ArtifactEntity;

  @Column({ type: 'char', length: 64, name: 'artifact_sha256' })
  artifactSha256: string;

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt: Date;
}
