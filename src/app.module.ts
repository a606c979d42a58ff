import { type DynamicModule, Module } from '@nestjs/common';
import { APP_GUARD } from '@nestjs/core';
import { ArtifactsModule } from './artifacts/artifacts.module.js';
import { AuthGuard } from './common/auth.guard.js';
import type { AppConfig } from './config/config.js';
import { ConfigModule } from './config/config.module.js';
import type { DatabaseHandle } from './database/data-source.js';
import { DatabaseModule } from './database/database.module.js';
import { DatasetsModule } from './datasets/datasets.module.js';
import { EvaluationsModule } from './evaluations/evaluations.module.js';
import { HealthModule } from './health/health.module.js';
import { JobsModule } from './jobs/jobs.module.js';
import { MasksModule } from './masks/masks.module.js';
import { MetricsModule } from './metrics/metrics.module.js';
import { ModelsModule } from './models/models.module.js';
import { RunsModule } from './runs/runs.module.js';
import { SoupsModule } from './soups/soups.module.js';
import { TasksModule } from './tasks/tasks.module.js';
import { UiModule } from './ui/ui.module.js';
import { WebhooksModule } from './webhooks/webhooks.module.js';
import { WorkersModule } from './workers/workers.module.js';

/** Feature modules, in the order a reader meets them in the API. */
export const FEATURE_MODULES = [HealthModule, ModelsModule, MasksModule, DatasetsModule, EvaluationsModule, RunsModule, TasksModule, SoupsModule, WebhooksModule, MetricsModule, UiModule];

@Module({})
export class AppModule {
  static forRoot(config: AppConfig, database: DatabaseHandle): DynamicModule {
    return {
      module: AppModule,
      imports: [ConfigModule.forRoot(config), DatabaseModule.forRoot(database), ArtifactsModule, JobsModule, WorkersModule, ...FEATURE_MODULES],
      providers: [{ provide: APP_GUARD, useClass: AuthGuard }],
    };
  }
}
