/**
 * The bearer token guards every route however its path is spelled: percent-encoding, double and
 * trailing slashes, dot segments, absolute-form targets, case. Requests go over a raw socket to a
 * real listener, so the target arrives as written. A request "reaches a handler" when it touches
 * the service object: the test watches every access to it.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { loadConfig } from '../../src/core/config.js';
import { buildApp } from '../../src/server/app.js';
import { composeService } from '../../src/server/compose.js';
import type { KilnService } from '../../src/server/service.js';
import { type RawResponse, rawRequest } from './raw-http.js';

const TOKEN = 'edge-test-token';
const WS_HEADERS = { upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' };

/** Ways to write the same path that a router might still match. */
function spellings(path: string, port: number): string[] {
  const segs = path.split('/').slice(1);
  const pct = (c: string, upper: boolean): string => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`[upper ? 'toUpperCase' : 'toLowerCase']();
  const join_ = (parts: string[]): string => `/${parts.join('/')}`;
  const last = path.lastIndexOf('/');
  return [
    ...new Set([
      path,
      ...segs.map((_, i) => join_(segs.map((s, j) => (j === i ? pct(s[0]!, false) + s.slice(1) : s)))),
      join_(segs.map((s) => [...s].map((c) => pct(c, true)).join(''))),
      `/${path}`,
      `${path.slice(0, last)}/${path.slice(last)}`,
      `${path}/`,
      `${path.slice(0, last)}/.${path.slice(last)}`,
      `/x/..${path}`,
      `/healthz/..${path}`,
      `/assets/..${path}`,
      `${path};x=1`,
      `/${segs.join('%2F')}`,
      path.toUpperCase(),
      path.replace('/v1', '/V1'),
      `http://127.0.0.1:${port}${path}`,
      `HTTP://LOCALHOST:${port}${path}`,
      `http://example.com${path}`,
    ]),
  ];
}

describe('the bearer token guards every route, however its path is spelled', () => {
  let svc: KilnService;
  let app: FastifyInstance;
  let dir: string;
  let port: number;
  /** Properties of the service read since the last reset: a handler ran. */
  const touched: string[] = [];
  let watching = false;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-edge-auth-'));
    svc = await composeService(loadConfig({ KILN_RUN_DIR: join(dir, 'run'), KILN_DATA_DIR: join(dir, 'data'), KILN_POOL: '' }), { skipScan: true });
    const secured: KilnService = { ...svc, config: { ...svc.config, token: TOKEN } };
    const watched = new Proxy(secured, {
      get(target, prop, receiver) {
        if (watching) touched.push(String(prop));
        return Reflect.get(target, prop, receiver) as unknown;
      },
    });
    app = await buildApp(watched);
    await app.listen({ host: '127.0.0.1', port: 0 });
    port = (app.server.address() as AddressInfo).port;
    watching = true;
  });
  after(async () => {
    await app?.close();
    await svc?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const send = async (method: string, target: string, headers: Record<string, string> = {}): Promise<RawResponse & { touched: string[] }> => {
    touched.length = 0;
    const body = method === 'POST' || method === 'PUT' ? '{}' : undefined;
    const r = await rawRequest(port, { method, target, headers: body ? { 'content-type': 'application/json', ...headers } : headers, body });
    return { ...r, touched: [...touched] };
  };
  const refused = (r: RawResponse & { touched: string[] }, what: string): void => {
    assert.deepEqual(r.touched, [], `${what} reached a handler (it read svc.${r.touched[0]})`);
    assert.ok(r.status === 401 || r.status === 404, `${what} answered ${r.status}: ${r.body.slice(0, 200)}`);
    const code = (JSON.parse(r.body) as { code: string }).code;
    assert.ok(code === 'UNAUTHORIZED' || code === 'NOT_FOUND', `${what} answered ${code}`);
  };

  async function operations(): Promise<Array<{ method: string; path: string }>> {
    const doc = JSON.parse((await rawRequest(port, { method: 'GET', target: '/openapi.json' })).body) as { paths: Record<string, Record<string, unknown>> };
    const ops = Object.entries(doc.paths).flatMap(([p, methods]) => Object.keys(methods).map((m) => ({ method: m.toUpperCase(), path: p.replace(/\{[^}]+\}/g, 'sb-nope') })));
    assert.ok(ops.length >= 15, `openapi.json lists only ${ops.length} operations`);
    return ops.filter((o) => o.path !== '/healthz');
  }

  it('every operation in /openapi.json runs with the token and answers 401 without it, in every spelling', async () => {
    for (const { method, path } of await operations()) {
      // With the token the route matches (and a GET reaches its handler): the refusals below are not vacuous.
      const ok = await send(method, `${path}?path=/x`, { authorization: `Bearer ${TOKEN}` });
      assert.ok(ok.status !== 401 && !ok.body.includes('"NOT_FOUND"'), `${method} ${path} with the token: ${ok.status} ${ok.body.slice(0, 200)}`);
      if (method === 'GET' && !path.endsWith('/exec/ws')) assert.ok(ok.touched.length > 0, `${method} ${path} with the token never reached its handler`);
      for (const target of spellings(path, port)) {
        refused(await send(method, `${target}?path=/x`), `${method} ${target}`);
        refused(await send(method, `${target}?path=/x`, { authorization: 'Bearer wrong' }), `${method} ${target} (wrong token)`);
        if (method === 'GET') {
          // Fastify adds a HEAD route beside every GET: it must be as closed (a HEAD answer has no body).
          const head = await send('HEAD', `${target}?path=/x`);
          assert.deepEqual(head.touched, [], `HEAD ${target} reached a handler`);
          assert.ok(head.status === 401 || head.status === 404, `HEAD ${target} answered ${head.status}`);
        }
      }
    }
  });

  it('?access_token= is accepted on the WebSocket upgrade only', async () => {
    refused(await send('GET', `/v1/sandboxes?access_token=${TOKEN}`), 'GET /v1/sandboxes?access_token=');
    refused(await send('POST', `/v1/run?access_token=${TOKEN}`), 'POST /v1/run?access_token=');
  });

  it('the WebSocket exec route upgrades only with the token, in every spelling', async () => {
    const path = '/v1/sandboxes/sb-nope/exec/ws';
    for (const target of spellings(path, port)) {
      const r = await send('GET', target, WS_HEADERS);
      assert.notEqual(r.status, 101, `${target} upgraded without a token`);
      refused(r, `upgrade ${target}`);
      const wrong = await send('GET', `${target}?access_token=wrong`, WS_HEADERS);
      assert.notEqual(wrong.status, 101, `${target} upgraded with a wrong token`);
    }
    assert.equal((await send('GET', `${path}?access_token=${TOKEN}`, WS_HEADERS)).status, 101);
    assert.equal((await send('GET', path, { ...WS_HEADERS, authorization: `Bearer ${TOKEN}` })).status, 101);
  });

  it('an API key reaches no admin route (the keys) in any spelling, and a revoked key nothing at all', async () => {
    watching = false;
    const { key, secret } = await svc.keys!.create('edge', {});
    watching = true;
    const ops = (await operations()).filter((o) => o.path.startsWith('/v1/keys'));
    assert.ok(ops.length >= 4, `openapi.json lists only ${ops.length} key operations`);
    for (const { method, path } of ops) {
      for (const target of spellings(path, port)) {
        const r = await send(method, target, { authorization: `Bearer ${secret}` });
        assert.deepEqual(r.touched, [], `${method} ${target} with an API key reached a handler`);
        assert.ok(r.status === 403 || r.status === 404, `${method} ${target} with an API key answered ${r.status}`);
      }
    }
    // The key itself works on the routes it may use: the refusals above are not vacuous.
    assert.equal((await send('GET', '/v1/packs', { authorization: `Bearer ${secret}` })).status, 200);
    watching = false;
    await svc.keys!.revoke(key.id);
    watching = true;
    for (const { method, path } of await operations()) refused(await send(method, `${path}?path=/x`, { authorization: `Bearer ${secret}` }), `${method} ${path} (revoked key)`);
  });

  it('static routes and open routes stay open and lead nowhere else', async () => {
    assert.equal((await send('GET', '/healthz')).status, 200);
    assert.equal((await send('GET', '/openapi.json')).status, 200);
    const index = await send('GET', '/');
    assert.equal(index.status, 200);
    assert.deepEqual(index.touched, []);
    for (const target of ['/', '/healthz', '/assets/x.js', '/openapi.json', '/v1/packs']) {
      const r = await send('GET', target, { ...WS_HEADERS, authorization: `Bearer ${TOKEN}` });
      assert.notEqual(r.status, 101, `${target} upgraded to a WebSocket`);
    }
    for (const target of ['/assets/../v1/packs', '/assets/%2e%2e/%2e%2e/v1/packs', '/assets/..%2f..%2f..%2fetc%2fpasswd', '/assets/%2e%2e%2f%2e%2e%2fpackage.json', '/assets//etc/passwd']) {
      const r = await send('GET', target);
      assert.deepEqual(r.touched, [], `${target} reached the service`);
      assert.equal(r.status, 404, `${target} answered ${r.status}`);
    }
  });
});
