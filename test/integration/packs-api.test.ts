/** The pack routes' edge through app.inject(): who may manage packs, and what a bad definition gets. No builds. */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { loadConfig } from '../../src/core/config.js';
import { buildApp } from '../../src/server/app.js';
import { composeService } from '../../src/server/compose.js';
import type { KilnService } from '../../src/server/service.js';

const USER = 'user-token';
const ADMIN = 'admin-token';
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

describe('pack routes: admin only, clear errors', () => {
  let svc: KilnService;
  let open: FastifyInstance;
  let secured: FastifyInstance;
  let local: FastifyInstance;
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-packs-api-'));
    svc = await composeService(loadConfig({ KILN_RUN_DIR: join(dir, 'run'), KILN_DATA_DIR: join(dir, 'data'), KILN_POOL: '', KILN_DATABASE_URL: 'off' }), { skipScan: true });
    open = await buildApp(svc);
    secured = await buildApp({ ...svc, config: { ...svc.config, token: USER, adminToken: ADMIN } });
    local = await buildApp(svc, { trustedSocket: true });
  });
  after(async () => {
    await Promise.all([open.close(), secured.close(), local.close()]);
    await svc.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('over TCP with no admin token configured, managing packs is a 403 naming KILN_ADMIN_TOKEN', async () => {
    for (const [method, url] of [
      ['POST', '/v1/packs'],
      ['DELETE', '/v1/packs/mine'],
    ] as const) {
      const r = await open.inject({ method, url, payload: method === 'POST' ? { name: 'mine', base: 'python' } : undefined });
      assert.equal(r.statusCode, 403, url);
      assert.equal(r.json().code, 'ADMIN_REQUIRED');
      assert.match(r.json().message, /KILN_ADMIN_TOKEN/);
      assert.match(r.json().message, /KILN_SOCKET/);
    }
  });

  it('with an admin token configured, only that bearer manages packs; it also works where the user token does', async () => {
    const body = { name: 'mine', base: 'python', colour: 'red' };
    for (const headers of [{}, bearer('wrong')]) {
      const r = await secured.inject({ method: 'POST', url: '/v1/packs', headers, payload: body });
      assert.equal(r.statusCode, 401, 'not even a user');
      assert.equal(r.json().code, 'UNAUTHORIZED');
    }
    const user = await secured.inject({ method: 'POST', url: '/v1/packs', headers: bearer(USER), payload: body });
    assert.equal(user.statusCode, 403);
    assert.equal(user.json().code, 'ADMIN_REQUIRED');
    assert.match(user.json().message, /Bearer <KILN_ADMIN_TOKEN>/);
    const admin = await secured.inject({ method: 'POST', url: '/v1/packs', headers: bearer(ADMIN), payload: body });
    assert.equal(admin.statusCode, 400, 'the admin gets past the edge to validation');
    assert.equal((await secured.inject({ method: 'GET', url: '/v1/packs', headers: bearer(ADMIN) })).statusCode, 200);
    assert.equal((await secured.inject({ method: 'GET', url: '/v1/packs', headers: bearer(USER) })).statusCode, 200);
    assert.equal((await secured.inject({ method: 'GET', url: '/v1/packs' })).statusCode, 401);
  });

  it('on the trusted Unix socket no token is needed', async () => {
    const r = await local.inject({ method: 'POST', url: '/v1/packs', payload: { name: 'mine', base: 'python', colour: 'red' } });
    assert.equal(r.statusCode, 400);
  });

  it('a bad definition is refused before any build, naming the field, the value or the pack', async () => {
    const post = (payload: unknown) => local.inject({ method: 'POST', url: '/v1/packs', payload: payload as object });
    const unknownField = await post({ name: 'mine', base: 'python', colour: 'red' });
    assert.equal(unknownField.json().code, 'INVALID_REQUEST');
    assert.match(unknownField.json().message, /request body: \(root\)\.colour is not a known field \(known: name, description, base, packages/);

    const badPackage = await post({ name: 'mine', base: 'python', packages: ['Not A Package'] });
    assert.equal(badPackage.statusCode, 400);
    assert.match(badPackage.json().message, /packages\[0\] "Not A Package" does not match/);

    const builtin = await post({ name: 'python', base: 'shell' });
    assert.equal(builtin.statusCode, 409);
    assert.equal(builtin.json().code, 'PACK_CONFLICT');
    assert.match(builtin.json().message, /"python" is a built-in pack; give the custom pack another name/);

    const noBase = await post({ name: 'mine', base: 'cobol' });
    assert.equal(noBase.statusCode, 400);
    assert.equal(noBase.json().code, 'UNKNOWN_PACK');
    assert.match(noBase.json().message, /base pack "cobol" does not exist/);

    // Nothing was stored and nothing was built.
    assert.deepEqual(await readdir(join(dir, 'data')).catch(() => []), []);
  });

  it('built-in packs cannot be removed; an unknown custom pack is a 400 naming the custom packs', async () => {
    const builtin = await local.inject({ method: 'DELETE', url: '/v1/packs/python' });
    assert.equal(builtin.statusCode, 409);
    assert.match(builtin.json().message, /"python" is a built-in pack; only custom packs can be removed/);
    const unknown = await local.inject({ method: 'DELETE', url: '/v1/packs/nope' });
    assert.equal(unknown.statusCode, 400);
    assert.equal(unknown.json().code, 'UNKNOWN_PACK');
    assert.match(unknown.json().message, /custom packs: none/);
  });

  it('GET /v1/packs says what each pack is made of; GET /v1/packs/:name one of them', async () => {
    const { packs } = (await local.inject({ method: 'GET', url: '/v1/packs' })).json() as { packs: Array<Record<string, unknown>> };
    assert.deepEqual(
      packs.map((p) => p.name),
      ['base', 'code-interpreter', 'go', 'node', 'python', 'shell'],
    );
    const python = packs.find((p) => p.name === 'python')!;
    assert.equal(python.source, 'builtin');
    assert.ok((python.packages as string[]).includes('python3-pip'));
    // No image in this data dir: nothing claimed about its contents.
    assert.equal(python.imageReady, false);
    assert.equal(python.tools, undefined);
    const one = await local.inject({ method: 'GET', url: '/v1/packs/base' });
    assert.equal(one.statusCode, 200);
    assert.ok((one.json().packages as string[]).includes('git'));
    const missing = await local.inject({ method: 'GET', url: '/v1/packs/cobol' });
    assert.equal(missing.statusCode, 400);
    assert.match(missing.json().message, /unknown pack "cobol"; available packs: base, code-interpreter, go, node, python, shell/);
    assert.equal((await local.inject({ method: 'GET', url: '/v1/packs/python/build' })).statusCode, 404);
  });
});
