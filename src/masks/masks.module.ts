import { Module } from '@nestjs/common';
import { ModelsModule } from '../models/models.module.js';
import { MasksController } from './masks.controller.js';
import { MasksService } from './masks.service.js';
import { PruneController } from './prune.controller.js';

@Module({ imports: [ModelsModule], controllers: [PruneController, MasksController], providers: [MasksService], exports: [MasksService] })
export class MasksModule {}
