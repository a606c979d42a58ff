import { Inject, Injectable, Logger, type OnApplicationBootstrap } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import type { DataSource, EntityManager, QueryDeepPartialEntity } from 'typeorm';
import { notFound } from '../common/problem.js';
import type { AppConfig } from '../config/config.js';
import { APP_CONFIG } from '../config/config.module.js';
import { JobName, QUEUE_POLICIES } from '../jobs/jobs.js';
import { JobsService } from '../jobs/jobs.service.js';
import { DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, signWebhook, TIMESTAMP_HEADER } from './signature.js';
import { type DeliveryState, WebhookDeliveryEntity, type WebhookEvent, type WebhookResource } from './webhook-delivery.entity.js';
import { type DeliveryPageDto, type DeliveryQueryDto, mapDelivery, type WebhookDeliveryDto } from './webhooks.dto.js';

/** What a finished run or soup tells its callback URL. */
export interface WebhookNotification {
  resource: WebhookResource;
  /** The run's or soup's id. */
  id: string;
  /** Its final status: succeeded, failed or cancelled. */
  status: string;
  /** The URL the client gave; nothing happens when it is absent. */
  callbackUrl: string | null | undefined;
  /** Resource-specific details (result model ids, accuracy, error), sent as `data`. */
  data?: Record<string, unknown>;
}

/** The JSON body POSTed to the callback URL. */
export interface WebhookBody {
  type: WebhookEvent;
  id: string;
  status: string;
  data: Record<string, unknown>;
  deliveredAt: string;
}

/** One attempt's time limit: a slow receiver must not hold a queue slot for long. */
const ATTEMPT_TIMEOUT_MS = 10_000;
const DELIVERY_CONCURRENCY = 4;

@Injectable()
export class WebhooksService implements OnApplicationBootstrap {
  private readonly logger = new Logger(WebhooksService.name);

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @InjectDataSource() private readonly dataSource: DataSource,
    private readonly jobs: JobsService,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    if (!this.config.webhookSecret) this.logger.warn('WEBHOOK_SECRET is not set: webhook deliveries go out unsigned');
    await this.jobs.work(JobName.DeliverWebhook, DELIVERY_CONCURRENCY, (payload, job) => this.deliver(payload.deliveryId, job));
  }

  /**
   * Records the event and queues its delivery; returns the delivery id (null without a callback URL,
   * or when this resource's event was already recorded). It never waits for the receiver. With
   * `manager`, the row and the job commit with the caller's transaction (so the event exists exactly
   * when the final status does); without one, a database error is logged, not thrown.
   */
  async notify(n: WebhookNotification, opts: { manager?: EntityManager } = {}): Promise<string | null> {
    if (!n.callbackUrl) return null;
    const work = async (manager: EntityManager) => {
      const inserted = await manager
        .createQueryBuilder()
        .insert()
        .into(WebhookDeliveryEntity)
        .values({
          resource: n.resource,
          resourceId: n.id,
          event: `${n.resource}.finished` as WebhookEvent,
          resourceStatus: n.status,
          url: n.callbackUrl!,
          // TypeORM's partial type cannot see that any JSON object fits a jsonb column.
          data: (n.data ?? {}) as QueryDeepPartialEntity<Record<string, unknown>>,
          state: 'pending' as DeliveryState,
        })
        .orIgnore()
        .returning(['id'])
        .execute();
      const id = (inserted.raw as { id: string }[])[0]?.id ?? null;
      if (id) await this.jobs.send(JobName.DeliverWebhook, { deliveryId: id }, { manager });
      return id;
    };
    if (opts.manager) return work(opts.manager);
    try {
      return await this.dataSource.transaction(work);
    } catch (err) {
      this.logger.error({ err, resource: n.resource, id: n.id }, 'could not record a webhook delivery');
      return null;
    }
  }

  /** One attempt. A throw hands the job back to pg-boss, which retries it with back-off. */
  async deliver(deliveryId: string, job: { retryCount: number }): Promise<'delivered' | 'skipped'> {
    const repo = this.dataSource.getRepository(WebhookDeliveryEntity);
    const d = await repo.findOneBy({ id: deliveryId });
    if (d?.state !== 'pending') return 'skipped';
    const body: WebhookBody = { type: d.event, id: d.resourceId, status: d.resourceStatus, data: d.data, deliveredAt: new Date().toISOString() };
    const raw = JSON.stringify(body);
    const timestamp = Math.floor(Date.now() / 1000);
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'user-agent': 'sparsoup-webhooks',
      [EVENT_HEADER]: d.event,
      [DELIVERY_HEADER]: d.id,
      [TIMESTAMP_HEADER]: String(timestamp),
    };
    if (this.config.webhookSecret) headers[SIGNATURE_HEADER] = signWebhook(this.config.webhookSecret, timestamp, raw);

    let statusCode: number | null = null;
    let error: string | null = null;
    try {
      // Redirects are not followed: a 3xx is a failed attempt, and the signed body goes only where asked.
      const res = await fetch(d.url, { method: 'POST', headers, body: raw, redirect: 'manual', signal: AbortSignal.timeout(ATTEMPT_TIMEOUT_MS) });
      statusCode = res.status;
      await res.body?.cancel().catch(() => {});
      if (res.status < 200 || res.status >= 300) error = `the receiver answered ${res.status}`;
    } catch (err) {
      error = describe(err);
    }
    const exhausted = error !== null && job.retryCount >= QUEUE_POLICIES[JobName.DeliverWebhook].retryLimit;
    const state: DeliveryState = error === null ? 'delivered' : exhausted ? 'failed' : 'pending';
    await repo
      .createQueryBuilder()
      .update()
      .set({ attempts: () => 'attempts + 1', lastStatusCode: statusCode, lastError: error, lastAttemptAt: new Date(), state, ...(state === 'delivered' ? { deliveredAt: new Date() } : {}) })
      .where('id = :id', { id: d.id })
      .execute();
    if (error !== null) throw new Error(`webhook ${d.id} to ${d.url}: ${error}`);
    return 'delivered';
  }

  async list(q: DeliveryQueryDto): Promise<DeliveryPageDto> {
    const limit = q.limit ?? 50;
    const offset = q.offset ?? 0;
    const where = {
      ...(q.resource ? { resource: q.resource } : {}),
      ...(q.resourceId ? { resourceId: q.resourceId } : {}),
      ...(q.state ? { state: q.state } : {}),
    };
    const [rows, total] = await this.dataSource.getRepository(WebhookDeliveryEntity).findAndCount({ where, order: { createdAt: 'DESC', id: 'ASC' }, take: limit, skip: offset });
    return { items: rows.map(mapDelivery), total, limit, offset };
  }

  async get(id: string): Promise<WebhookDeliveryDto> {
    const d = await this.dataSource.getRepository(WebhookDeliveryEntity).findOneBy({ id });
    if (!d) throw notFound('webhook delivery', id);
    return mapDelivery(d);
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    if (err.name === 'TimeoutError') return `no answer within ${ATTEMPT_TIMEOUT_MS / 1000} s`;
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    return cause?.code ? `${err.message}: ${cause.code}` : cause?.message ? `${err.message}: ${cause.message}` : err.message;
  }
  return String(err);
}
