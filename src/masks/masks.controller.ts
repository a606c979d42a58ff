import { Body, Controller, Get, Param, ParseUUIDPipe, Post, Query, Res, StreamableFile } from '@nestjs/common';
import { ApiCreatedResponse, ApiOkResponse, ApiProduces, ApiTags } from '@nestjs/swagger';
import type { Response } from 'express';
import { ModelDto } from '../models/models.dto.js';
import { ApplyMaskDto, MaskDiffDto, MaskDto, MaskPageDto, MaskQueryDto, PruneModelDto, PruneResultDto } from './masks.dto.js';
import { MasksService } from './masks.service.js';

@ApiTags('masks')
@Controller('masks')
export class MasksController {
  constructor(private readonly masks: MasksService) {}

  @Get()
  @ApiOkResponse({ type: MaskPageDto })
  getAllMasks(@Query() q: MaskQueryDto): Promise<MaskPageDto> {
    return this.masks.list(q);
  }

  @Get(':id')
  @ApiOkResponse({ type: MaskDto })
  getMask(@Param('id', ParseUUIDPipe) id: string): Promise<MaskDto> {
    return this.masks.get(id);
  }

  @Get(':id/safetensors')
  @ApiProduces('application/octet-stream')
  @ApiOkResponse({ description: 'the mask as safetensors: one U8 tensor per masked tensor (same name and shape), 1 = kept, 0 = pruned; tensors it does not name are unmasked' })
  getMaskSafetensors(@Param('id', ParseUUIDPipe) id: string, @Res({ passthrough: true }) res: Response): Promise<StreamableFile> {
    return this.masks.safetensors(id, res);
  }

  @Get(':id/diff/:otherId')
  @ApiOkResponse({ type: MaskDiffDto })
  diffMasks(@Param('id', ParseUUIDPipe) id: string, @Param('otherId', ParseUUIDPipe) otherId: string): Promise<MaskDiffDto> {
    return this.masks.diff(id, otherId);
  }

  @Post(':id/apply')
  @ApiCreatedResponse({ type: ModelDto, description: 'a new model: the given model with this mask applied (its parent)' })
  applyMask(@Param('id', ParseUUIDPipe) id: string, @Body() dto: ApplyMaskDto): Promise<ModelDto> {
    return this.masks.apply(id, dto.modelId, dto.name);
  }
}

/** The pruning routes live under /models, where a client looks for them. */
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
