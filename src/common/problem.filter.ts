import { type ArgumentsHost, Catch, type ExceptionFilter, HttpException, Logger } from '@nestjs/common';
import type { Request, Response } from 'express';
import { CoreInputError } from '../core/errors.js';
import { constraintViolation, describeViolation, isDatabaseUnavailable } from '../database/errors.js';
import { isArtifactStoreUnwritable, UploadTooLargeError } from '../storage/artifact-store.js';
import { defaultProblem, PROBLEM_BASE, type Problem, ProblemException } from './problem.js';

/** Every error leaves as application/problem+json. Unknown errors are logged with the request id
 * and answered as a bare 500 that names the request id and nothing internal. */
@Catch()
export class ProblemFilter implements ExceptionFilter {
  private readonly logger = new Logger('ProblemFilter');

  catch(exception: unknown, host: ArgumentsHost): void {
    const ctx = host.switchToHttp();
    sendProblem(ctx.getRequest<Request>(), ctx.getResponse<Response>(), exception, this.logger);
  }
}

const fallbackLogger = new Logger('ProblemFilter');

/** Answers `exception` as problem+json; also used by middleware that runs before Nest's filters. */
export function sendProblem(req: Request, res: Response, exception: unknown, logger: Logger = fallbackLogger): void {
  const problem = toProblem(exception);
  const databaseDown = problem.type === `${PROBLEM_BASE}database-unavailable`;
  const storeUnwritable = problem.type === `${PROBLEM_BASE}artifact-store-unwritable`;
  if (databaseDown) logger.warn({ requestId: req.id, path: req.url, reason: (exception as Error)?.message }, 'database unavailable');
  else if (storeUnwritable) logger.warn({ requestId: req.id, path: req.url, reason: (exception as Error)?.message }, 'artifact store not writable');
  else if (problem.status >= 500) logger.error({ err: exception, requestId: req.id, path: req.url }, 'unhandled error');
  problem.instance ??= req.originalUrl;
  if (req.id) problem.requestId = String(req.id);
  if (res.headersSent) {
    // A streamed response already started; all we can do is cut it.
    res.destroy();
    return;
  }
  if ([401, 403, 408, 413].includes(problem.status)) res.setHeader('connection', 'close');
  if (problem.status === 401) res.setHeader('www-authenticate', 'Bearer');
  if (databaseDown) res.setHeader('retry-after', '5');
  res.status(problem.status).type('application/problem+json').send(JSON.stringify(problem));
}

export function toProblem(exception: unknown): Problem {
  if (exception instanceof ProblemException) return { ...exception.problem };
  // Express middleware errors (a body-parser `verify` refusal) reach the filter wrapped by Nest.
  if (exception instanceof HttpException && exception.cause instanceof ProblemException) return { ...exception.cause.problem };
  if (exception instanceof CoreInputError) {
    return { ...defaultProblem(exception.status, exception.message), type: PROBLEM_BASE + exception.code, ...exception.details };
  }
  if (exception instanceof UploadTooLargeError) return defaultProblem(413, exception.message);
  // Node's "aborted": the client closed the connection mid-body. Nobody reads the answer, but it is
  // the client's doing, not a server fault to log as one.
  const reset = exception as { code?: string; message?: string };
  if (reset?.code === 'ECONNRESET' && reset.message === 'aborted') return defaultProblem(400, 'the client closed the connection before the body was complete');
  if (exception instanceof HttpException) {
    const status = exception.getStatus();
    const body = exception.getResponse();
    const message =
      typeof body === 'string'
        ? body
        : Array.isArray((body as { message?: unknown }).message)
          ? ((body as { message: string[] }).message).join('; ')
          : String((body as { message?: unknown }).message ?? exception.message);
    return defaultProblem(status, status >= 500 ? 'internal error' : message);
  }
  // body-parser and friends signal client errors with `status`/`type`.
  const e = exception as { status?: number; statusCode?: number; type?: string; message?: string; expose?: boolean };
  const status = e?.status ?? e?.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500 && e.expose !== false) {
    return defaultProblem(status, e.message ?? 'bad request');
  }
  // The artifact folder refused a write (read-only, not ours, full): retry once it is fixed.
  if (isArtifactStoreUnwritable(exception)) {
    return { ...defaultProblem(503, `${(exception as Error).message}; retry once it is writable again (GET /health reports the store)`), type: `${PROBLEM_BASE}artifact-store-unwritable` };
  }
  // The database went away (down, restarting, cut off): the request can be retried later.
  if (isDatabaseUnavailable(exception)) {
    return { ...defaultProblem(503, 'the database is unavailable; retry later (GET /health says when it is back)'), type: `${PROBLEM_BASE}database-unavailable` };
  }
  // A write raced another request (a row deleted while this one started to use it, a key taken).
  const violation = constraintViolation(exception);
  if (violation) {
    const { detail, resource } = describeViolation(violation);
    return { ...defaultProblem(409, detail), type: `${PROBLEM_BASE}${violation.kind === 'foreign-key' ? 'resource-changed' : 'already-exists'}`, ...(resource ? { resource } : {}) };
  }
  return defaultProblem(500, 'internal error; the request id identifies it in the service log');
}
