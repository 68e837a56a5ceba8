/**
 * The service's edge on TCP: which callers may reach it at all. Three checks, each a Fastify hook:
 *   - the Host header must name this service (a loopback name, the listen address, or one the
 *     operator lists in KILN_ALLOWED_HOSTS): a DNS-rebinding page sends its own name;
 *   - a browser's Origin must be the service's own origin or one listed in KILN_ALLOWED_ORIGINS
 *     (WebSocket upgrades too: CORS does not protect them). No Origin (curl, the SDK) is fine;
 *   - the bearer (KILN_TOKEN for the admin, or an API key), added inside the scope that holds the
 *     protected routes (see app.ts), so it runs for whatever spelling of a path the router matched.
 * The trusted Unix socket skips all three: browsers cannot open one.
 */

import { timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest, onRequestAsyncHookHandler } from 'fastify';
import { type KilnConfig, normaliseOrigin } from '../core/config.js';
import { KilnError } from '../core/errors.js';
import { KEY_PREFIX, type KeyRing } from '../core/keys.js';
import type { Owner } from '../core/quotas.js';
import type { ApiKeyRecord } from '../core/store.js';

/** Who is calling: the admin (KILN_TOKEN, the trusted socket, or anyone on a service without a token), or an API key. */
export type Principal = { kind: 'admin' } | { kind: 'key'; key: ApiKeyRecord };

export const ADMIN: Principal = { kind: 'admin' };

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal;
  }
}

/** The sandbox owner a principal is limited to: undefined for the admin (every sandbox). */
export function ownerOf(p: Principal): string | undefined {
  return p.kind === 'key' ? p.key.id : undefined;
}

/** The owner a create is made for: an API key and its limits; the admin's sandboxes have none. */
export function ownerFor(p: Principal): Owner | undefined {
  return p.kind === 'key' ? { keyId: p.key.id, limits: p.key.limits } : undefined;
}

export interface AuthOptions {
  /** KILN_TOKEN: the admin's key. Unset: a request without a bearer is the admin (the open default on loopback). */
  token?: string;
  /** KILN_ADMIN_TOKEN, the operator's (pack management): accepted wherever KILN_TOKEN is. */
  adminToken?: string;
  keys?: KeyRing;
  /** The trusted Unix socket: every request is the admin's, no bearer needed. */
  trusted?: boolean;
}

/**
 * onRequest hook of the protected scope: who is calling. The bearer (or ?access_token= on a
 * WebSocket upgrade: browsers cannot set its headers) is the admin token, compared in constant
 * time, or an API key (KeyRing.authenticate: a hash lookup, then a constant-time compare). A bearer
 * that is neither is refused even where no token is configured: a revoked key stays refused.
 */
export function authenticate(o: AuthOptions): onRequestAsyncHookHandler {
  return async (req) => {
    if (o.trusted) {
      req.principal = ADMIN;
      return;
    }
    const header = presented(req);
    if (header === undefined && o.token === undefined) {
      req.principal = ADMIN;
      return;
    }
    if ((o.token !== undefined && matches(header, o.token)) || (o.adminToken && matches(header, o.adminToken))) {
      req.principal = ADMIN;
      return;
    }
    const bearer = bearerOf(header);
    const key = bearer === undefined ? undefined : o.keys?.authenticate(bearer);
    if (key) {
      req.principal = { kind: 'key', key };
      return;
    }
    throw new KilnError('UNAUTHORIZED', 'missing or wrong bearer token: send "Authorization: Bearer <KILN_TOKEN or an API key>" (a WebSocket may pass ?access_token=)');
  };
}

/**
 * Who a bare secret (E2B's X-API-KEY) belongs to, by the same rules as the bearer: the admin
 * token, then an API key. With no KILN_TOKEN set, anything that is not an API key is the admin
 * (E2B's client always sends some key), except a kiln_ key that is revoked or wrong. Undefined: refused.
 */
export function principalForSecret(secret: string | undefined, o: AuthOptions): Principal | undefined {
  const header = secret === undefined ? undefined : `Bearer ${secret}`;
  if ((o.token !== undefined && matches(header, o.token)) || (o.adminToken && matches(header, o.adminToken))) return ADMIN;
  const key = secret === undefined ? undefined : o.keys?.authenticate(secret);
  if (key) return { kind: 'key', key };
  if (o.token === undefined && !secret?.startsWith(KEY_PREFIX)) return ADMIN;
  return undefined;
}

/** onRequest hook for admin-only routes (API keys): an API key gets 403. */
export const requireAdmin: onRequestAsyncHookHandler = async (req) => {
  if (req.principal.kind !== 'admin') throw new KilnError('FORBIDDEN', 'this route is for the admin (KILN_TOKEN or the trusted socket), not for API keys');
};

/** The Authorization header, or ?access_token= on a WebSocket upgrade (browsers cannot set its headers). */
function presented(req: FastifyRequest): string | undefined {
  const fromQuery = req.headers.upgrade?.toLowerCase() === 'websocket' ? (req.query as Record<string, unknown>)?.access_token : undefined;
  return req.headers.authorization ?? (typeof fromQuery === 'string' && fromQuery ? `Bearer ${fromQuery}` : undefined);
}

/** Whether the header is "Bearer <token>", compared in constant time. */
function matches(header: string | undefined, token: string): boolean {
  const got = Buffer.from(header ?? '');
  const expected = Buffer.from(`Bearer ${token}`);
  return got.length === expected.length && timingSafeEqual(got, expected);
}

function bearerOf(header: string | undefined): string | undefined {
  return header === undefined ? undefined : /^Bearer (\S+)$/.exec(header)?.[1];
}

/**
 * onRequest hook for pack management over TCP (image builds run setup commands as root): only the
 * operator's KILN_ADMIN_TOKEN. A caller who is not even a user (no or a wrong bearer while
 * KILN_TOKEN is set) gets the same 401 as everywhere; a user or an API key gets 403. With no admin
 * token configured nobody passes here (the trusted Unix socket, which skips this hook, can).
 */
export function requirePackAdmin(adminToken: string | undefined, userToken: string | undefined, keys?: KeyRing): onRequestAsyncHookHandler {
  return async (req) => {
    const header = presented(req);
    if (adminToken && matches(header, adminToken)) return;
    const bearer = bearerOf(header);
    const isKey = bearer !== undefined && keys?.authenticate(bearer) !== undefined;
    if (userToken && !matches(header, userToken) && !isKey) {
      throw new KilnError('UNAUTHORIZED', 'missing or wrong bearer token: send "Authorization: Bearer <KILN_TOKEN>" (a WebSocket may pass ?access_token=)');
    }
    if (!adminToken) {
      throw new KilnError(
        'ADMIN_REQUIRED',
        'managing packs over TCP needs an admin token: start kiln with KILN_ADMIN_TOKEN=<secret> and send "Authorization: Bearer <KILN_ADMIN_TOKEN>", or use the Unix socket (KILN_SOCKET)',
      );
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
  const names = new Set(
    [...o.allowedHosts, o.host].map((h) => parseAuthority(h.includes(':') && !h.startsWith('[') ? `[${h}]` : h)?.hostname).filter((h): h is string => !!h && h !== '0.0.0.0' && h !== '[::]'),
  );
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
    try {
      listed = origins.has(normaliseOrigin(origin)) ? origin : undefined;
    } catch {
      /* not an origin at all */
    }
    if (!listed) {
      throw new KilnError('ORIGIN_NOT_ALLOWED', `cross-origin request from "${origin.slice(0, 100)}" refused; the operator can allow that origin with KILN_ALLOWED_ORIGINS=scheme://host[:port][,…]`);
    }
    void reply.header('access-control-allow-origin', listed).header('vary', 'Origin');
    if (req.method === 'OPTIONS' && req.headers['access-control-request-method']) {
      return reply
        .status(204)
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
  const parts = url
    .slice(i + 1)
    .split(/([&;])/)
    .map((p) => {
      const eq = p.indexOf('=');
      const key = eq < 0 ? p : p.slice(0, eq);
      let name = key;
      try {
        name = decodeURIComponent(key.replace(/\+/g, ' '));
      } catch {
        /* keep it raw */
      }
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
