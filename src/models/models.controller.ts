import { Body, Controller, Delete, Get, HttpCode, Param, ParseUUIDPipe, Post, Query, Req, Res, StreamableFile } from '@nestjs/common';
import { ApiBody, ApiConsumes, ApiCreatedResponse, ApiNoContentResponse, ApiOkResponse, ApiProduces, ApiTags } from '@nestjs/swagger';
import type { Request, Response } from 'express';
import { CreateModelQueryDto, CreateTemplateDto, ModelDto, ModelFileDto, ModelPageDto, ModelQueryDto } from './models.dto.js';
import { ModelsService } from './models.service.js';

@ApiTags('models')
@Controller('models')
export class ModelsController {
  constructor(private readonly models: ModelsService) {}

  @Post()
  @ApiConsumes('multipart/form-data', 'application/octet-stream')
  @ApiBody({
    description:
      'A TensorFlow.js layers model as `model.save(tf.io.http(url))` posts it (multipart parts `model.json` and `model.weights.bin`) ' +
      'or as the converter writes its folder (`model.json` first, then one part per weight file, named as the manifest names it, in any order; ' +
      'quantized weights are stored dequantized to float32); a Hugging Face sharded safetensors folder (multipart: `model.safetensors.index.json` first, ' +
      'then one part per shard, named as its weight_map names them); or a safetensors file as application/octet-stream. Streamed: never held in memory.',
    schema: {
      oneOf: [
        { type: 'object', properties: { 'model.json': { type: 'string', format: 'binary' }, 'model.weights.bin': { type: 'string', format: 'binary' } } },
        { type: 'string', format: 'binary' },
      ],
    },
  })
  @ApiCreatedResponse({ type: ModelDto })
  createModel(@Query() query: CreateModelQueryDto, @Req() req: Request): Promise<ModelDto> {
    return this.models.upload(query.name, req);
  }

  @Post('templates')
  @ApiCreatedResponse({ type: ModelDto, description: 'a seeded, freshly initialised TensorFlow.js layers model with named layers, sized for the dataset' })
  createModelFromTemplate(@Body() dto: CreateTemplateDto): Promise<ModelDto> {
    return this.models.fromTemplate(dto);
  }

  @Get()
  @ApiOkResponse({ type: ModelPageDto })
  getAllModels(@Query() query: ModelQueryDto): Promise<ModelPageDto> {
    return this.models.list(query);
  }

  @Get(':id')
  @ApiOkResponse({ type: ModelDto })
  getModel(@Param('id', ParseUUIDPipe) id: string): Promise<ModelDto> {
    return this.models.get(id);
  }

  @Delete(':id')
  @HttpCode(204)
  @ApiNoContentResponse({ description: 'deleted; refused with 409 while a run, mask, soup or child model refers to it' })
  deleteModel(@Param('id', ParseUUIDPipe) id: string): Promise<void> {
    return this.models.delete(id);
  }

  @Get(':id/model.json')
  @ApiProduces('application/json')
  @ApiOkResponse({ description: 'the TensorFlow.js model.json; its weight path resolves to this service, so tf.loadLayersModel(url) works' })
  getModelJson(@Param('id', ParseUUIDPipe) id: string): Promise<Record<string, unknown>> {
    return this.models.modelJson(id);
  }

  @Get(':id/model.weights.bin')
  @ApiProduces('application/octet-stream')
  @ApiOkResponse({ description: 'the TensorFlow.js weights, all weight files concatenated in manifest order' })
  async getModelWeights(@Param('id', ParseUUIDPipe) id: string, @Res({ passthrough: true }) res: Response): Promise<StreamableFile> {
    return this.models.weights(id, res);
  }

  @Get(':id/files')
  @ApiOkResponse({ type: [ModelFileDto], description: 'the files of the model: a sharded safetensors model\'s index and shards (as uploaded: same names, same tensors in each), or model.safetensors' })
  getModelFiles(@Param('id', ParseUUIDPipe) id: string): Promise<ModelFileDto[]> {
    return this.models.files(id);
  }

  @Get(':id/files/:name')
  @ApiProduces('application/octet-stream', 'application/json')
  @ApiOkResponse({ description: 'one file of the model, streamed' })
  async getModelFile(@Param('id', ParseUUIDPipe) id: string, @Param('name') name: string, @Res({ passthrough: true }) res: Response): Promise<StreamableFile> {
    return this.models.file(id, name, res);
  }

  @Get(':id/safetensors')
  @ApiProduces('application/octet-stream')
  @ApiOkResponse({ description: 'the model as a safetensors file (TensorFlow.js models convert, keeping their weight names); streamed' })
  async getModelSafetensors(@Param('id', ParseUUIDPipe) id: string, @Res({ passthrough: true }) res: Response): Promise<StreamableFile> {
    return this.models.safetensors(id, res);
  }
}
