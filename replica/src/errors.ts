// Errors with stable codes, in the manner of fastify's FST_ERR_*: the code never changes meaning,
// the message says what to do.

export const errorCodes = {
  BFT_ERR_CONFIG_INVALID: 'the configuration is invalid',
  BFT_ERR_VIEW_INVALID: 'the view does not satisfy the fault model',
  BFT_ERR_INVARIANT: 'an internal invariant was violated (a bug in bftkube)',
  BFT_ERR_RESTORE_INVALID: 'the persisted state cannot be restored',
} as const;

export type ErrorCode = keyof typeof errorCodes;

export class BftError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(`${code}: ${message}`, options);
    this.name = 'BftError';
    this.code = code;
  }
}

/** Our own invariants only; untrusted input is validated and dropped, never asserted. */
export function invariant(condition: unknown, message: string): asserts condition {
  if (!condition) throw new BftError('BFT_ERR_INVARIANT', message);
}
