import { Module } from '@nestjs/common';
import { DatasetsModule } from '../datasets/datasets.module.js';
import { MasksModule } from '../masks/masks.module.js';
import { ModelsModule } from '../models/models.module.js';
import { RunsController } from './runs.controller.js';
import { RunsProcessor } from './runs.processor.js';
import { RunsService } from './runs.service.js';

@Module({ imports: [ModelsModule, MasksModule, DatasetsModule], controllers: [RunsController], providers: [RunsService, RunsProcessor], exports: [RunsService] })
export class RunsModule {}
