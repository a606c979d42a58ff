import type { IncomingMessage } from 'node:http';
import { READ_METHODS } from './api-keys.js';
import { ProblemException } from './problem.js';

/** Request bodies are small descriptions (ids, options, lists of configs): 1 MiB is far above any. */
export const MAX_JSON_BODY_BYTES = 1024 * 1024;
/** The deepest DTO nests about five levels; 32 leaves room and keeps recursive validation shallow. */
export const MAX_JSON_BODY_DEPTH = 32;

/**
 * The deepest nesting of `[`/`{` in UTF-8 JSON bytes, ignoring brackets inside strings; stops
 * counting (and returns) as soon as `limit` is passed. One linear pass, no recursion, no allocation.
 */
export function jsonDepthExceeds(bytes: Uint8Array, limit: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i];
    if (inString) {
      if (c === 0x5c) i++; // skip the escaped byte
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > limit) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

/** body-parser `verify` hook: refuses a too-deep body before JSON.parse and the validator see it. */
export function verifyJsonDepth(_req: IncomingMessage, _res: unknown, buf: Buffer, encoding: string): void {
  // RFC 8259: JSON between systems is UTF-8; the byte scan below relies on it.
  if (encoding.toLowerCase() !== 'utf-8' && encoding.toLowerCase() !== 'utf8') {
    throw new ProblemException(415, `JSON bodies must be UTF-8, not ${encoding}`);
  }
  if (jsonDepthExceeds(buf, MAX_JSON_BODY_DEPTH)) {
    throw new ProblemException(400, `the JSON body nests more than ${MAX_JSON_BODY_DEPTH} levels deep`, { slug: 'json-too-deep' });
  }
}

/** body-parser `type`: JSON media types on methods that carry a body (a GET body is never parsed). */
export function isJsonBodyRequest(req: IncomingMessage): boolean {
  if (READ_METHODS.has(req.method ?? '')) return false;
  const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  return type === 'application/json' || /^application\/[^/\s]+\+json$/.test(type);
}
