import { ERROR_CODES, type ErrorCode } from './generated.js';

/**
 * `code` of an error answer that did not come from kiln (a proxy's HTML 502, say): HTTP_ and the
 * status. Every answer kiln itself gives carries one of ERROR_CODES.
 */
export type HttpErrorCode = `HTTP_${number}`;

/**
 * An error answer from kiln: its stable `code` (switch on it; ERROR_CODES lists them), the HTTP
 * `status`, and a message that says what to do next. 429/503 answers carry `retryAfterSec`.
 */
export class KilnError extends Error {
  constructor(
    readonly status: number,
    readonly code: ErrorCode | HttpErrorCode,
    message: string,
    readonly retryAfterSec?: number,
    /** Machine-readable extras some errors carry (limits, the field at fault). */
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'KilnError';
  }
}

/** The name the SDK used before KilnError; the same class. */
export const KilnApiError = KilnError;
export type KilnApiError = KilnError;

/** Whether `code` is one kiln answers with (and so a narrowed ErrorCode). */
export function isErrorCode(code: string): code is ErrorCode {
  return (ERROR_CODES as readonly string[]).includes(code);
}
