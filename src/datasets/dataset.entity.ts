import { Column, CreateDateColumn, Entity, JoinColumn, ManyToOne, PrimaryColumn } from 'typeorm';
import { ArtifactEntity } from '../artifacts/artifact.entity.js';

/** Built-ins have their names as ids (`mnist`, `fashion-mnist`); uploads get a uuid. */
@Entity('dataset')
export class DatasetEntity {
  @PrimaryColumn({ type: 'varchar', length: 100 })
  id: string;

  @Column({ type: 'varchar', length: 200 })
  name: string;

  @Column({ type: 'varchar', length: 10 })
  source: 'builtin' | 'upload' | 'external';

  @Column({ type: 'varchar', length: 20, nullable: true })
  format: 'idx' | 'npz' | 'safetensors' | null;

  @Column({ type: 'text', nullable: true })
  description: string | null;

  @Column({ type: 'jsonb', name: 'input_shape' })
  inputShape: [number, number, number];

  @Column({ type: 'int' })
  classes: number;

  @Column({ type: 'int', name: 'train_count' })
  trainCount: number;

  @Column({ type: 'int', name: 'val_count' })
  valCount: number;

  @Column({ type: 'int', name: 'test_count' })
  testCount: number;

  @Column({ type: 'varchar', length: 10 })
  pixels: 'uint8' | 'float32';

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt: Date;
}

/** The uploaded files of a dataset, by role (`images`, `labels`, `testImages`, `testLabels`, `data`). */
@Entity('dataset_file')
export class DatasetFileEntity {
  @PrimaryColumn({ type: 'varchar', length: 100, name: 'dataset_id' })
  datasetId: string;

  @PrimaryColumn({ type: 'varchar', length: 20 })
  role: string;

  @ManyToOne(() => DatasetEntity, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'dataset_id' })
  dataset: DatasetEntity;

  @ManyToOne(() => ArtifactEntity, { onDelete: 'RESTRICT', nullable: false })
  @JoinColumn({ name: 'artifact_sha256' })
  artifact: ArtifactEntity;

  @Column({ type: 'char', length: 64, name: 'artifact_sha256' })
  artifactSha256: string;
}
