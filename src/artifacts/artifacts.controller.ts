import { Body, Controller, Get, HttpCode, Post, Query } from '@nestjs/common';
import { ApiOkResponse, ApiTags } from '@nestjs/swagger';
import { PageQueryDto } from '../common/paging.dto.js';
import { ArtifactPageDto, CollectGarbageDto, GarbageCollectionDto } from './artifacts.dto.js';
import { ArtifactsService } from './artifacts.service.js';

@ApiTags('artifacts')
@Controller('artifacts')
export class ArtifactsController {
  constructor(private readonly artifacts: ArtifactsService) {}

  @Get()
  @ApiOkResponse({ type: ArtifactPageDto })
  getAllArtifacts(@Query() page: PageQueryDto): Promise<ArtifactPageDto> {
    return this.artifacts.list(page);
  }

  @Post('gc')
  @HttpCode(200)
  @ApiOkResponse({ type: GarbageCollectionDto })
  collectGarbage(@Body() dto: CollectGarbageDto): Promise<GarbageCollectionDto> {
    return this.artifacts.collectGarbage((dto.graceSeconds ?? 600) * 1000);
  }
}
