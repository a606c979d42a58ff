import { Global, Module } from '@nestjs/common';
import { JobsService } from './jobs.service.js';
import { WorkerRegistryService } from './worker-registry.service.js';

@Global()
@Module({ providers: [JobsService, WorkerRegistryService], exports: [JobsService, WorkerRegistryService] })
export class JobsModule {}
