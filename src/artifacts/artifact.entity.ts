import { Column, CreateDateColumn, Entity, PrimaryColumn } from 'typeorm';

/** A row per stored object. Rows that use an artifact reference it by foreign key, so a referenced
 * artifact cannot be deleted and garbage collection is a query over those keys. */
@Entity('artifact')
export class ArtifactEntity {
  @PrimaryColumn({ type: 'char', length: 64 })
  sha256: string;

  @Column({ type: 'bigint', name: 'size_bytes' })
  sizeBytes: number;

  @Column({ type: 'varchar', length: 100, name: 'media_type' })
  mediaType: string;

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt: Date;
}
