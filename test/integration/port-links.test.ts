/**
 * Browser links to a sandbox's port (docs/ports.md, src/server/port-links.ts) on the namespace
 * backend, over real HTTP against servers inside a real sandbox: the link's first visit sets a
 * path-scoped cookie and redirects; the page, its assets and a WebSocket then work with the cookie
 * alone; the link or cookie of another port or sandbox, an expired or altered one, and every API
 * route stay refused. Links open on the apps listener (an origin of its own: a port the system
 * picks by default, KILN_APPS_PORT); with KILN_APPS_PORT=off there are none.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import WebSocket from 'ws';
import { KilnClient } from '../../sdk/src/index.js';
import { REPO_ROOT } from '../../src/core/config.js';
import { startTestServer, type TestServer } from '../parity/fixture.js';
import { HTTP_PORT, startServers, WS_PORT } from './port-servers.js';

const TOKEN = 'port-link-test-token';

describe('port links for browsers (namespace)', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 120_000 }, () => {
  let t: TestServer;
  let kiln: KilnClient;
  let id: string;
  let other: string;
  before(async () => {
    t = await startTestServer({ KILN_SOCKET: '', KILN_TOKEN: TOKEN });
    kiln = new KilnClient({ baseUrl: t.server.url, token: TOKEN });
    id = (await kiln.sandboxes.create({ pack: 'python' })).id;
    other = (await kiln.sandboxes.create({ pack: 'python' })).id;
    await startServers(kiln, id);
  });
  after(async () => {
    await kiln.sandboxes.delete(id).catch(() => undefined);
    await kiln.sandboxes.delete(other).catch(() => undefined);
    await t.close();
  });

  /** A GET as a browser sends it: no Authorization, optionally a Cookie, redirects not followed. */
  const browserGet = (pathOrUrl: string, cookie?: string) => fetch(new URL(pathOrUrl, t.server.appsUrl), { redirect: 'manual', headers: cookie ? { cookie } : {} });

  /** Opens a link as a browser's first visit: the cookie it sets ("name=value") and where it sends the browser. */
  async function visit(url: string): Promise<{ cookie: string; setCookie: string; location: string }> {
    const res = await browserGet(url);
    assert.equal(res.status, 303, await res.text());
    const setCookie = res.headers.getSetCookie()[0] ?? '';
    return { cookie: setCookie.split(';')[0]!, setCookie, location: res.headers.get('location') ?? '' };
  }

  async function refused(res: Response, re: RegExp): Promise<void> {
    const body = await res.text();
    assert.equal(res.status, 401, body);
    assert.equal(res.headers.get('x-kiln-error'), 'UNAUTHORIZED');
    assert.match(body, re);
  }

  it('making a link needs the token; the link sets a path-scoped HttpOnly cookie and redirects without the token', async () => {
    const anon = await fetch(`${t.server.url}/v1/sandboxes/${id}/port-links`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ port: HTTP_PORT }) });
    assert.equal(anon.status, 401);
    const t0 = Date.now();
    const link = await kiln.portLink(id, HTTP_PORT);
    assert.ok(link.url.startsWith(`${t.server.appsUrl}/v1/sandboxes/${id}/ports/${HTTP_PORT}/?kiln_link=`), link.url);
    assert.ok(link.url.endsWith(link.path));
    const expires = Date.parse(link.expiresAt);
    assert.ok(expires > t0 + 3590_000 && expires <= t0 + 3601_000, link.expiresAt);

    const { cookie, setCookie, location } = await visit(link.url);
    assert.equal(location, `/v1/sandboxes/${id}/ports/${HTTP_PORT}/`);
    const attrs = setCookie.split(';').map((a) => a.trim());
    assert.ok(attrs.includes(`Path=/v1/sandboxes/${id}/ports/${HTTP_PORT}/`), setCookie);
    assert.ok(attrs.includes('HttpOnly') && attrs.includes('SameSite=Lax'), setCookie);
    const maxAge = Number(attrs.find((a) => a.startsWith('Max-Age='))?.slice(8));
    assert.ok(maxAge > 3590 && maxAge <= 3600, setCookie);
    assert.match(cookie, /^kiln_port_link=\d+\.[A-Za-z0-9_-]{43}$/);

    // The page, then a relative link and an asset under it, with the cookie alone.
    for (const path of [location, `${location}info/page?x=1`, `${location}assets/app.js`]) {
      const res = await browserGet(path, `theme=dark; ${cookie}`);
      assert.equal(res.status, 200, path);
      assert.equal(res.headers.get('x-app'), 'yes');
      const body = (await res.json()) as { path: string; headers: Record<string, string> };
      assert.equal(body.path, path.slice(`/v1/sandboxes/${id}/ports/${HTTP_PORT}`.length));
      assert.equal(body.headers.cookie, 'theme=dark', "kiln's cookie does not reach the sandbox, the app's own do");
      assert.equal(body.headers.authorization, undefined);
    }

    // A link to a page deeper in the app keeps its path and its own query.
    const deep = await visit(`${link.path.replace('/?', '/docs/a?lang=en&')}`);
    assert.equal(deep.location, `/v1/sandboxes/${id}/ports/${HTTP_PORT}/docs/a?lang=en`);
  });

  it('a WebSocket of the page works with the cookie alone', async () => {
    const { cookie, location } = await visit((await kiln.portLink(id, WS_PORT)).url);
    const url = new URL(`${location}chat?room=2`, t.server.appsUrl!.replace(/^http/, 'ws'));
    const ws = new WebSocket(url, { headers: { cookie, origin: t.server.appsUrl } });
    let path: string | undefined;
    ws.once('upgrade', (res: { headers: Record<string, string> }) => {
      path = res.headers['x-path'];
    });
    await once(ws, 'open');
    assert.equal(path, '/chat?room=2');
    ws.send('through the link');
    const [text] = (await once(ws, 'message')) as [Buffer];
    assert.equal(text.toString(), 'through the link');
    ws.close();
    await once(ws, 'close');

    // A WebSocket opened straight with the link's token (no cookie): the token stays with kiln.
    const direct = (await kiln.portLink(id, WS_PORT)).url.replace(/^http/, 'ws').replace('/?kiln_link=', '/chat?room=3&kiln_link=');
    const ws2 = new WebSocket(direct, { headers: { origin: t.server.appsUrl } });
    let path2: string | undefined;
    ws2.once('upgrade', (res: { headers: Record<string, string> }) => {
      path2 = res.headers['x-path'];
    });
    await once(ws2, 'open');
    assert.equal(path2, '/chat?room=3');
    ws2.close();
    await once(ws2, 'close');

    // The HTTP port's cookie does not open the WebSocket port.
    const http = await visit((await kiln.portLink(id, HTTP_PORT)).url);
    const wrong = new WebSocket(url, { headers: { cookie: http.cookie, origin: t.server.appsUrl } });
    wrong.on('error', () => undefined);
    const [, res] = (await once(wrong, 'unexpected-response')) as [unknown, { statusCode: number }];
    assert.equal(res.statusCode, 401);
    wrong.terminate();
  });

  it('refuses the link and cookie of another port or sandbox, an altered one and an expired one', async () => {
    const link = await kiln.portLink(id, HTTP_PORT);
    const token = new URL(link.url).searchParams.get('kiln_link')!;
    const { cookie } = await visit(link.url);
    const notValid = /not valid for port \d+ of sandbox .*POST \/v1\/sandboxes\/.*\/port-links/;
    // Another port of the same sandbox (a server listens on WS_PORT: only kiln's check stands between).
    await refused(await browserGet(`/v1/sandboxes/${id}/ports/${WS_PORT}/?kiln_link=${token}`), notValid);
    await refused(await browserGet(`/v1/sandboxes/${id}/ports/${WS_PORT}/`, cookie), notValid);
    // Another sandbox, with the path and the cookie of this one copied over.
    await refused(await browserGet(`/v1/sandboxes/${other}/ports/${HTTP_PORT}/?kiln_link=${token}`), notValid);
    await refused(await browserGet(`/v1/sandboxes/${other}/ports/${HTTP_PORT}/`, cookie), notValid);
    // Altered: the signature, or the expiry pushed later.
    const [exp, mac] = token.split('.') as [string, string];
    const flipped = `${exp}.${mac[0] === 'A' ? 'B' : 'A'}${mac.slice(1)}`;
    await refused(await browserGet(`/v1/sandboxes/${id}/ports/${HTTP_PORT}/?kiln_link=${flipped}`), notValid);
    await refused(await browserGet(`/v1/sandboxes/${id}/ports/${HTTP_PORT}/`, `kiln_port_link=${Number(exp) + 86_400}.${mac}`), notValid);
    await refused(await browserGet(`/v1/sandboxes/${id}/ports/${HTTP_PORT}/?kiln_link=garbage`), notValid);
    // Expired: a 2-second link works at once, then neither it nor its cookie does.
    const short = await kiln.portLink(id, HTTP_PORT, { ttlSec: 2 });
    const s = await visit(short.url);
    assert.equal((await browserGet(s.location, s.cookie)).status, 200);
    await new Promise((r) => setTimeout(r, 2100));
    await refused(await browserGet(short.url), /this port link has expired; make a new one/);
    await refused(await browserGet(s.location, s.cookie), /port link has expired/);
    // With the bearer, a stale cookie is no obstacle.
    const withBearer = await fetch(new URL(s.location, t.server.url), { headers: { cookie: s.cookie, authorization: `Bearer ${TOKEN}` } });
    assert.equal(withBearer.status, 200);
  });

  it('the cookie and the link token open no API route', async () => {
    const link = await kiln.portLink(id, HTTP_PORT);
    const token = new URL(link.url).searchParams.get('kiln_link')!;
    const { cookie } = await visit(link.url);
    const tries: Array<[string, string]> = [
      ['GET', `/v1/sandboxes/${id}`],
      ['GET', '/v1/sandboxes'],
      ['GET', `/v1/sandboxes/${id}/network/events`],
      ['GET', `/v1/sandboxes/${id}/tunnel/${HTTP_PORT}`],
      ['POST', `/v1/sandboxes/${id}/port-links`],
      ['POST', `/v1/sandboxes/${id}/exec`],
      ['DELETE', `/v1/sandboxes/${id}`],
    ];
    for (const [method, path] of tries) {
      for (const target of [path, `${path}?kiln_link=${token}`]) {
        const res = await fetch(new URL(target, t.server.url), {
          method,
          redirect: 'manual',
          headers: { cookie, 'content-type': 'application/json' },
          body: method === 'POST' ? JSON.stringify({ port: HTTP_PORT, cmd: ['true'] }) : undefined,
        });
        assert.equal(res.status, 401, `${method} ${target}: ${await res.text()}`);
      }
    }
    assert.equal((await kiln.sandboxes.get(id)).id, id, 'the sandbox is still there');
  });

  it('kiln sandbox port-link prints a link that opens the port', async () => {
    const { stdout, stderr } = await promisify(execFile)(join(REPO_ROOT, 'bin/kiln'), ['sandbox', 'port-link', id, String(HTTP_PORT), '--ttl-sec', '600'], {
      env: { ...process.env, KILN_URL: t.server.url, KILN_TOKEN: TOKEN },
    });
    const url = stdout.trim();
    assert.match(url, new RegExp(`^${t.server.appsUrl}/v1/sandboxes/${id}/ports/${HTTP_PORT}/\\?kiln_link=`), url);
    assert.match(stderr, /expires at/);
    const { cookie, location } = await visit(url);
    assert.equal((await browserGet(location, cookie)).status, 200);
  });
});

describe('port links on an apps listener of their own (KILN_APPS_PORT)', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 120_000 }, () => {
  let t: TestServer;
  let kiln: KilnClient;
  let id: string;
  let apps: string;
  before(async () => {
    t = await startTestServer({ KILN_SOCKET: '', KILN_TOKEN: TOKEN, KILN_APPS_PORT: '0' });
    apps = t.server.appsUrl!;
    kiln = new KilnClient({ baseUrl: t.server.url, token: TOKEN });
    id = (await kiln.sandboxes.create({ pack: 'python' })).id;
    await startServers(kiln, id);
  });
  after(async () => {
    await kiln.sandboxes.delete(id).catch(() => undefined);
    await t.close();
  });

  const get = (base: string, path: string, headers: Record<string, string> = {}) => fetch(new URL(path, base), { redirect: 'manual', headers });

  it('links point at the apps origin and work there only; it serves nothing but the port proxy', async () => {
    assert.ok(apps && new URL(apps).port !== new URL(t.server.url).port, apps);
    const link = await kiln.portLink(id, HTTP_PORT);
    assert.ok(link.url.startsWith(`${apps}/v1/sandboxes/${id}/ports/${HTTP_PORT}/?kiln_link=`), link.url);
    const first = await get(apps, link.path);
    assert.equal(first.status, 303);
    const cookie = first.headers.getSetCookie()[0]!.split(';')[0]!;
    const page = await get(apps, first.headers.get('location')!, { cookie });
    assert.equal(page.status, 200);
    assert.equal(((await page.json()) as { path: string }).path, '/');
    // The dashboard's origin takes neither the link nor its cookie (cookies ignore ports: the browser would send it).
    assert.equal((await get(t.server.url, link.path)).status, 401);
    assert.equal((await get(t.server.url, `/v1/sandboxes/${id}/ports/${HTTP_PORT}/`, { cookie })).status, 401);
    // The apps origin: no API, no dashboard, no health; the proxy with the bearer works there too.
    for (const path of ['/', '/healthz', '/openapi.json', '/v1/sandboxes', `/v1/sandboxes/${id}`, `/v1/sandboxes/${id}/port-links`]) {
      const res = await get(apps, path, { authorization: `Bearer ${TOKEN}` });
      assert.equal(res.status, 404, `${path} on the apps listener: ${res.status}`);
    }
    assert.equal((await get(apps, `/v1/sandboxes/${id}/ports/${HTTP_PORT}/info`, { authorization: `Bearer ${TOKEN}` })).status, 200);
    // A WebSocket of the app, by the cookie of its port, on the apps origin.
    const ws = await visitWs(apps, (await kiln.portLink(id, WS_PORT)).path);
    ws.send('apps origin');
    const [text] = (await once(ws, 'message')) as [Buffer];
    assert.equal(text.toString(), 'apps origin');
    ws.close();
    await once(ws, 'close');
  });

  async function visitWs(base: string, path: string): Promise<WebSocket> {
    const first = await get(base, path);
    const cookie = first.headers.getSetCookie()[0]!.split(';')[0]!;
    const ws = new WebSocket(new URL(`${first.headers.get('location')}chat`, base.replace(/^http/, 'ws')), { headers: { cookie, origin: base } });
    await once(ws, 'open');
    return ws;
  }
});

describe('KILN_APPS_PORT=off: no apps listener, no browser links', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 60_000 }, () => {
  it('making a link is refused, naming the reason', async () => {
    const t = await startTestServer({ KILN_SOCKET: '', KILN_TOKEN: TOKEN, KILN_APPS_PORT: 'off' });
    const kiln = new KilnClient({ baseUrl: t.server.url, token: TOKEN });
    try {
      assert.equal(t.server.appsUrl, undefined);
      const sb = await kiln.sandboxes.create({ pack: 'shell' });
      await assert.rejects(
        kiln.portLink(sb.id, HTTP_PORT),
        (e: Error & { code?: string; status?: number }) => e.code === 'UNSUPPORTED_OPTION' && e.status === 400 && /apps listener.*origin/.test(e.message),
      );
      await kiln.sandboxes.delete(sb.id);
    } finally {
      await t.close();
    }
  });
});
