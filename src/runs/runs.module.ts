import { Module } from '@nestjs/common';
import { DatasetsModule } from '../datasets/datasets.module.js';
import { EvaluationsModule } from '../evaluations/evaluations.module.js';
import { MasksModule } from '../masks/masks.module.js';
import { ModelsModule } from '../models/models.module.js';
import { SoupsModule } from '../soups/soups.module.js';
import { RunLifecycle } from './run-lifecycle.js';
import { RunPhasesService } from './run-phases.service.js';
import { RunReportService } from './run-report.service.js';
import { RunsController } from './runs.controller.js';
import { RunsProcessor } from './runs.processor.js';
import { RunsService } from './runs.service.js';

@Module({ imports: [ModelsModule, MasksModule, DatasetsModule, SoupsModule, EvaluationsModule], controllers: [RunsController], providers: [RunLifecycle, RunsService, RunsProcessor, RunPhasesService, RunReportService], exports: [RunsService, RunsProcessor, RunLifecycle] })
export class RunsModule {}
