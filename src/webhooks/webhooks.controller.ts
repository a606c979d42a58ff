import { Controller, Get, Param, ParseUUIDPipe, Query } from '@nestjs/common';
import { ApiOkResponse, ApiTags } from '@nestjs/swagger';
import { DeliveryPageDto, DeliveryQueryDto, WebhookDeliveryDto } from './webhooks.dto.js';
import { WebhooksService } from './webhooks.service.js';

@ApiTags('webhooks')
@Controller('webhooks/deliveries')
export class WebhooksController {
  constructor(private readonly webhooks: WebhooksService) {}

  @Get()
  @ApiOkResponse({ type: DeliveryPageDto, description: 'events sent (or being sent) to callback URLs, newest first' })
  getAllWebhookDeliveries(@Query() q: DeliveryQueryDto): Promise<DeliveryPageDto> {
    return this.webhooks.list(q);
  }

  @Get(':id')
  @ApiOkResponse({ type: WebhookDeliveryDto })
  getWebhookDelivery(@Param('id', ParseUUIDPipe) id: string): Promise<WebhookDeliveryDto> {
    return this.webhooks.get(id);
  }
}
