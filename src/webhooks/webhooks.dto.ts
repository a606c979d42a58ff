import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { IsIn, IsOptional, IsUUID } from 'class-validator';
import { PageMetaDto, PageQueryDto } from '../common/paging.dto.js';
import type { WebhookDeliveryEntity } from './webhook-delivery.entity.js';

export const DELIVERY_STATES = ['pending', 'delivered', 'failed'] as const;

export class DeliveryQueryDto extends PageQueryDto {
  @ApiPropertyOptional({ enum: ['run', 'soup'] })
  @IsOptional() @IsIn(['run', 'soup'])
  resource?: 'run' | 'soup';

  @ApiPropertyOptional({ format: 'uuid', description: 'the run or soup' })
  @IsOptional() @IsUUID()
  resourceId?: string;

  @ApiPropertyOptional({ enum: DELIVERY_STATES })
  @IsOptional() @IsIn(DELIVERY_STATES)
  state?: (typeof DELIVERY_STATES)[number];
}

export class WebhookDeliveryDto {
  @ApiProperty({ format: 'uuid', description: 'also sent as x-sparsoup-delivery: receivers can drop repeats' }) id: string;
  @ApiProperty({ enum: ['run', 'soup'] }) resource: string;
  @ApiProperty({ format: 'uuid' }) resourceId: string;
  @ApiProperty({ enum: ['run.finished', 'soup.finished'] }) event: string;
  @ApiProperty({ description: 'the final status of the run or soup' }) resourceStatus: string;
  @ApiProperty() url: string;
  @ApiProperty({ enum: DELIVERY_STATES, description: 'pending: queued or retrying with back-off; delivered: the receiver answered 2xx; failed: retries exhausted' }) state: string;
  @ApiProperty() attempts: number;
  @ApiProperty({ type: Number, nullable: true, description: 'HTTP status of the last attempt (null: no response)' }) lastStatusCode: number | null;
  @ApiProperty({ type: String, nullable: true }) lastError: string | null;
  @ApiProperty() createdAt: Date;
  @ApiProperty({ type: Date, nullable: true }) lastAttemptAt: Date | null;
  @ApiProperty({ type: Date, nullable: true }) deliveredAt: Date | null;
}

export class DeliveryPageDto extends PageMetaDto {
  @ApiProperty({ type: [WebhookDeliveryDto] }) items: WebhookDeliveryDto[];
}

export function mapDelivery(d: WebhookDeliveryEntity): WebhookDeliveryDto {
  return {
    id: d.id,
    resource: d.resource,
    resourceId: d.resourceId,
    event: d.event,
    resourceStatus: d.resourceStatus,
    url: d.url,
    state: d.state,
    attempts: d.attempts,
    lastStatusCode: d.lastStatusCode,
    lastError: d.lastError,
    createdAt: d.createdAt,
    lastAttemptAt: d.lastAttemptAt,
    deliveredAt: d.deliveredAt,
  };
}
