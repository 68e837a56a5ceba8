/**
 * The service's edge on TCP: which callers may reach it at all. Three checks, each a Fastify hook:
 *   - the Host header must name this service (a loopback name, the listen address, or one the
 *     operator lists in KILN_ALLOWED_HOSTS): a DNS-rebinding page sends its own name;
 *   - a browser's Origin must be the service's own origin or one listed in KILN_ALLOWED_ORIGINS
 *     (WebSocket upgrades too: CORS does not protect them). No Origin (curl, the SDK) is fine;
 *   - the bearer token, added inside the scope that holds the protected routes (see app.ts), so it
 *     runs for whatever spelling of a path the router matched.
 * The trusted Unix socket skips all three: browsers cannot open one.
 */
import type { FastifyReply, FastifyRequest, onRequestAsyncHookHandler } from 'fastify';
import { timingSafeEqual } from 'node:crypto';
import { normaliseOrigin, type KilnConfig } from '../core/config.js';
import { KilnError } from '../core/errors.js';

function presented(req: FastifyRequest): Buffer {
  const fromQuery = req.headers.upgrade?.toLowerCase() === 'websocket' ? (req.query as Record<string, unknown>)?.access_token : undefined;
  return Buffer.from(req.headers.authorization ?? (typeof fromQuery === 'string' && fromQuery ? `Bearer ${fromQuery}` : ''));
}

function matches(got: Buffer, token: string): boolean {
  const expected = Buffer.from(`Bearer ${token}`);
  return got.length === expected.length && timingSafeEqual(got, expected);
}

/**
 * onRequest hook: the bearer token, or ?access_token= on a WebSocket upgrade (browsers cannot set
 * its headers). The admin token (KILN_ADMIN_TOKEN), when set, is accepted too: an admin is a user.
 */
export function requireToken(token: string, adminToken?: string): onRequestAsyncHookHandler {
  return async (req) => {
    const got = presented(req);
    if (!matches(got, token) && !(adminToken && matches(got, adminToken))) {
      throw new KilnError('UNAUTHORIZED', 'missing or wrong bearer token: send "Authorization: Bearer <KILN_TOKEN>" (a WebSocket may pass ?access_token=)');
    }
  };
}

/**
 * onRequest hook for pack management over TCP: only the admin token. A caller who is not even a user
 * (no or a wrong bearer while KILN_TOKEN is set) gets the same 401 as everywhere; a user gets 403.
 * With no admin token configured nobody passes here (the trusted Unix socket, which skips this hook, can).
 */
export function requireAdmin(adminToken: string | undefined, userToken: string | undefined): onRequestAsyncHookHandler {
  const asUser = userToken ? requireToken(userToken) : undefined;
  return async function (this: unknown, req, reply) {
    const got = presented(req);
    if (adminToken && matches(got, adminToken)) return;
    await asUser?.call(this as never, req, reply);
    if (!adminToken) {
      throw new KilnError('ADMIN_REQUIRED', 'managing packs over TCP needs an admin token: start kiln with KILN_ADMIN_TOKEN=<secret> and send "Authorization: Bearer <KILN_ADMIN_TOKEN>", or use the Unix socket (KILN_SOCKET)');
    }
    throw new KilnError('ADMIN_REQUIRED', 'managing packs needs the admin token: send "Authorization: Bearer <KILN_ADMIN_TOKEN>"');
  };
}

interface HostPort {
  hostname: string;
  port: string;
}

/** A Host header or an origin's authority, lower-cased, IPv4 forms normalised; undefined if malformed. */
function parseAuthority(authority: string, scheme = 'http:'): HostPort | undefined {
  if (!/^[A-Za-z0-9.\-:[\]]+$/.test(authority)) return undefined;
  try {
    const u = new URL(`${scheme}//${authority}`);
    return { hostname: u.hostname, port: u.port || (scheme === 'https:' ? '443' : '80') };
  } catch {
    return undefined;
  }
}

export function isLoopbackName(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname);
}

export interface EdgeGuardOptions {
  host: KilnConfig['host'];
  allowedHosts: string[];
  allowedOrigins: string[];
}

/** onRequest hook for the whole TCP listener: Host, then Origin; answers CORS preflights for listed origins. */
export function guardHostAndOrigin(o: EdgeGuardOptions): (req: FastifyRequest, reply: FastifyReply) => Promise<FastifyReply | undefined> {
  const anyHost = o.allowedHosts.includes('*');
  // A wildcard listen address (0.0.0.0, ::) is not a name anyone should send as Host.
  const names = new Set([...o.allowedHosts, o.host].map((h) => parseAuthority(h.includes(':') && !h.startsWith('[') ? `[${h}]` : h)?.hostname)
    .filter((h): h is string => !!h && h !== '0.0.0.0' && h !== '[::]'));
  const origins = new Set(o.allowedOrigins);
  return async (req, reply) => {
    const hostHeader = req.headers.host;
    const host = hostHeader === undefined ? undefined : parseAuthority(hostHeader);
    if (hostHeader !== undefined && !anyHost && !(host && (isLoopbackName(host.hostname) || names.has(host.hostname)))) {
      throw new KilnError('HOST_NOT_ALLOWED', `Host "${hostHeader.slice(0, 100)}" is not a name of this service; the operator can allow it with KILN_ALLOWED_HOSTS=name[,name…]`);
    }
    const origin = req.headers.origin;
    if (origin === undefined) return undefined;
    if (sameOrigin(origin, host)) return undefined;
    let listed: string | undefined;
    try { listed = origins.has(normaliseOrigin(origin)) ? origin : undefined; } catch { /* not an origin at all */ }
    if (!listed) {
      throw new KilnError('ORIGIN_NOT_ALLOWED', `cross-origin request from "${origin.slice(0, 100)}" refused; the operator can allow that origin with KILN_ALLOWED_ORIGINS=scheme://host[:port][,…]`);
    }
    void reply.header('access-control-allow-origin', listed).header('vary', 'Origin');
    if (req.method === 'OPTIONS' && req.headers['access-control-request-method']) {
      return reply.status(204)
        .header('access-control-allow-methods', 'GET, POST, PUT, DELETE')
        .header('access-control-allow-headers', 'authorization, content-type, accept')
        .header('access-control-max-age', '600')
        .send();
    }
    return undefined;
  };
}

function sameOrigin(origin: string, host: HostPort | undefined): boolean {
  if (!host) return false;
  const m = /^(https?:)\/\/(.+)$/.exec(origin);
  const o = m && parseAuthority(m[2]!, m[1]);
  if (!o) return false;
  const hostPort = host.port === '80' && m[1] === 'https:' ? '443' : host.port;
  return o.hostname === host.hostname && o.port === hostPort;
}

/** A URL for the logs: the value of any access_token parameter (however its name is encoded) replaced. */
export function redactUrl(url: string): string {
  const i = url.search(/[?;]/);
  if (i < 0) return url;
  const parts = url.slice(i + 1).split(/([&;])/).map((p) => {
    const eq = p.indexOf('=');
    const key = eq < 0 ? p : p.slice(0, eq);
    let name = key;
    try { name = decodeURIComponent(key.replace(/\+/g, ' ')); } catch { /* keep it raw */ }
    return name.trim().toLowerCase() === 'access_token' ? `${key}=[redacted]` : p;
  });
  return url.slice(0, i + 1) + parts.join('');
}

/** Fastify's request log serializer with the token taken out of the URL. */
export const requestSerializer = (req: FastifyRequest): Record<string, unknown> => ({
  method: req.method,
  url: redactUrl(req.url),
  hostname: req.hostname,
  remoteAddress: req.ip,
  remotePort: req.socket?.remotePort,
});
