/**
 * GET /v1/sandboxes/:id/tunnel/:port (WebSocket): one TCP connection to a port on the sandbox's
 * loopback, for `kiln sandbox port-forward` and any client that wants raw TCP (docs/ports.md).
 * Binary messages are the connection's bytes, both ways. The text message "eof" half-closes a
 * direction (the client's: the server in the sandbox reads EOF; the server's: it closed its side).
 * The connection is made before the upgrade, so a port nobody listens on is an HTTP 502
 * PORT_UNREACHABLE the client can read, not a socket that opens and closes at once.
 * Backpressure both ways: the socket is not read while the agent stream's buffer is full, and the
 * agent stream is not read while the socket's send buffer is over WS_HIGH_WATER_BYTES.
 */
import { once } from 'node:events';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { WebSocket } from 'ws';
import type { TcpStream } from '../../protocol/agent-tcp.js';
import type { KilnService } from '../service.js';
import { portError, portOf, portParams } from './port-target.js';

const WS_HIGH_WATER_BYTES = 256 * 1024;
const CONNECT_TIMEOUT_MS = 10_000;

type TunnelRequest = FastifyRequest<{ Params: { id: string; port: string } }>;

export function tunnelRoute(app: FastifyInstance, svc: KilnService): void {
  const opened = new WeakMap<FastifyRequest, TcpStream>();
  app.get(
    '/v1/sandboxes/:id/tunnel/:port',
    {
      websocket: true,
      schema: { hide: true, params: { ...portParams, properties: { id: portParams.properties.id, port: portParams.properties.port } } },
      preHandler: async (req: TunnelRequest) => {
        const port = portOf(req.params.port);
        const tcp = svc.manager.connectPort(req.params.id, port);
        // Whatever happens to the upgrade, the agent stream ends with the client's connection.
        req.raw.socket.once('close', () => tcp.destroy());
        try {
          await once(tcp, 'connect', { signal: AbortSignal.timeout(CONNECT_TIMEOUT_MS) });
        } catch (e) {
          tcp.destroy();
          throw portError(e, req.params.id, port);
        }
        opened.set(req, tcp);
      },
    },
    (socket: WebSocket, req: TunnelRequest) => {
      const tcp = opened.get(req);
      if (tcp) relay(socket, tcp);
      else socket.close(1011, 'tunnel not open');
    },
  );
}

function relay(ws: WebSocket, tcp: TcpStream): void {
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (!isBinary) {
      if (data.toString() === 'eof') tcp.end();
      return;
    }
    if (!tcp.write(data)) {
      ws.pause();
      tcp.once('drain', () => ws.resume());
    }
  });
  tcp.on('data', (chunk: Buffer) => {
    if (ws.readyState !== ws.OPEN) return;
    ws.send(chunk, { binary: true }, () => {
      if (tcp.isPaused() && ws.bufferedAmount < WS_HIGH_WATER_BYTES) tcp.resume();
    });
    if (ws.bufferedAmount >= WS_HIGH_WATER_BYTES) tcp.pause();
  });
  tcp.on('end', () => {
    if (ws.readyState === ws.OPEN) ws.send('eof');
  });
  tcp.on('error', (e: Error) => {
    if (ws.readyState === ws.OPEN) ws.close(1011, e.message.slice(0, 120));
  });
  tcp.on('close', () => {
    if (ws.readyState === ws.OPEN) ws.close(1000);
  });
  ws.on('close', () => tcp.destroy());
  ws.on('error', () => tcp.destroy());
}
