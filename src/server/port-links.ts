/**
 * Browser links to a sandbox's port (docs/ports.md): a browser tab cannot send the bearer token, so
 * `POST /v1/sandboxes/:id/port-links` hands out a short-lived URL carrying a signed token that opens
 * that one port of that one sandbox, and nothing else.
 *
 * The token is `<expiry in unix seconds>.<HMAC-SHA256>` over the sandbox id, the port and the
 * expiry, keyed by a random secret made per service start (a restart ends every link). The first
 * visit with `?kiln_link=<token>` sets it as an HttpOnly cookie whose Path is the port's prefix
 * (`/v1/sandboxes/<id>/ports/<port>/`) and redirects to the same URL without it, so the token
 * leaves the address bar and the history; from there the page, its relative links, assets and
 * WebSockets work with the cookie alone. SameSite=Lax, not Strict: a link is typically opened
 * from elsewhere (a chat, a terminal, another site), and Strict withholds the cookie on the very
 * redirect that follows such a navigation; Lax still keeps it off cross-site subrequests, frames
 * and form posts. The cookie never reaches the sandbox's server (proxy-headers.ts drops it).
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { KilnError } from '../core/errors.js';
import type { KilnService } from './service.js';

export const LINK_QUERY = 'kiln_link';
export const LINK_COOKIE = 'kiln_port_link';
export const LINK_TTL_SEC = { default: 3600, min: 1, max: 86_400 } as const;

export type LinkCheck = 'ok' | 'expired' | 'invalid';

export class PortLinks {
  private readonly key = randomBytes(32);
  /** The apps listener's port once it listens (KILN_APPS_PORT, 0 included): links point there. */
  appsPort: number | undefined;

  constructor(private readonly nowMs: () => number = Date.now) {}

  /** A token for `port` of sandbox `id`, valid for `ttlSec`. */
  issue(id: string, port: number, ttlSec: number): { token: string; expiresAt: Date } {
    const exp = Math.floor(this.nowMs() / 1000) + ttlSec;
    return { token: `${exp}.${this.mac(id, port, exp)}`, expiresAt: new Date(exp * 1000) };
  }

  /** Whether `token` opens `port` of sandbox `id` now; a token for another port or sandbox, or altered, is 'invalid'. */
  check(token: string, id: string, port: number): LinkCheck {
    const m = /^(\d{1,12})\.([A-Za-z0-9_-]{43})$/.exec(token);
    if (!m) return 'invalid';
    const exp = Number(m[1]);
    const got = Buffer.from(m[2]!);
    const want = Buffer.from(this.mac(id, port, exp));
    if (got.length !== want.length || !timingSafeEqual(got, want)) return 'invalid';
    return exp * 1000 > this.nowMs() ? 'ok' : 'expired';
  }

  private mac(id: string, port: number, exp: number): string {
    return createHmac('sha256', this.key).update(`kiln-port-link\0${id}\0${port}\0${exp}`).digest('base64url');
  }
}

// One secret per service, shared by its listeners (TCP and the Unix socket each build an app).
const perService = new WeakMap<KilnService, PortLinks>();

export function portLinks(svc: KilnService): PortLinks {
  let l = perService.get(svc);
  if (!l) {
    l = new PortLinks();
    perService.set(svc, l);
  }
  return l;
}

/** The path a link opens: the port's prefix with a trailing slash (the cookie's Path). */
export function linkPath(id: string, port: number): string {
  return `/v1/sandboxes/${id}/ports/${port}/`;
}

/** The values of every cookie named `name` in a Cookie header. */
export function cookieValues(header: string | undefined, name: string): string[] {
  if (!header) return [];
  return header
    .split(';')
    .map((p) => p.trim())
    .filter((p) => p.startsWith(`${name}=`))
    .map((p) => p.slice(name.length + 1));
}

/** A Cookie header without kiln's link cookie (undefined when nothing else is left). */
export function withoutLinkCookie(header: string | string[] | undefined): string | undefined {
  const all = ([] as string[]).concat(header ?? []).join('; ');
  const kept = all
    .split(';')
    .map((p) => p.trim())
    .filter((p) => p && !p.startsWith(`${LINK_COOKIE}=`));
  return kept.length ? kept.join('; ') : undefined;
}

function linkRefusal(v: Exclude<LinkCheck, 'ok'>, id: string, port: number, where: 'link' | 'cookie'): KilnError {
  const again = `make a new one with POST /v1/sandboxes/${id}/port-links (kiln sandbox port-link ${id} ${port}, or the dashboard's Open button)`;
  const what = where === 'link' ? 'this port link' : "this browser's port link";
  return new KilnError(
    'UNAUTHORIZED',
    v === 'expired'
      ? `${what} has expired; ${again}`
      : `${what} is not valid for port ${port} of sandbox ${id} (altered, for another port or sandbox, or from before a restart of the service); ${again}`,
    {
      details: { reason: v === 'expired' ? 'LINK_EXPIRED' : 'LINK_INVALID' },
    },
  );
}

/**
 * The port proxy's part of authentication (app.ts runs it before the bearer check on routes marked
 * `portLink`). 'granted': a link token or cookie opens this very port; 'answered': the first visit
 * was redirected; no result: no link here, the bearer decides. `cookieFailure` says why a link
 * cookie that was sent did not open the port, for the 401 when the bearer check fails too.
 */
export async function checkPortLink(links: PortLinks, req: FastifyRequest, reply: FastifyReply): Promise<{ result?: 'granted' | 'answered'; cookieFailure?: KilnError }> {
  if (!req.routeOptions.config?.portLink) return {};
  const params = req.params as { id?: string; port?: string };
  const id = params.id ?? '';
  const port = Number(params.port);
  const raw = req.raw.url ?? '/';
  const q = raw.indexOf('?');
  const query = q < 0 ? [] : raw.slice(q + 1).split('&');
  // The token's characters need no escaping: it is taken as sent (a mangled one is merely invalid).
  const fromQuery = query.filter((p) => p.startsWith(`${LINK_QUERY}=`)).map((p) => p.slice(LINK_QUERY.length + 1));
  if (fromQuery.length) {
    const v = links.check(fromQuery[0]!, id, port);
    if (v !== 'ok') throw linkRefusal(v, id, port, 'link');
    if (req.ws) return { result: 'granted' };
    const exp = Number(fromQuery[0]!.split('.')[0]);
    const maxAge = Math.max(0, exp - Math.floor(Date.now() / 1000));
    const path = raw.slice(0, q);
    const rest = query.filter((p) => !p.startsWith(`${LINK_QUERY}=`)).join('&');
    const prefix = linkPath(id, port);
    const location = `${path === prefix.slice(0, -1) ? prefix : path}${rest ? `?${rest}` : ''}`;
    const secure = req.protocol === 'https' ? '; Secure' : '';
    await reply
      .code(303)
      .header('set-cookie', `${LINK_COOKIE}=${fromQuery[0]}; Path=${prefix}; Max-Age=${maxAge}; HttpOnly; SameSite=Lax${secure}`)
      .header('location', location)
      .header('cache-control', 'no-store')
      .header('referrer-policy', 'no-referrer')
      .send();
    return { result: 'answered' };
  }
  const cookies = cookieValues(req.headers.cookie, LINK_COOKIE);
  if (!cookies.length) return {};
  const checks = cookies.map((c) => links.check(c, id, port));
  if (checks.includes('ok')) return { result: 'granted' };
  return { cookieFailure: linkRefusal(checks.includes('expired') ? 'expired' : 'invalid', id, port, 'cookie') };
}
