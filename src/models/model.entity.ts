import { Column, CreateDateColumn, Entity, Index, JoinColumn, ManyToOne, PrimaryColumn, PrimaryGeneratedColumn, type Relation } from 'typeorm';
import { ArtifactEntity } from '../artifacts/artifact.entity.js';
import type { ModelShard } from '../core/checkpoint/sharded.js';
import type { DType } from '../core/tensors.js';
import type { MaskRow } from '../masks/mask-row.js';

export type ModelFormat = 'tfjs-layers' | 'tfjs-graph' | 'safetensors';

export interface ModelTensor {
  name: string;
  dtype: DType;
  shape: number[];
  prunable: boolean;
  /** Exact zeros / elements. */
  sparsity: number;
  zeros: number;
  size: number;
  /** Absolute offset and length in the weights artifact. */
  byteOffset: number;
  byteLength: number;
}

/** How a model came to be: the configuration and seed that made it (provenance, as mergekit keeps it). */
export interface ModelOrigin {
  kind: 'upload' | 'template' | 'prune' | 'mask-apply' | 'soup' | 'train' | 'retrain';
  [detail: string]: unknown;
}

@Entity('model')
@Index(['name'])
export class ModelEntity {
  @PrimaryGeneratedColumn('uuid')
  id: string;

  @Column({ type: 'varchar', length: 200 })
  name: string;

  @Column({ type: 'varchar', length: 20 })
  format: ModelFormat;

  /** The safetensors file, or the TensorFlow.js weights (all weight files concatenated in manifest order). */
  @ManyToOne(() => ArtifactEntity, { onDelete: 'RESTRICT', nullable: false })
  @JoinColumn({ name: 'weights_sha256' })
  weights: ArtifactEntity;

  @Column({ type: 'char', length: 64, name: 'weights_sha256' })
  weightsSha256: string;

  /** TensorFlow.js only: the model.json as uploaded (topology and weights manifest). */
  @ManyToOne(() => ArtifactEntity, { onDelete: 'RESTRICT', nullable: true })
  @JoinColumn({ name: 'topology_sha256' })
  topology: ArtifactEntity | null;

  @Column({ type: 'char', length: 64, name: 'topology_sha256', nullable: true })
  topologySha256: string | null;

  @Column({ type: 'bigint', name: 'size_bytes' })
  sizeBytes: number;

  @Column({ type: 'bigint', name: 'param_count' })
  paramCount: number;

  @Column({ type: 'double precision' })
  sparsity: number;

  @Column({ type: 'double precision', name: 'prunable_sparsity' })
  prunableSparsity: number;

  @Column({ type: 'boolean', name: 'non_finite' })
  nonFinite: boolean;

  @Column({ type: 'jsonb' })
  tensors: ModelTensor[];

  @Column({ type: 'jsonb', default: () => "'{}'" })
  metadata: Record<string, string>;

  @Column({ type: 'jsonb' })
  origin: ModelOrigin;

  /** A sharded safetensors model (the Hugging Face layout): its shard files and their tensors; null for one file. */
  @Column({ type: 'jsonb', nullable: true })
  shards: ModelShard[] | null;

  @Column({ type: 'char', length: 64, name: 'implied_mask_hash', nullable: true })
  impliedMaskHash: string | null;

  /** The mask this model was pruned with (by name, typed by `MaskRow`: the mask entity imports this one). */
  @ManyToOne('MaskEntity', { onDelete: 'RESTRICT', nullable: true })
  @JoinColumn({ name: 'mask_id' })
  mask: Relation<MaskRow> | null;

  @Column({ type: 'uuid', name: 'mask_id', nullable: true })
  maskId: string | null;

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt: Date;
}

/** Lineage: a pruned model has its source as parent; a soup has every ingredient, in order. */
@Entity('model_parent')
export class ModelParentEntity {
  @PrimaryColumn({ type: 'uuid', name: 'model_id' })
  modelId: string;

  @PrimaryColumn({ type: 'uuid', name: 'parent_id' })
  @Index()
  parentId: string;

  @Column({ type: 'int' })
  position: number;

  @ManyToOne(() => ModelEntity, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'model_id' })
  model: ModelEntity;

  // A parent cannot be deleted while a model descends from it: lineage never dangles.
  @ManyToOne(() => ModelEntity, { onDelete: 'RESTRICT' })
  @JoinColumn({ name: 'parent_id' })
  parent: ModelEntity;
}
