import { Body, Controller, Get, Param, ParseUUIDPipe, Post, Query, Res, StreamableFile } from '@nestjs/common';
import { ApiCreatedResponse, ApiOkResponse, ApiProduces, ApiTags } from '@nestjs/swagger';
import type { Response } from 'express';
import { ModelDto } from '../models/models.dto.js';
import { ApplyMaskDto, MaskDiffDto, MaskDto, MaskPageDto, MaskQueryDto } from './masks.dto.js';
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
