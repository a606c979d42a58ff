/**
 * What a database error means for the client. Two kinds reach the API: the database is not
 * reachable (the server is down, restarting or cut off: 503, the request can be retried), and a
 * constraint refused a write that raced another request (a row deleted while something started to
 * use it, a unique value taken meanwhile: 409). Everything else is a server fault.
 */

/** node-postgres / Node socket codes and Postgres SQLSTATEs that mean "no database right now". */
const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up, shutting down)
  '53300', // too_many_connections
]);
const UNAVAILABLE_MESSAGES = [/connection terminated/i, /timeout exceeded when trying to connect/i, /connection error/i, /client has encountered a connection error/i, /Client was closed and is not queryable/i];

function* chain(err: unknown): Generator<Record<string, unknown>> {
  const seen = new Set<unknown>();
  let e = err;
  while (e && typeof e === 'object' && !seen.has(e)) {
    seen.add(e);
    yield e as Record<string, unknown>;
    const x = e as { driverError?: unknown; cause?: unknown; errors?: unknown[] };
    if (Array.isArray(x.errors)) for (const inner of x.errors) if (inner && typeof inner === 'object') yield inner as Record<string, unknown>;
    e = x.driverError ?? x.cause;
  }
}

/** True when `err` says the database could not be reached (not that a query was wrong). */
export function isDatabaseUnavailable(err: unknown): boolean {
  for (const e of chain(err)) {
    const code = typeof e.code === 'string' ? e.code : '';
    if (UNAVAILABLE_CODES.has(code) || code.startsWith('08')) {
      // A client that hung up on us mid-body is also ECONNRESET ("aborted"); that is not the database.
      if (code === 'ECONNRESET' && e.message === 'aborted') return false;
      return true;
    }
    if (typeof e.message === 'string' && UNAVAILABLE_MESSAGES.some((re) => re.test(e.message as string))) return true;
  }
  return false;
}

export interface ConstraintViolation {
  kind: 'foreign-key' | 'unique';
  /** The table the statement wrote to. */
  table: string | null;
  constraint: string | null;
  /** Postgres's detail line, e.g. `Key (model_id)=(…) is not present in table "model".` */
  detail: string | null;
}

/** The foreign-key (23503) or unique (23505) violation inside `err`, if that is what it is. */
export function constraintViolation(err: unknown): ConstraintViolation | null {
  for (const e of chain(err)) {
    if (e.code !== '23503' && e.code !== '23505') continue;
    return {
      kind: e.code === '23503' ? 'foreign-key' : 'unique',
      table: typeof e.table === 'string' ? e.table : null,
      constraint: typeof e.constraint === 'string' ? e.constraint : null,
      detail: typeof e.detail === 'string' ? e.detail : null,
    };
  }
  return null;
}

/** A sentence for a client: which resource the write collided with, and how. */
export function describeViolation(v: ConstraintViolation): { detail: string; resource: string | null } {
  const key = v.detail?.match(/^Key \(([^)]+)\)=\(([^)]*)\)/);
  const column = key?.[1] ?? null;
  const value = key?.[2] ?? null;
  const missing = v.detail?.match(/is not present in table "([^"]+)"/)?.[1];
  if (missing) {
    // A row this one points to went away (a model deleted while a soup that uses it was created).
    return { resource: missing, detail: `${missing}${value ? ` ${value}` : ''} was deleted or does not exist (it changed while this request ran); nothing was written` };
  }
  const user = v.detail?.match(/is still referenced from table "([^"]+)"/)?.[1];
  if (user) {
    // The row being deleted is still pointed to (something started to use it meanwhile).
    return { resource: v.table, detail: `${v.table ?? 'the resource'}${value ? ` ${value}` : ''} is still used by ${user.replace(/_/g, ' ')}; nothing was deleted` };
  }
  if (v.kind === 'unique') {
    return { resource: v.table, detail: `${v.table ?? 'a resource'} with ${column ?? 'that key'}${value ? ` ${value}` : ''} already exists (another request made it meanwhile); nothing was written` };
  }
  return { resource: v.table, detail: `the change conflicts with ${v.table ?? 'another resource'}; nothing was written` };
}
