import { createHmac, timingSafeEqual } from 'node:crypto';

export const SIGNATURE_HEADER = 'x-sparsoup-signature';
export const TIMESTAMP_HEADER = 'x-sparsoup-timestamp';
export const DELIVERY_HEADER = 'x-sparsoup-delivery';
export const EVENT_HEADER = 'x-sparsoup-event';

/**
 * `sha256=<hex>` of HMAC-SHA256(secret, `${timestamp}.${body}`). The timestamp (Unix seconds, sent in
 * x-sparsoup-timestamp) is part of what is signed, so a captured delivery cannot be replayed later
 * with a fresh timestamp; receivers reject timestamps older than a few minutes.
 */
export function signWebhook(secret: string, timestamp: number, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

/** What a receiver does: constant-time comparison and a freshness window. */
export function verifyWebhook(secret: string, headers: { signature?: string; timestamp?: string }, body: string, opts: { toleranceSeconds?: number; now?: number } = {}): boolean {
  const timestamp = Number(headers.timestamp);
  if (!headers.signature || !Number.isInteger(timestamp)) return false;
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - timestamp) > (opts.toleranceSeconds ?? 300)) return false;
  const expected = Buffer.from(signWebhook(secret, timestamp, body));
  const given = Buffer.from(headers.signature);
  return given.length === expected.length && timingSafeEqual(given, expected);
}
