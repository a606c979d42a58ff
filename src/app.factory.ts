import 'reflect-metadata';
import type { LoggerService } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication, NestExpressBodyParserOptionsFor } from '@nestjs/platform-express';
import { DocumentBuilder, type OpenAPIObject, SwaggerModule } from '@nestjs/swagger';
import type { Logger } from 'pino';
import { AppModule } from './app.module.js';
import { authBeforeBody } from './common/auth.guard.js';
import { isJsonBodyRequest, MAX_JSON_BODY_BYTES, verifyJsonDepth } from './common/json-body.js';
import { createRootLogger, PinoNestLogger, requestLogger } from './common/logging.js';
import { ProblemFilter, sendProblem } from './common/problem.filter.js';
import { configureServerTimeouts, requestTimeLimit } from './common/request-timeout.js';
import { createValidationPipe } from './common/validation.js';
import type { AppConfig } from './config/config.js';
import { databaseOptions } from './database/data-source.js';
import { VERSION } from './version.js';

export interface CreateAppOptions {
  /** A pino logger to write to; defaults to one at the configured level. */
  logger?: Logger;
  /** Build the module graph without connecting to anything (used to write the OpenAPI spec). */
  preview?: boolean;
}

export async function createApp(config: AppConfig, opts: CreateAppOptions = {}): Promise<NestExpressApplication> {
  const logger = opts.logger ?? createRootLogger(config.logLevel);
  const nestLogger: LoggerService | false = config.logLevel === 'silent' ? false : new PinoNestLogger(logger);
  const app = await NestFactory.create<NestExpressApplication>(AppModule.forRoot(config, databaseOptions(config)), {
    logger: nestLogger,
    preview: opts.preview,
    abortOnError: false,
    bodyParser: false,
  });
  app.disable('x-powered-by');
  app.set('query parser', 'extended');
  app.use(requestLogger(logger));
  configureServerTimeouts(app.getHttpServer(), config);
  app.use(requestTimeLimit(config, (req, res, err) => sendProblem(req, res, err)));
  // The key is checked before any body is read, so an unauthenticated request costs its headers only.
  app.use(authBeforeBody(config, (res, err, req) => sendProblem(req, res, err)));
  // JSON bodies only, bounded in size and depth; checkpoints and datasets arrive as streams that the
  // feature modules read. Reads carry no body worth parsing.
  // (Nest's typing leaves out body-parser's `verify`; it passes the options through unchanged.)
  const jsonOptions = { limit: MAX_JSON_BODY_BYTES, type: isJsonBodyRequest, verify: verifyJsonDepth };
  app.useBodyParser('json', jsonOptions as NestExpressBodyParserOptionsFor<'json'>);
  app.useGlobalFilters(new ProblemFilter());
  app.useGlobalPipes(createValidationPipe());
  app.enableShutdownHooks();
  // Swagger UI at /docs; the raw document at /docs/openapi.json and, where clients look first, /openapi.json.
  let document: OpenAPIObject | undefined;
  const openApi = () => (document ??= createOpenApiDocument(app));
  SwaggerModule.setup('docs', app, openApi, { jsonDocumentUrl: 'docs/openapi.json' });
  app.getHttpAdapter().getInstance().get('/openapi.json', (_req: unknown, res: { json(body: unknown): void }) => res.json(openApi()));
  return app;
}

export function createOpenApiDocument(app: NestExpressApplication): OpenAPIObject {
  const config = new DocumentBuilder()
    .setTitle('sparsoup')
    .setDescription(
      'Prunes neural-network checkpoints and merges sparse models into sparse model soups ' +
        '(Zimmer, Spiegel & Pokutta, ICLR 2024). Errors are application/problem+json (RFC 9457).',
    )
    .setVersion(VERSION)
    .addBearerAuth({ type: 'http', scheme: 'bearer', description: 'an API key from API_KEYS' })
    .addSecurityRequirements('bearer')
    .build();
  return SwaggerModule.createDocument(app, config, {
    operationIdFactory: (_controllerKey: string, methodKey: string) => methodKey,
  });
}
