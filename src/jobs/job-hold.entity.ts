import { Column, Entity, Index, PrimaryColumn } from 'typeorm';

/**
 * Which process is working a pg-boss job right now. Written when a handler starts, deleted when it
 * ends; a hold whose process is dead (no fresh heartbeat in `worker_process`) is how a job that a
 * killed process had taken is found and handed back to the queue at once, whatever its expiry.
 */
@Entity('job_hold')
export class JobHoldEntity {
  @PrimaryColumn({ type: 'uuid', name: 'job_id' })
  jobId: string;

  @Column({ type: 'varchar', length: 100 })
  queue: string;

  @Index()
  @Column({ type: 'uuid', name: 'worker_id' })
  workerId: string;

  @Column({ type: 'timestamptz', name: 'started_at' })
  startedAt: Date;
}
