import { Module } from '@nestjs/common';
import { MasksModule } from '../masks/masks.module.js';
import { ModelsModule } from '../models/models.module.js';
import { RunsModule } from '../runs/runs.module.js';
import { TasksController } from './tasks.controller.js';
import { TasksService } from './tasks.service.js';

@Module({ imports: [ModelsModule, MasksModule, RunsModule], controllers: [TasksController], providers: [TasksService], exports: [TasksService] })
export class TasksModule {}
