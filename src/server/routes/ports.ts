/**
 * Inbound ports (docs/ports.md): a server listening on a sandbox's loopback, reached through the
 * API although the sandbox has no address of its own. Every connection is one agent `tcp.connect`
 * stream (the manager's connectPort), so it works with any network policy, `none` included.
 *   - any method on /v1/sandboxes/:id/ports/:port[/*]: an HTTP reverse proxy. Node's HTTP client
 *     speaks to the server over the agent stream (its createConnection), bodies stream both ways.
 *   - an Upgrade request (WebSocket or any other) on those paths: its head is written to a new
 *     agent stream and from there the bytes pass through raw, both ways.
 *   - GET /v1/sandboxes/:id/tunnel/:port (tunnel.ts): a WebSocket carrying raw TCP, for the CLI.
 * These routes stay out of the OpenAPI document (a proxy has no schema of its own).
 */
import { request as httpRequest, type IncomingMessage, STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { KilnService } from '../service.js';
import { portError, portOf, portParams } from './port-target.js';
import { downstreamHeaders, type ForwardedFrom, requestHead, splitProxyUrl, upstreamHeaders } from './proxy-headers.js';
import { tunnelRoute } from './tunnel.js';

type PortParams = { Params: { id: string; port: string; '*'?: string } };
type PortRequest = FastifyRequest<PortParams>;

declare module 'fastify' {
  interface FastifyContextConfig {
    /** An upgrade request on this route is passed through raw (app.ts lets it past the WebSocket check). */
    rawUpgrade?: boolean;
    /** A browser link's token or cookie may open this route instead of the bearer (port-links.ts). */
    portLink?: boolean;
  }
}

export async function portRoutes(app: FastifyInstance, { svc }: { svc: KilnService }): Promise<void> {
  // Request bodies pass through unread: this scope parses none of them.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, payload, done) => done(null, payload));
  // kiln's own answers on these paths (401, 404, 502…) are told from the server's by this header.
  app.addHook('onError', async (_req, reply, err) => {
    void reply.header('x-kiln-error', (err as { code?: unknown }).code ?? 'INTERNAL');
  });

  for (const url of ['/v1/sandboxes/:id/ports/:port', '/v1/sandboxes/:id/ports/:port/*']) {
    app.all<PortParams>(
      url,
      {
        schema: { hide: true, params: portParams },
        // Upgrades on these paths are passed through raw, not answered by @fastify/websocket (app.ts).
        config: { rawUpgrade: true, portLink: true },
        preHandler: async (req, reply) => {
          if (req.ws) passUpgrade(svc, req, reply);
        },
      },
      (req, reply) => proxyHttp(svc, req, reply),
    );
  }
  tunnelRoute(app, svc);
}

function forwardedFrom(req: PortRequest, prefix: string, port: number): ForwardedFrom {
  return { remoteAddress: req.socket.remoteAddress, protocol: req.protocol, host: req.headers.host, prefix, port };
}

async function proxyHttp(svc: KilnService, req: PortRequest, reply: FastifyReply): Promise<FastifyReply> {
  const { id } = req.params;
  const port = portOf(req.params.port);
  const { prefix, path } = splitProxyUrl(req.raw.url ?? '/', false);
  const tcp = svc.manager.connectPort(id, port);
  const upstream = httpRequest({
    method: req.method,
    path,
    headers: upstreamHeaders(req.headers, forwardedFrom(req, prefix, port), false),
    createConnection: () => tcp as unknown as Socket,
  });
  // The client gone (before or during the answer): the agent stream is cancelled, the sandbox's
  // connection closed. After a complete answer this does nothing.
  reply.raw.once('close', () => {
    upstream.destroy();
    tcp.destroy();
  });
  req.raw.pipe(upstream);
  let res: IncomingMessage;
  try {
    res = await new Promise<IncomingMessage>((resolve, reject) => {
      upstream.once('response', resolve);
      upstream.once('error', reject);
    });
  } catch (e) {
    tcp.destroy();
    throw portError(e, id, port);
  }
  // An error after the head (the sandbox gone mid-answer) aborts the answer: Fastify destroys it.
  upstream.on('error', () => undefined);
  return reply
    .code(res.statusCode ?? 502)
    .headers(downstreamHeaders(res.headers))
    .send(res);
}

/**
 * An Upgrade request: once the agent stream is open its head goes to the server and the bytes
 * pass through both ways. The server's answer (101, or a refusal) is the client's to read.
 */
function passUpgrade(svc: KilnService, req: PortRequest, reply: FastifyReply): void {
  const { id } = req.params;
  const port = portOf(req.params.port);
  const socket = req.raw.socket;
  const fromQuery = req.headers.authorization === undefined; // edge.ts: then ?access_token= was kiln's
  const { prefix, path } = splitProxyUrl(req.raw.url ?? '/', fromQuery);
  const tcp = svc.manager.connectPort(id, port);
  void reply.hijack();
  reply.raw.detachSocket(socket);
  tcp.write(requestHead(req.method, path, upstreamHeaders(req.headers, forwardedFrom(req, prefix, port), true)));
  const head = upgradeHead(req.raw);
  if (head.length > 0) tcp.write(head);
  let answered = false;
  tcp.once('data', () => {
    answered = true;
  });
  tcp.on('error', (e) => {
    if (answered || !socket.writable) return void socket.destroy();
    const err = portError(e, id, port);
    const body = JSON.stringify(err.toJSON());
    socket.end(`HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? 'Error'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  });
  socket.on('error', () => tcp.destroy());
  socket.once('close', () => tcp.destroy());
  tcp.once('close', () => {
    if (answered) socket.destroySoon();
  });
  socket.pipe(tcp);
  tcp.pipe(socket);
}

/** Bytes the client sent after the head (kept by @fastify/websocket under a private symbol). */
function upgradeHead(raw: IncomingMessage): Buffer {
  const sym = Object.getOwnPropertySymbols(raw).find((s) => s.description === 'ws-head');
  const v = sym ? (raw as unknown as Record<symbol, unknown>)[sym] : undefined;
  return Buffer.isBuffer(v) ? v : Buffer.alloc(0);
}
