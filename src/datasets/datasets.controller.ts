import { Controller, Get, Param, Post, Query, Req } from '@nestjs/common';
import { ApiBody, ApiConsumes, ApiCreatedResponse, ApiExtraModels, ApiOkResponse, ApiTags } from '@nestjs/swagger';
import type { Request } from 'express';
import { PageQueryDto } from '../common/paging.dto.js';
import { CreateDatasetQueryDto, CreateExternalDatasetDto, DatasetDto, DatasetPageDto } from './datasets.dto.js';
import { DatasetsService } from './datasets.service.js';

@ApiTags('datasets')
@ApiExtraModels(CreateExternalDatasetDto)
@Controller('datasets')
export class DatasetsController {
  constructor(private readonly datasets: DatasetsService) {}

  @Post()
  @ApiConsumes('multipart/form-data', 'application/octet-stream', 'application/json')
  @ApiBody({
    description:
      'JSON `{ name, source: "external", classes }`: a dataset an external trainer holds (no data). Or an IDX pair as multipart parts `images` and `labels` (optionally `testImages`, `testLabels`), or one `.npz` or safetensors file ' +
      'holding `x` (N × …) and `y` (N integer labels), optionally `x_test` and `y_test`. Without test arrays a stratified 1/7 becomes test; val is 10 % of train.',
    schema: {
      oneOf: [
        {
          type: 'object',
          properties: {
            images: { type: 'string', format: 'binary' },
            labels: { type: 'string', format: 'binary' },
            testImages: { type: 'string', format: 'binary' },
            testLabels: { type: 'string', format: 'binary' },
          },
          required: ['images', 'labels'],
        },
        { type: 'string', format: 'binary' },
        { $ref: '#/components/schemas/CreateExternalDatasetDto' },
      ],
    },
  })
  @ApiCreatedResponse({ type: DatasetDto })
  createDataset(@Query() q: CreateDatasetQueryDto, @Req() req: Request): Promise<DatasetDto> {
    return this.datasets.upload(q.name, q.classes, req);
  }

  @Get()
  @ApiOkResponse({ type: DatasetPageDto })
  getAllDatasets(@Query() page: PageQueryDto): Promise<DatasetPageDto> {
    return this.datasets.list(page);
  }

  @Get(':id')
  @ApiOkResponse({ type: DatasetDto })
  getDataset(@Param('id') id: string): Promise<DatasetDto> {
    return this.datasets.get(id);
  }
}
