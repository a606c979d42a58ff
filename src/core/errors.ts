/**
 * Bad input found by the pure core (a malformed checkpoint, a mask that does not fit). The service
 * maps it to a 4xx problem+json: `code` becomes the problem type, `details` its extension fields.
 */
export class CoreInputError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
    /** 400 for malformed input, 413 for too large, 422 for well-formed input that cannot be used. */
    readonly status: 400 | 413 | 422 = 400,
  ) {
    super(message);
    this.name = 'CoreInputError';
  }
}
