import { Body, Controller, Get, Param, ParseUUIDPipe, Post, Query } from '@nestjs/common';
import { ApiCreatedResponse, ApiOkResponse, ApiTags } from '@nestjs/swagger';
import { PageQueryDto } from '../common/paging.dto.js';
import { CreateEvaluationDto, EvaluationDto, EvaluationPageDto } from './evaluations.dto.js';
import { EvaluationsService } from './evaluations.service.js';

@ApiTags('models')
@Controller('models/:id/evaluations')
export class EvaluationsController {
  constructor(private readonly evaluations: EvaluationsService) {}

  @Post()
  @ApiCreatedResponse({ type: EvaluationDto, description: 'evaluated in a worker thread and stored with the model' })
  createEvaluation(@Param('id', ParseUUIDPipe) id: string, @Body() dto: CreateEvaluationDto): Promise<EvaluationDto> {
    return this.evaluations.create(id, dto);
  }

  @Get()
  @ApiOkResponse({ type: EvaluationPageDto })
  getModelEvaluations(@Param('id', ParseUUIDPipe) id: string, @Query() page: PageQueryDto): Promise<EvaluationPageDto> {
    return this.evaluations.list(id, page);
  }
}
