import { Module } from '@nestjs/common';
import { DatasetsModule } from '../datasets/datasets.module.js';
import { ModelsModule } from '../models/models.module.js';
import { ExternalGreedyService } from '../tasks/external-greedy.js';
import { SoupsController } from './soups.controller.js';
import { SoupsService } from './soups.service.js';

@Module({ imports: [ModelsModule, DatasetsModule], controllers: [SoupsController], providers: [SoupsService, ExternalGreedyService], exports: [SoupsService, ExternalGreedyService] })
export class SoupsModule {}
