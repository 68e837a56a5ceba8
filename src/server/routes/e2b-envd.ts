/**
 * envd, E2B's in-sandbox daemon, served by kiln for every sandbox on its own listener: the client
 * (with E2B_SANDBOX_URL set) tags each request with E2b-Sandbox-Id and X-Access-Token, and
 * e2bRewriteUrl routes it here under ENVD_PREFIX. Connect RPC (process.Process,
 * filesystem.Filesystem; JSON or binary) through @connectrpc/connect-node's adapter with the
 * generated service descriptors; GET /files, POST /files (multipart or a raw body) and GET /health
 * as plain HTTP.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { type ConnectRouter, createContextKey, createContextValues, type HandlerContext } from '@connectrpc/connect';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import Busboy from 'busboy';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { isKilnError, KilnError } from '../../core/errors.js';
import type { Sandbox } from '../../core/sandbox.js';
import { Filesystem } from '../../e2b/gen/filesystem/filesystem_pb.js';
import { Process } from '../../e2b/gen/process/process_pb.js';
import type { KilnService } from '../service.js';
import { filesystemService, resolvePath } from './e2b-filesystem.js';
import { ProcessTable, processService } from './e2b-process.js';
import { ENVD_PREFIX } from './e2b-state.js';
import { streamDownload } from './files.js';

const kSandbox = createContextKey<Sandbox | undefined>(undefined);

export async function envdRoutes(app: FastifyInstance, { svc, sandboxOf }: { svc: KilnService; sandboxOf: (req: FastifyRequest) => Sandbox }): Promise<void> {
  const max = svc.config.limits.maxFileBytes;
  // Bodies stay unread here: the Connect adapter and the upload route read the raw stream.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { bodyLimit: max }, (_req, _payload, done) => done(null, undefined));

  const sandboxes = new WeakMap<IncomingMessage, Sandbox>();
  const fromCtx = (ctx: HandlerContext): Sandbox => {
    const sb = ctx.values.get(kSandbox);
    if (!sb) throw new KilnError('INTERNAL', 'no sandbox on this request');
    return sb;
  };
  const table = new ProcessTable();
  /** Open Connect responses by sandbox: cut when the sandbox goes away under them. */
  const open = new Map<string, Set<ServerResponse>>();
  const sandboxGone = (id: string): void => {
    for (const res of open.get(id) ?? []) res.destroy();
    open.delete(id);
  };
  const adapter = connectNodeAdapter({
    requestPathPrefix: ENVD_PREFIX,
    contextValues: (req) => createContextValues().set(kSandbox, sandboxes.get(req as IncomingMessage)),
    routes: (router: ConnectRouter) => {
      router.service(Process, processService(svc, table, fromCtx, sandboxGone));
      router.service(Filesystem, filesystemService(svc, fromCtx));
    },
  });

  // Every data-plane request names its sandbox and proves it may use it, before any route runs.
  // A sandbox that is gone answers 502 as E2B's proxy does: the client reads it as "killed or timed out".
  app.addHook('onRequest', async (req, reply) => {
    if (req.url === `${ENVD_PREFIX}/health`) return undefined;
    try {
      sandboxes.set(req.raw, sandboxOf(req));
    } catch (e) {
      if (isKilnError(e) && e.code === 'SANDBOX_NOT_FOUND') return reply.status(502).send({ code: 502, message: e.message });
      throw e;
    }
    return undefined;
  });

  // 502 for a sandbox that is gone: the client's health probe reads it as "killed or timed out".
  app.get(`${ENVD_PREFIX}/health`, { schema: { hide: true } }, async (req, reply) => {
    const id = req.headers['e2b-sandbox-id'];
    const sb = typeof id === 'string' ? svc.manager.peek(id) : undefined;
    if (sb?.state !== 'ready') return reply.status(502).send({ code: 502, message: 'the sandbox is not running' });
    return reply.status(204).send();
  });

  app.route({
    method: ['POST', 'GET'],
    url: `${ENVD_PREFIX}/:service/:method`,
    schema: { hide: true },
    handler: async (req, reply) => {
      reply.hijack();
      const id = sandboxes.get(req.raw)!.id;
      let set = open.get(id);
      if (!set) open.set(id, (set = new Set()));
      set.add(reply.raw);
      await new Promise<void>((resolve) => {
        reply.raw.once('close', () => {
          open.get(id)?.delete(reply.raw);
          if (open.get(id)?.size === 0) open.delete(id);
          resolve();
        });
        adapter(req.raw, reply.raw);
      });
    },
  });

  app.get<{ Querystring: { path?: string } }>(`${ENVD_PREFIX}/files`, { schema: { hide: true } }, async (req, reply) => {
    const sb = sandboxes.get(req.raw)!;
    const path = resolvePath(sb, req.query.path ?? '');
    return streamDownload(reply, 'application/octet-stream', (sink, signal) => svc.manager.readFile(sb.id, path, sink, signal));
  });

  app.post<{ Querystring: { path?: string } }>(`${ENVD_PREFIX}/files`, { bodyLimit: max, schema: { hide: true } }, async (req) => {
    const sb = sandboxes.get(req.raw)!;
    const type = req.headers['content-type'] ?? '';
    const written: Array<{ name: string; type: 'file'; path: string }> = [];
    const write = async (target: string, body: Readable): Promise<void> => {
      const path = resolvePath(sb, target);
      const gz = req.headers['content-encoding'] === 'gzip';
      await svc.manager.writeFile(sb.id, path, gz ? body.pipe(createGunzip()) : body);
      written.push({ name: posix.basename(path), type: 'file', path });
    };
    if (type.startsWith('multipart/form-data')) {
      await new Promise<void>((resolve, reject) => {
        const bb = Busboy({ headers: req.headers, preservePath: true, limits: { fileSize: max } });
        let chain = Promise.resolve();
        bb.on('file', (_field, stream, info) => {
          const target = req.query.path ?? info.filename;
          if (!target) {
            stream.resume();
            chain = chain.then(() => Promise.reject(new KilnError('INVALID_REQUEST', 'each file needs ?path= or a file name in its part')));
            return;
          }
          // One file at a time: busboy waits for this stream to be read before the next part.
          chain = chain.then(() => write(target, stream));
          chain.catch(() => stream.resume());
        });
        bb.on('error', (e: Error) => reject(new KilnError('INVALID_REQUEST', `malformed multipart body: ${e.message}`)));
        bb.on('close', () => chain.then(resolve, reject));
        req.raw.pipe(bb);
      });
    } else {
      if (!req.query.path) throw new KilnError('INVALID_REQUEST', 'a raw upload needs ?path=');
      await write(req.query.path, req.raw);
    }
    if (written.length === 0) throw new KilnError('INVALID_REQUEST', 'no file in the upload');
    return written;
  });
}
