/**
 * File and archive transfer routes. Bodies stream straight through, both ways, never buffered
 * whole: uploads at the pace the agent's window allows, downloads at the pace the client reads.
 */

import type { IncomingMessage } from 'node:http';
import { PassThrough } from 'node:stream';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { KilnError } from '../../core/errors.js';
import type { ChunkSink } from '../../protocol/agent-client.js';
import type { KilnService } from '../service.js';
import { writeOrWait } from './backpressure.js';
import { errorSchema, idParams, pathQuery } from './schemas.js';

export async function fileRoutes(app: FastifyInstance, { svc }: { svc: KilnService }): Promise<void> {
  const max = svc.config.limits.maxFileBytes;
  // Raw bodies are passed on as streams, never buffered whole in the server, whatever their
  // Content-Type or none: curl -T sends none, curl --data-binary a form type, and a JSON file is
  // still a file. The archive format is read from its first bytes by the agent.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { bodyLimit: max }, (_req, payload, done) => done(null, payload));
  // A stream parser has no size check of its own: the agent stops a transfer at the limit. An
  // upload whose Content-Length already says it is over is refused before a byte is read.
  app.addHook('onRequest', async (req, reply) => {
    const length = Number(req.headers['content-length'] ?? 0);
    if (length > max) {
      void reply.header('connection', 'close'); // the body is never read
      throw new KilnError('PAYLOAD_TOO_LARGE', `the upload is ${length} bytes; the limit is ${max} bytes (KILN_MAX_FILE_BYTES): split it or raise the limit`, {
        details: { limitBytes: max, requestBytes: length },
      });
    }
  });
  const errors = { 400: errorSchema, 404: errorSchema, 409: errorSchema, 413: errorSchema };

  app.put<{ Params: { id: string }; Querystring: { path: string; mode?: string } }>(
    '/v1/sandboxes/:id/files',
    {
      bodyLimit: max,
      schema: { summary: 'Write a file (raw body); parent folders are created', params: idParams, querystring: pathQuery, response: errors },
    },
    async (req, reply) => {
      const body = bodyStream(req.body);
      const r = await closeIfUnread(req.raw, reply, svc.manager.writeFile(req.params.id, req.query.path, body, req.query.mode ? parseInt(req.query.mode, 8) : undefined));
      return { path: req.query.path, bytes: r.bytes };
    },
  );

  app.get<{ Params: { id: string }; Querystring: { path: string } }>(
    '/v1/sandboxes/:id/files',
    {
      schema: { summary: 'Read a file (raw body)', params: idParams, querystring: pathQuery, response: errors },
    },
    async (req, reply) => streamDownload(reply, 'application/octet-stream', (sink, signal) => svc.manager.readFile(req.params.id, req.query.path, sink, signal)),
  );

  app.get<{ Params: { id: string }; Querystring: { path: string } }>(
    '/v1/sandboxes/:id/ls',
    {
      schema: { summary: 'List a folder', params: idParams, querystring: pathQuery, response: errors },
    },
    async (req) => ({ path: req.query.path, entries: await svc.manager.listFiles(req.params.id, req.query.path) }),
  );

  app.post<{ Params: { id: string }; Querystring: { path?: string } }>(
    '/v1/sandboxes/:id/archive',
    {
      bodyLimit: max,
      schema: {
        summary: 'Upload a tar, tar.gz or zip (any Content-Type: the format is read from the first bytes) and unpack it at ?path= (default /workspace)',
        params: idParams,
        querystring: { type: 'object', properties: { path: { type: 'string', maxLength: 4096 } } },
        response: errors,
      },
    },
    async (req, reply) => {
      const r = await closeIfUnread(req.raw, reply, svc.manager.putArchive(req.params.id, req.query.path ?? '/workspace', bodyStream(req.body)));
      return { path: req.query.path ?? '/workspace', files: r.files ?? 0, bytes: r.bytes };
    },
  );

  app.get<{ Params: { id: string }; Querystring: { path?: string; format?: 'tar' | 'tar.gz' } }>(
    '/v1/sandboxes/:id/archive',
    {
      schema: {
        summary: 'Download a folder as tar or tar.gz',
        params: idParams,
        querystring: { type: 'object', properties: { path: { type: 'string', maxLength: 4096 }, format: { type: 'string', enum: ['tar', 'tar.gz'] } } },
        response: errors,
      },
    },
    async (req, reply: FastifyReply) => {
      const gzip = req.query.format !== 'tar';
      return streamDownload(reply, gzip ? 'application/gzip' : 'application/x-tar', (sink, signal) => svc.manager.getArchive(req.params.id, req.query.path ?? '/workspace', gzip, sink, signal));
    },
  );
}

function bodyStream(body: unknown): AsyncIterable<Buffer> | Buffer {
  if (body === undefined || body === null) return Buffer.alloc(0); // no body at all: an empty file
  if (Buffer.isBuffer(body)) return body;
  if (body && typeof (body as IncomingMessage)[Symbol.asyncIterator] === 'function') return body as AsyncIterable<Buffer>;
  if (typeof body === 'string') return Buffer.from(body);
  throw new KilnError('INVALID_REQUEST', 'send the file as the raw request body (Content-Type: application/octet-stream)');
}

/**
 * An upload the agent refused before the body was all read: the answer closes the connection, so
 * a client still sending is stopped instead of stalling on a body nobody reads.
 */
async function closeIfUnread<T>(raw: IncomingMessage, reply: FastifyReply, upload: Promise<T>): Promise<T> {
  try {
    return await upload;
  } catch (e) {
    if (!raw.complete) void reply.header('connection', 'close');
    throw e;
  }
}

/**
 * Streams a download to the client with backpressure. Until its first byte the answer is still
 * open: an agent error (not found, too large, path escape) becomes a clean JSON error. After it,
 * a failure can only cut the response short: the connection is aborted, never ended as if whole.
 * A client that leaves cancels the transfer.
 */
export async function streamDownload(reply: FastifyReply, contentType: string, run: (sink: ChunkSink, signal: AbortSignal) => Promise<unknown>): Promise<FastifyReply> {
  const ac = new AbortController();
  const body = new PassThrough();
  reply.raw.on('close', () => {
    if (reply.raw.writableFinished) return;
    ac.abort();
    body.destroy(); // releases a chunk waiting for a drain that will not come
  });
  let started!: () => void;
  const firstByte = new Promise<void>((resolve) => {
    started = resolve;
  });
  const transfer = run((chunk) => {
    started();
    return writeOrWait(body, chunk);
  }, ac.signal);
  transfer.catch(() => undefined);
  await Promise.race([firstByte, transfer]);
  transfer.then(
    () => body.end(),
    (e: unknown) => body.destroy(e instanceof Error ? e : new Error(String(e))),
  );
  return reply.type(contentType).send(body);
}
