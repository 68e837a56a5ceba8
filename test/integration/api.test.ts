/** HTTP edge behaviour through app.inject(): validation, error shapes, auth, OpenAPI. No sandboxes. */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { loadConfig } from '../../src/core/config.js';
import { buildApp } from '../../src/server/app.js';
import { composeService } from '../../src/server/compose.js';
import type { KilnService } from '../../src/server/service.js';

describe('HTTP API edge', () => {
  let svc: KilnService;
  let app: FastifyInstance;
  let secured: FastifyInstance;
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-api-'));
    svc = await composeService(loadConfig({ KILN_RUN_DIR: join(dir, 'run'), KILN_DATA_DIR: join(dir, 'data'), KILN_POOL: '' }), { skipScan: true });
    app = await buildApp(svc);
    secured = await buildApp({ ...svc, config: { ...svc.config, token: 's3cret' } });
  });
  after(async () => {
    await app.close();
    await secured.close();
    await svc.close();
    await rm(dir, { recursive: true, force: true });
  });

  const bad = [
    ['missing pack', {}],
    ['wrong type', { pack: 5 }],
    ['unknown field', { pack: 'python', colour: 'red' }],
    ['negative memory', { pack: 'python', memoryMib: -1 }],
    ['unknown backend', { pack: 'python', backend: 'docker' }],
  ] as const;
  for (const [name, body] of bad) {
    it(`POST /v1/sandboxes with ${name} → 400 INVALID_REQUEST`, async () => {
      const r = await app.inject({ method: 'POST', url: '/v1/sandboxes', payload: body });
      assert.equal(r.statusCode, 400);
      assert.equal(r.json().code, 'INVALID_REQUEST');
      assert.equal(typeof r.json().message, 'string');
    });
  }

  it('unknown pack → 400 UNKNOWN_PACK naming the packs there are', async () => {
    const r = await app.inject({ method: 'POST', url: '/v1/sandboxes', payload: { pack: 'cobol' } });
    assert.equal(r.statusCode, 400);
    assert.equal(r.json().code, 'UNKNOWN_PACK');
    assert.match(r.json().message, /python/);
  });

  it('memory beyond the host limit → 400 with the limit', async () => {
    const r = await app.inject({ method: 'POST', url: '/v1/sandboxes', payload: { pack: 'python', memoryMib: 10_000_000 } });
    assert.equal(r.statusCode, 400);
    assert.match(r.json().message, /memoryMib/);
  });

  it('invalid JSON → 400, not 500', async () => {
    const r = await app.inject({ method: 'POST', url: '/v1/run', headers: { 'content-type': 'application/json' }, payload: '{"pack":' });
    assert.equal(r.statusCode, 400);
  });

  it('/v1/run needs code or files', async () => {
    const r = await app.inject({ method: 'POST', url: '/v1/run', payload: { pack: 'python' } });
    assert.equal(r.statusCode, 400);
    assert.match(r.json().message, /code/);
  });

  it('unknown sandbox → 404 SANDBOX_NOT_FOUND on every sandbox route', async () => {
    for (const [method, url] of [
      ['GET', '/v1/sandboxes/nope'],
      ['DELETE', '/v1/sandboxes/nope'],
      ['POST', '/v1/sandboxes/nope/exec'],
      ['GET', '/v1/sandboxes/nope/files?path=/x'],
    ] as const) {
      const r = await app.inject({ method, url, payload: method === 'POST' ? { cmd: 'true' } : undefined });
      assert.equal(r.statusCode, 404, url);
      assert.equal(r.json().code, 'SANDBOX_NOT_FOUND');
    }
  });

  it('unknown route → JSON 404', async () => {
    const r = await app.inject({ method: 'GET', url: '/v2/what' });
    assert.equal(r.statusCode, 404);
    assert.equal(r.json().code, 'NOT_FOUND');
  });

  it('serves OpenAPI with the sandbox routes', async () => {
    const r = await app.inject({ method: 'GET', url: '/openapi.json' });
    const doc = r.json();
    assert.equal(doc.openapi.startsWith('3'), true);
    for (const p of ['/v1/sandboxes', '/v1/sandboxes/{id}/exec', '/v1/run', '/v1/packs', '/v1/backends']) assert.ok(doc.paths[p], p);
  });

  it('lists packs and backends with reasons', async () => {
    const packs = (await app.inject({ method: 'GET', url: '/v1/packs' })).json().packs;
    assert.deepEqual(packs.map((p: { name: string }) => p.name).sort(), ['base', 'code-interpreter', 'go', 'node', 'python', 'shell']);
    const backends = (await app.inject({ method: 'GET', url: '/v1/backends' })).json().backends;
    for (const b of backends) assert.ok(b.available || (typeof b.reason === 'string' && b.reason.length > 0), b.name);
  });

  it('requires the bearer token when one is set (healthz stays open)', async () => {
    assert.equal((await secured.inject({ method: 'GET', url: '/v1/packs' })).statusCode, 401);
    assert.equal((await secured.inject({ method: 'GET', url: '/v1/packs', headers: { authorization: 'Bearer wrong' } })).statusCode, 401);
    assert.equal((await secured.inject({ method: 'GET', url: '/v1/packs', headers: { authorization: 'Bearer s3cret' } })).statusCode, 200);
    assert.equal((await secured.inject({ method: 'GET', url: '/healthz' })).statusCode, 200);
  });

  it('exposes Prometheus metrics', async () => {
    const r = await app.inject({ method: 'GET', url: '/metrics' });
    assert.match(r.body, /kiln_create_queue_depth/);
  });
});
