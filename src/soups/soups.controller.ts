import { Body, Controller, Get, Param, ParseUUIDPipe, Post, Query, Res } from '@nestjs/common';
import { ApiAcceptedResponse, ApiCreatedResponse, ApiOkResponse, ApiTags, ApiUnprocessableEntityResponse } from '@nestjs/swagger';
import type { Response } from 'express';
import { CreateSoupDto, SoupDto, SoupMethodDto, SoupPageDto, SoupQueryDto } from './soups.dto.js';
import { SoupsService } from './soups.service.js';

@ApiTags('soups')
@Controller('soups')
export class SoupsController {
  constructor(private readonly soups: SoupsService) {}

  @Post()
  @ApiCreatedResponse({ type: SoupDto, description: 'uniform and weighted soups, built in the request' })
  @ApiAcceptedResponse({ type: SoupDto, description: 'greedy soups, built by a job: poll GET /soups/{id}' })
  @ApiUnprocessableEntityResponse({ description: 'the candidates differ: problem+json with `mismatches: [{ tensor, kind, candidate, differing? }]`' })
  async createSoup(@Body() dto: CreateSoupDto, @Res({ passthrough: true }) res: Response): Promise<SoupDto> {
    const { soup, accepted } = await this.soups.create(dto);
    res.status(accepted ? 202 : 201);
    return soup;
  }

  @Get()
  @ApiOkResponse({ type: SoupPageDto })
  getAllSoups(@Query() q: SoupQueryDto): Promise<SoupPageDto> {
    return this.soups.list(q);
  }

  @Get('methods')
  @ApiOkResponse({ type: [SoupMethodDto], description: 'the merge methods with their parameters, defaults and references' })
  getSoupMethods(): SoupMethodDto[] {
    return this.soups.methods();
  }

  @Get(':id')
  @ApiOkResponse({ type: SoupDto })
  getSoup(@Param('id', ParseUUIDPipe) id: string): Promise<SoupDto> {
    return this.soups.get(id);
  }
}
