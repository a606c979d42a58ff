import { Column, CreateDateColumn, Entity, Index, PrimaryGeneratedColumn } from 'typeorm';

export type WebhookResource = 'run' | 'soup';
export type WebhookEvent = 'run.finished' | 'soup.finished';
/** pending: queued or being retried; delivered: a 2xx came back; failed: retries exhausted. */
export type DeliveryState = 'pending' | 'delivered' | 'failed';

/**
 * One event for one callback URL, and what became of it. The event is recorded once per resource
 * (the unique index makes `notify` idempotent when a finished run is finished again after a crash);
 * the delivery job retries it with back-off.
 */
@Entity('webhook_delivery')
@Index(['resource', 'resourceId', 'event'], { unique: true })
@Index(['state', 'createdAt'])
export class WebhookDeliveryEntity {
  @PrimaryGeneratedColumn('uuid')
  id: string;

  @Column({ type: 'varchar', length: 10 })
  resource: WebhookResource;

  /** No foreign key: the record of a delivery outlives a deleted run or soup. */
  @Column({ type: 'uuid', name: 'resource_id' })
  resourceId: string;

  @Column({ type: 'varchar', length: 40 })
  event: WebhookEvent;

  /** The resource's final status (succeeded, failed, cancelled). */
  @Column({ type: 'varchar', length: 10, name: 'resource_status' })
  resourceStatus: string;

  @Column({ type: 'varchar', length: 2000 })
  url: string;

  @Column({ type: 'jsonb' })
  data: Record<string, unknown>;

  @Column({ type: 'varchar', length: 10 })
  state: DeliveryState;

  @Column({ type: 'int', default: 0 })
  attempts: number;

  /** The HTTP status of the last attempt; null when it got no response. */
  @Column({ type: 'int', name: 'last_status_code', nullable: true })
  lastStatusCode: number | null;

  @Column({ type: 'text', name: 'last_error', nullable: true })
  lastError: string | null;

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt: Date;

  @Column({ type: 'timestamptz', name: 'last_attempt_at', nullable: true })
  lastAttemptAt: Date | null;

  @Column({ type: 'timestamptz', name: 'delivered_at', nullable: true })
  deliveredAt: Date | null;
}
