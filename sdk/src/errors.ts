/** Errors the SDK raises: the API's {code, message}, or a transport failure. */
export class KilnApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string, readonly retryAfterSec?: number) {
    super(message);
    this.name = 'KilnApiError';
  }
}
