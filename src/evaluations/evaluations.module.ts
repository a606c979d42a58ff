import { Module } from '@nestjs/common';
import { DatasetsModule } from '../datasets/datasets.module.js';
import { ModelsModule } from '../models/models.module.js';
import { EvaluationsController } from './evaluations.controller.js';
import { EvaluationsService } from './evaluations.service.js';

@Module({ imports: [ModelsModule, DatasetsModule], controllers: [EvaluationsController], providers: [EvaluationsService], exports: [EvaluationsService] })
export class EvaluationsModule {}
