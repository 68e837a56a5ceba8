/** The HTTP edge of the error catalogue: every error leaves as {code, message} with its status. */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { isKilnError, KilnError } from '../core/errors.js';
import type { Metrics } from '../core/metrics.js';
import { type SchemaError, schemaError } from './validation.js';

export function errorHandler(metrics: Metrics | undefined) {
  return (err: FastifyError | Error, req: FastifyRequest, reply: FastifyReply): void => {
    const e = translate(err, req);
    metrics?.countError(e);
    if (e.status >= 500 && e.code === 'INTERNAL') req.log.error({ err }, 'internal error');
    if (e.retryAfterSec !== undefined) void reply.header('retry-after', String(e.retryAfterSec));
    void reply.status(e.status).send(e.toJSON());
  };
}

/** Any error a route throws as the KilnError it is answered with (exported for the E2B routes' own error shape). */
export function translate(err: FastifyError | Error, req: FastifyRequest): KilnError {
  if (isKilnError(err)) return err;
  const fe = err as FastifyError;
  if (fe.validation?.length) return schemaError(fe.validation as SchemaError[], fe.validationContext ?? 'body');
  switch (fe.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE': {
      const limit = req.routeOptions.bodyLimit;
      return new KilnError('PAYLOAD_TOO_LARGE', `the request body is over this route's limit of ${limit} bytes; upload big files with PUT /v1/sandboxes/:id/files or an archive`, {
        details: { limitBytes: limit },
      });
    }
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': {
      const sent = req.headers['content-type'];
      return new KilnError(
        'INVALID_REQUEST',
        `${req.method} ${req.url.split('?')[0]} takes a JSON body (Content-Type: application/json); this request sent ${sent ? `Content-Type: ${sent.slice(0, 100)}` : 'no Content-Type'}`,
        { details: { contentType: sent ?? null } },
      );
    }
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new KilnError('INVALID_REQUEST', 'the request body is empty; this route takes a JSON object');
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new KilnError('INVALID_REQUEST', 'the request body is not valid JSON');
  }
  // Fastify's JSON parser passes JSON.parse's own error on, which says where but not what.
  if (err instanceof SyntaxError && fe.statusCode === 400) return new KilnError('INVALID_REQUEST', `the request body is not valid JSON: ${err.message}`);
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    return new KilnError('INVALID_REQUEST', fe.message);
  }
  return new KilnError('INTERNAL', 'internal error; the server log has the details');
}
