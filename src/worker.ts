/**
 * A worker process without the HTTP server: `npm run worker`. It works the same job queues as the
 * API process. Point several at the same DATABASE_URL (Postgres; the embedded database is one
 * process) and the same ARTIFACTS_URL — a bucket (s3://…), so machines share nothing else, or a
 * folder every machine mounts — to scale out across machines.
 */
import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import { AppModule } from './app.module.js';
import { createRootLogger, PinoNestLogger } from './common/logging.js';
import { loadConfigOrExit } from './config/config.js';
import { databaseOptions } from './database/data-source.js';

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  if (!config.databaseUrl) {
    console.error('npm run worker needs DATABASE_URL: the embedded database lives inside the API process, which works jobs itself.');
    process.exit(2);
  }
  if (config.workers === 0) {
    console.error('WORKERS: a worker process needs at least one thread (WORKERS=0 is for an API process that leaves the work to workers).');
    process.exit(2);
  }
  const logger = createRootLogger(config.logLevel);
  const app = await NestFactory.createApplicationContext(AppModule.forRoot(config, databaseOptions(config)), { logger: new PinoNestLogger(logger) });
  app.enableShutdownHooks();
  logger.info({ workers: config.workers, artifacts: config.artifacts.kind }, 'sparsoup worker started');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
