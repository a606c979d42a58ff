import { Body, Controller, Get, Param, ParseUUIDPipe, Post, Res, StreamableFile } from '@nestjs/common';
import { ApiCreatedResponse, ApiOkResponse, ApiProduces, ApiTags } from '@nestjs/swagger';
import type { Response } from 'express';
import { PruneModelDto, PruneResultDto } from './masks.dto.js';
import { MasksService } from './masks.service.js';

/**
 * `POST /models/{id}/prune` and `GET /models/{id}/sparse`: the routes that make and read masks live
 * under /models, where a client looks for them, and here beside the masks they make.
 */
@ApiTags('models')
@Controller('models')
export class PruneController {
  constructor(private readonly masks: MasksService) {}

  @Post(':id/prune')
  @ApiCreatedResponse({ type: PruneResultDto, description: 'the pruned model (parent: the source) and its mask' })
  pruneModel(@Param('id', ParseUUIDPipe) id: string, @Body() dto: PruneModelDto): Promise<PruneResultDto> {
    return this.masks.prune(id, dto);
  }

  @Get(':id/sparse')
  @ApiProduces('application/vnd.sparsoup.sparse')
  @ApiOkResponse({
    description:
      'compact sparse export: mask bits plus the kept values (format in src/core/masks/sparse.ts); headers x-sparse-bytes, x-dense-bytes and x-sparse-ratio compare it with the dense float32 file',
  })
  getSparseModel(@Param('id', ParseUUIDPipe) id: string, @Res({ passthrough: true }) res: Response): Promise<StreamableFile> {
    return this.masks.sparse(id, res);
  }
}
