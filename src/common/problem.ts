import { HttpException } from '@nestjs/common';

/** RFC 9457 problem details. `type` is a stable URI a client can switch on. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  instance?: string;
  [extension: string]: unknown;
}

export const PROBLEM_BASE = 'https://sparsoup.dev/problems/';

const TITLES: Record<number, [string, string]> = {
  400: ['bad-request', 'Bad Request'],
  401: ['unauthorized', 'Unauthorized'],
  403: ['forbidden', 'Forbidden'],
  404: ['not-found', 'Not Found'],
  405: ['method-not-allowed', 'Method Not Allowed'],
  408: ['request-timeout', 'Request Timeout'],
  409: ['conflict', 'Conflict'],
  413: ['payload-too-large', 'Payload Too Large'],
  415: ['unsupported-media-type', 'Unsupported Media Type'],
  422: ['unprocessable', 'Unprocessable Content'],
  429: ['too-many-requests', 'Too Many Requests'],
  500: ['internal', 'Internal Server Error'],
  503: ['unavailable', 'Service Unavailable'],
  504: ['timeout', 'Gateway Timeout'],
};

export function defaultProblem(status: number, detail: string): Problem {
  const [slug, title] = TITLES[status] ?? [String(status), 'Error'];
  return { type: PROBLEM_BASE + slug, title, status, detail };
}

/**
 * The one exception type the code throws for client-visible failures. `slug` names the problem
 * type (`invalid-checkpoint`, `mask-mismatch`, …); extensions carry the specifics.
 */
export class ProblemException extends HttpException {
  readonly problem: Problem;

  constructor(status: number, detail: string, opts: { slug?: string; title?: string; extensions?: Record<string, unknown> } = {}) {
    const base = defaultProblem(status, detail);
    const problem: Problem = {
      ...base,
      ...(opts.slug ? { type: PROBLEM_BASE + opts.slug } : {}),
      ...(opts.title ? { title: opts.title } : {}),
      ...opts.extensions,
    };
    super(problem, status);
    this.problem = problem;
  }
}

export const badRequest = (detail: string, slug?: string, extensions?: Record<string, unknown>) =>
  new ProblemException(400, detail, { slug, extensions });
export const notFound = (what: string, id: string) =>
  new ProblemException(404, `${what} ${id} does not exist`, { extensions: { resource: what, id } });
export const conflict = (detail: string, extensions?: Record<string, unknown>) =>
  new ProblemException(409, detail, { extensions });
export const unprocessable = (detail: string, slug?: string, extensions?: Record<string, unknown>) =>
  new ProblemException(422, detail, { slug, extensions });
