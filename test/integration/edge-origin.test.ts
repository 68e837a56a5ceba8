/**
 * Cross-site and DNS-rebinding requests are refused: a Host that does not name this service, and a
 * browser Origin other than the service's own (or one the operator listed), on HTTP and WebSocket.
 * Clients that send no Origin (curl, the SDK) and the dashboard on its own origin keep working.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { type KilnConfig, loadConfig } from '../../src/core/config.js';
import { buildApp } from '../../src/server/app.js';
import { composeService } from '../../src/server/compose.js';
import type { KilnService } from '../../src/server/service.js';
import { rawRequest } from './raw-http.js';

const WS_HEADERS = { upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' };

describe('Host and Origin checks', () => {
  let svc: KilnService;
  let dir: string;
  const apps: FastifyInstance[] = [];
  /** Every read of the service object by a handler. */
  const touched: string[] = [];

  const build = async (config: Partial<KilnConfig> = {}, trustedSocket = false): Promise<FastifyInstance> => {
    const watched = new Proxy(
      { ...svc, config: { ...svc.config, ...config } },
      {
        get(target, prop, receiver) {
          touched.push(String(prop));
          return Reflect.get(target, prop, receiver) as unknown;
        },
      },
    );
    const app = await buildApp(watched, { trustedSocket });
    apps.push(app);
    await app.ready();
    touched.length = 0;
    return app;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-edge-origin-'));
    svc = await composeService(loadConfig({ KILN_RUN_DIR: join(dir, 'run'), KILN_DATA_DIR: join(dir, 'data'), KILN_POOL: '' }), { skipScan: true });
  });
  after(async () => {
    await Promise.allSettled(apps.map((a) => a.close()));
    await svc?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const get = async (app: FastifyInstance, headers: Record<string, string>, url = '/v1/packs') => {
    const r = await app.inject({ method: 'GET', url, headers });
    return {
      status: r.statusCode,
      code: r.statusCode >= 400 ? (r.json() as { code: string; message: string }).code : undefined,
      message: r.statusCode >= 400 ? (r.json() as { message: string }).message : '',
      headers: r.headers,
    };
  };

  it('accepts loopback names and the listen address as Host, refuses any other name', async () => {
    const app = await build({ host: '127.0.0.1' });
    for (const host of ['localhost:8400', 'LOCALHOST:8400', 'localhost', '127.0.0.1:8400', '127.9.8.7', '[::1]:8400', '2130706433:8400']) {
      assert.equal((await get(app, { host })).status, 200, host);
    }
    for (const host of ['evil.example:8400', 'localhost.evil.example', '127.0.0.1.nip.io:8400', 'a@127.0.0.1', '0.0.0.0:8400', '[::ffff:7f00:1]:8400']) {
      for (const url of ['/v1/packs', '/healthz', '/', '/openapi.json', '/no/such/route']) {
        touched.length = 0;
        const r = await get(app, { host }, url);
        assert.equal(r.status, 403, `Host "${host}" ${url}: ${r.status}`);
        assert.equal(r.code, 'HOST_NOT_ALLOWED');
        assert.match(r.message, /KILN_ALLOWED_HOSTS/);
        assert.deepEqual(touched, [], `Host "${host}" ${url} reached a handler`);
      }
    }
  });

  it('a DNS-rebinding page (its own name as Host and Origin) is refused', async () => {
    const app = await build();
    const r = await get(app, { host: 'rebind.evil.example:8400', origin: 'http://rebind.evil.example:8400' });
    assert.equal(r.code, 'HOST_NOT_ALLOWED');
  });

  it('accepts the configured listen address and the names in KILN_ALLOWED_HOSTS', async () => {
    const cfg = loadConfig({ KILN_HOST: '10.1.2.3', KILN_TOKEN: 't', KILN_ALLOWED_HOSTS: 'Kiln.Example.com, 192.168.7.7,[fd00::1]' });
    assert.deepEqual(cfg.allowedHosts, ['kiln.example.com', '192.168.7.7', '[fd00::1]']);
    const app = await build({ host: cfg.host, allowedHosts: cfg.allowedHosts });
    for (const host of ['10.1.2.3:8400', 'kiln.example.com', 'KILN.example.com:443', '192.168.7.7:8400', '[fd00::1]:8400', 'localhost:8400']) {
      assert.equal((await get(app, { host })).status, 200, host);
    }
    assert.equal((await get(app, { host: 'other.example.com' })).code, 'HOST_NOT_ALLOWED');
    const wildcard = await build({ host: '0.0.0.0' });
    assert.equal((await get(wildcard, { host: '0.0.0.0:8400' })).code, 'HOST_NOT_ALLOWED', 'a wildcard listen address is not a name');
    const any = await build({ allowedHosts: ['*'] });
    assert.equal((await get(any, { host: 'anything.example' })).status, 200);
    assert.throws(() => loadConfig({ KILN_ALLOWED_HOSTS: 'kiln.example.com:8400' }), /KILN_ALLOWED_HOSTS/);
    assert.throws(() => loadConfig({ KILN_ALLOWED_ORIGINS: 'https://app.example.com/path' }), /KILN_ALLOWED_ORIGINS/);
  });

  it('refuses cross-origin browser requests, allows its own origin and requests with no Origin', async () => {
    const app = await build();
    const host = 'localhost:8400';
    assert.equal((await get(app, { host })).status, 200, 'no Origin (curl, SDK)');
    assert.equal((await get(app, { host, origin: 'http://localhost:8400' })).status, 200, 'own origin');
    assert.equal((await get(app, { host: '127.0.0.1', origin: 'http://127.0.0.1' })).status, 200, 'own origin, default port');
    for (const origin of ['http://evil.example', 'http://localhost:9999', 'https://localhost:8400.evil.example', 'null', 'http://127.0.0.1:8400', 'file://']) {
      const r = await get(app, { host, origin });
      assert.equal(r.status, 403, origin);
      assert.equal(r.code, 'ORIGIN_NOT_ALLOWED');
      assert.match(r.message, /KILN_ALLOWED_ORIGINS/);
    }
    // A cross-site form post (a "simple" request: no preflight) never reaches /v1/run.
    touched.length = 0;
    const form = await app.inject({
      method: 'POST',
      url: '/v1/run',
      headers: { host, origin: 'http://evil.example', 'content-type': 'application/json' },
      payload: { pack: 'shell', code: 'touch /tmp/pwned' },
    });
    assert.equal(form.statusCode, 403);
    assert.deepEqual(touched, []);
  });

  it('an origin in KILN_ALLOWED_ORIGINS gets CORS answers, preflight included', async () => {
    const cfg = loadConfig({ KILN_ALLOWED_ORIGINS: 'https://app.example.com, http://localhost:5173' });
    assert.deepEqual(cfg.allowedOrigins, ['https://app.example.com', 'http://localhost:5173']);
    const app = await build({ allowedOrigins: cfg.allowedOrigins });
    const r = await get(app, { host: 'localhost:8400', origin: 'https://app.example.com' });
    assert.equal(r.status, 200);
    assert.equal(r.headers['access-control-allow-origin'], 'https://app.example.com');
    const pre = await app.inject({
      method: 'OPTIONS',
      url: '/v1/run',
      headers: { host: 'localhost:8400', origin: 'https://app.example.com', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,authorization' },
    });
    assert.equal(pre.statusCode, 204);
    assert.match(String(pre.headers['access-control-allow-headers']), /authorization/);
    const other = await app.inject({ method: 'OPTIONS', url: '/v1/run', headers: { host: 'localhost:8400', origin: 'https://evil.example', 'access-control-request-method': 'POST' } });
    assert.equal(other.statusCode, 403);
    assert.equal(other.headers['access-control-allow-origin'], undefined);
  });

  it('WebSocket upgrades from another origin or Host are refused over a real listener', async () => {
    const app = await build();
    await app.listen({ host: '127.0.0.1', port: 0 });
    const port = (app.server.address() as AddressInfo).port;
    const target = '/v1/sandboxes/sb-nope/exec/ws';
    const own = await rawRequest(port, { method: 'GET', target, headers: { ...WS_HEADERS, origin: `http://127.0.0.1:${port}` } });
    assert.equal(own.status, 101, 'own origin upgrades');
    const cross = await rawRequest(port, { method: 'GET', target, headers: { ...WS_HEADERS, origin: 'http://evil.example' } });
    assert.equal(cross.status, 403);
    assert.match(cross.body, /ORIGIN_NOT_ALLOWED/);
    const rebound = await rawRequest(port, { method: 'GET', target, headers: { ...WS_HEADERS, host: `evil.example:${port}`, origin: `http://evil.example:${port}` } });
    assert.equal(rebound.status, 403);
    assert.match(rebound.body, /HOST_NOT_ALLOWED/);
  });

  it('the trusted Unix socket listener does not check Host or Origin (browsers cannot reach it)', async () => {
    const app = await build({}, true);
    assert.equal((await get(app, { host: 'evil.example', origin: 'http://evil.example' })).status, 200);
  });
});
