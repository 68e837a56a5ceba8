/**
 * What the port proxy (ports.ts) sends on to a server in a sandbox and what it hands back: the
 * hop-by-hop headers of each leg are dropped (RFC 9110 §7.6.1), kiln's own credentials never
 * reach the sandbox, and the server learns where the request came from via X-Forwarded-*.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { LINK_QUERY, withoutLinkCookie } from '../port-links.js';

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

/** Where a proxied request came from (the parts of the incoming request the headers name). */
export interface ForwardedFrom {
  /** The client's address (X-Forwarded-For gets it appended). */
  remoteAddress: string | undefined;
  protocol: 'http' | 'https';
  /** The Host the client sent. */
  host: string | undefined;
  /** The path the proxied app is mounted at: /v1/sandboxes/ID/ports/PORT. */
  prefix: string;
  port: number;
}

/** The names a Connection header lists: hop-by-hop for this leg too. */
function connectionTokens(value: string | string[] | undefined): Set<string> {
  const all = ([] as string[]).concat(value ?? []).join(',');
  return new Set(
    all
      .split(',')
      .map((t) => t.trim().toLowerCase())
      .filter(Boolean),
  );
}

/**
 * The headers for the server in the sandbox. `upgrade`: the request is an Upgrade (WebSocket),
 * whose Connection and Upgrade headers are the point of it and are kept.
 */
export function upstreamHeaders(h: IncomingHttpHeaders, from: ForwardedFrom, upgrade: boolean): OutgoingHttpHeaders {
  const listed = connectionTokens(h.connection);
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(h)) {
    if (value === undefined || name === 'authorization' || name === 'host') continue;
    if (name === 'cookie') {
      const rest = withoutLinkCookie(value); // kiln's link cookie, like its token, stays with kiln
      if (rest) out.cookie = rest;
      continue;
    }
    if (name.startsWith('x-forwarded-') && name !== 'x-forwarded-for') continue;
    if ((HOP_BY_HOP.has(name) || listed.has(name)) && !(upgrade && (name === 'connection' || name === 'upgrade'))) continue;
    out[name] = value;
  }
  // Dev servers (Vite, webpack) refuse Host names they do not know (DNS rebinding): the server is
  // addressed as what it is, a loopback listener; the client's Host goes in X-Forwarded-Host.
  out.host = `127.0.0.1:${from.port}`;
  const xff = h['x-forwarded-for'];
  const prior = Array.isArray(xff) ? xff.join(', ') : xff;
  if (from.remoteAddress) out['x-forwarded-for'] = prior ? `${prior}, ${from.remoteAddress}` : from.remoteAddress;
  out['x-forwarded-proto'] = from.protocol;
  if (from.host) out['x-forwarded-host'] = from.host;
  out['x-forwarded-prefix'] = from.prefix;
  return out;
}

/** The server's response headers for the client, without its hop-by-hop ones. */
export function downstreamHeaders(h: IncomingHttpHeaders): OutgoingHttpHeaders {
  const listed = connectionTokens(h.connection);
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(h)) {
    if (value === undefined || HOP_BY_HOP.has(name) || listed.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/** An Upgrade request's head as bytes for the raw pass-through (method, path, headers, blank line). */
export function requestHead(method: string, path: string, headers: OutgoingHttpHeaders): Buffer {
  const lines = [`${method} ${path} HTTP/1.1`];
  for (const [name, value] of Object.entries(headers)) {
    for (const v of ([] as Array<string | number>).concat(value ?? [])) lines.push(`${name}: ${String(v)}`);
  }
  return Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
}

/**
 * Splits the raw request URL of /v1/sandboxes/:id/ports/:port[/rest][?query] into the path the
 * server in the sandbox sees (/rest?query, as the client spelled it: nothing decoded) and the
 * prefix it is mounted at. `dropAccessToken`: a WebSocket's ?access_token= was kiln's, not the app's;
 * so is a link's ?kiln_link= (port-links.ts), always.
 */
export function splitProxyUrl(rawUrl: string, dropAccessToken: boolean): { prefix: string; path: string } {
  const q = rawUrl.indexOf('?');
  const pathPart = q < 0 ? rawUrl : rawUrl.slice(0, q);
  let query = q < 0 ? '' : rawUrl.slice(q + 1);
  const segments = pathPart.split('/'); // '', 'v1', 'sandboxes', id, 'ports', port, ...rest
  const prefix = segments.slice(0, 6).join('/');
  const rest = segments.slice(6).join('/');
  if (query) {
    query = query
      .split('&')
      .filter((p) => {
        const name = p.split('=')[0];
        return !(name === LINK_QUERY || (dropAccessToken && name === 'access_token'));
      })
      .join('&');
  }
  return { prefix, path: `/${rest}${query ? `?${query}` : ''}` };
}
