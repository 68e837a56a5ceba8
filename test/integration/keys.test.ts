/**
 * API keys over real HTTP with the namespace backend (real bwrap sandboxes) and the store in
 * memory: a key sees and touches only its own sandboxes on every sandbox route /openapi.json
 * lists (and the exec WebSocket); others' answer 404 as if they did not exist. Per-key limits
 * refuse with 429 QUOTA_EXCEEDED; labels filter the list; pages; the event trail; key admin.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import WebSocket from 'ws';
import { REPO_ROOT } from '../../src/core/config.js';
import { startTestServer, type TestServer } from '../parity/fixture.js';

const ADMIN = 'admin-token-for-tests';

describe('API keys (namespace backend, real HTTP)', () => {
  let ts: TestServer;
  let base: string;
  const call = async (token: string | undefined, method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown>; text: string }> => {
    const headers: Record<string, string> = {};
    if (token) headers.authorization = `Bearer ${token}`;
    let payload: string | undefined;
    if (body !== undefined && typeof body !== 'string') {
      headers['content-type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    if (typeof body === 'string') {
      headers['content-type'] = 'application/octet-stream';
      payload = body;
    }
    const r = await fetch(`${base}${path}`, { method, headers, body: payload });
    const text = await r.text();
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(text);
    } catch {
      /* not JSON */
    }
    return { status: r.status, json, text };
  };
  const createKey = async (name: string, limits: Record<string, number> = {}): Promise<{ id: string; secret: string }> => {
    const r = await call(ADMIN, 'POST', '/v1/keys', { name, limits });
    assert.equal(r.status, 201, r.text);
    return { id: (r.json.key as { id: string }).id, secret: r.json.secret as string };
  };
  const create = async (token: string, body: Record<string, unknown> = {}): Promise<{ status: number; json: Record<string, unknown> }> =>
    call(token, 'POST', '/v1/sandboxes', { pack: 'shell', memoryMib: 64, ...body });
  const created: Array<[string, string]> = [];
  const mustCreate = async (token: string, body: Record<string, unknown> = {}): Promise<string> => {
    const r = await create(token, body);
    assert.equal(r.status, 201, JSON.stringify(r.json));
    created.push([token, r.json.id as string]);
    return r.json.id as string;
  };

  let a: { id: string; secret: string };
  let b: { id: string; secret: string };
  let sockDir: string;
  before(async () => {
    sockDir = await mkdtemp(join(tmpdir(), 'kiln-keys-sock-'));
    ts = await startTestServer({ KILN_TOKEN: ADMIN, KILN_DATABASE_URL: 'memory://', KILN_SOCKET: join(sockDir, 'kiln.sock') });
    base = ts.server.url;
    a = await createKey('team-a', { maxSandboxes: 2, maxTtlSec: 600, maxExecTimeoutMs: 5000 });
    b = await createKey('team-b');
  });
  after(async () => {
    for (const [, id] of created) await call(ADMIN, 'DELETE', `/v1/sandboxes/${id}`).catch(() => undefined);
    await ts?.close();
    await rm(sockDir, { recursive: true, force: true });
  });

  it("the key routes are the admin's: a key gets 403, no bearer 401; the secret is shown once", async () => {
    assert.equal((await call(a.secret, 'GET', '/v1/keys')).json.code, 'FORBIDDEN');
    assert.equal((await call(a.secret, 'POST', '/v1/keys', { name: 'x' })).status, 403);
    assert.equal((await call(undefined, 'GET', '/v1/keys')).status, 401);
    const list = await call(ADMIN, 'GET', '/v1/keys');
    assert.equal(list.status, 200);
    assert.ok(!list.text.includes(a.secret.slice(5)), 'listing never shows a secret');
    assert.deepEqual((list.json.keys as Array<{ name: string }>).map((k) => k.name).slice(0, 2), ['team-a', 'team-b']);
  });

  it('the trusted Unix socket is the admin: it manages keys with no bearer', async () => {
    const viaSocket = (method: string, path: string, body?: unknown) =>
      new Promise<{ status: number; json: Record<string, unknown> }>((resolve, reject) => {
        const req = request({ socketPath: join(sockDir, 'kiln.sock'), method, path, headers: body ? { 'content-type': 'application/json' } : {} }, (res) => {
          let text = '';
          res.on('data', (c) => {
            text += c;
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) : {} }));
        });
        req.on('error', reject);
        req.end(body ? JSON.stringify(body) : undefined);
      });
    const made = await viaSocket('POST', '/v1/keys', { name: 'from-socket' });
    assert.equal(made.status, 201);
    const id = (made.json.key as { id: string }).id;
    assert.equal((await viaSocket('GET', '/v1/keys')).status, 200);
    assert.equal((await viaSocket('DELETE', `/v1/keys/${id}`)).status, 204);
  });

  it("key A cannot list, read, exec in, read files of, write files to, or delete key B's sandbox, on any sandbox route", async () => {
    const sa = await mustCreate(a.secret, { labels: { team: 'a' } });
    const sb = await mustCreate(b.secret, { labels: { team: 'b' } });
    assert.equal((await call(b.secret, 'PUT', `/v1/sandboxes/${sb}/files?path=/workspace/secret.txt`, 'b-only')).status, 200);

    const listA = await call(a.secret, 'GET', '/v1/sandboxes');
    assert.deepEqual(
      (listA.json.sandboxes as Array<{ id: string }>).map((s) => s.id),
      [sa],
    );
    const all = await call(ADMIN, 'GET', '/v1/sandboxes');
    assert.deepEqual(new Set((all.json.sandboxes as Array<{ id: string }>).map((s) => s.id)), new Set([sa, sb]), 'the admin sees both');
    assert.deepEqual((await call(a.secret, 'GET', '/v1/sandboxes?label=team=b')).json.sandboxes, [], 'a label filter does not reach past the owner');

    // Every operation on /v1/sandboxes/{id}… that /openapi.json lists: A on B's sandbox is a 404.
    const spec = (await call(ADMIN, 'GET', '/openapi.json')).json as { paths: Record<string, Record<string, unknown>> };
    const ops = Object.entries(spec.paths)
      .filter(([p]) => p.startsWith('/v1/sandboxes/{id}'))
      .flatMap(([p, m]) => Object.keys(m).map((method) => [method.toUpperCase(), p] as const));
    assert.ok(ops.length >= 8, `found only ${ops.length} sandbox operations`);
    for (const [method, p] of ops) {
      if (p.endsWith('/exec/ws')) continue;
      const url = p.replace('{id}', sb) + (p.endsWith('/files') || p.endsWith('/ls') ? '?path=/workspace/secret.txt' : '');
      const body =
        method === 'POST' && p.endsWith('/exec')
          ? { cmd: 'cat /workspace/secret.txt' }
          : method === 'POST' && p.endsWith('/snapshots')
            ? { name: 'stolen' }
            : method === 'PUT' || (method === 'POST' && p.endsWith('/archive'))
              ? 'x'
              : undefined;
      const r = await call(a.secret, method, url, body);
      assert.equal(r.status, 404, `${method} ${url}: ${r.text}`);
      assert.equal(r.json.code, 'SANDBOX_NOT_FOUND', `${method} ${url}`);
      assert.ok(!r.text.includes('b-only'));
    }
    // The same for the WebSocket exec, with the key in the header or in ?access_token=.
    for (const [url, headers] of [
      [`${base.replace('http', 'ws')}/v1/sandboxes/${sb}/exec/ws`, { authorization: `Bearer ${a.secret}` }],
      [`${base.replace('http', 'ws')}/v1/sandboxes/${sb}/exec/ws?access_token=${a.secret}`, {}],
    ] as const) {
      const status = await new Promise<number>((resolve, reject) => {
        const ws = new WebSocket(url, { headers });
        ws.on('unexpected-response', (_req, res) => {
          resolve(res.statusCode ?? 0);
          ws.terminate();
        });
        ws.on('open', () => {
          ws.close();
          reject(new Error("upgraded for another key's sandbox"));
        });
        ws.on('error', () => undefined);
      });
      assert.equal(status, 404);
    }

    // B's sandbox is untouched, and B (and only B or the admin) still uses it.
    const own = await call(b.secret, 'POST', `/v1/sandboxes/${sb}/exec`, { cmd: 'cat /workspace/secret.txt' });
    assert.equal(own.json.stdout, 'b-only');
    const ownWs = await new Promise<string>((resolve, reject) => {
      const ws = new WebSocket(`${base.replace('http', 'ws')}/v1/sandboxes/${sb}/exec/ws?access_token=${b.secret}`);
      let out = '';
      ws.on('open', () => ws.send(JSON.stringify({ type: 'start', cmd: 'cat /workspace/secret.txt' })));
      ws.on('message', (m) => {
        const msg = JSON.parse(String(m));
        if (msg.type === 'stdout') out += msg.data;
        if (msg.type === 'result') resolve(out);
      });
      ws.on('error', reject);
    });
    assert.equal(ownWs, 'b-only');
    assert.equal((await call(ADMIN, 'GET', `/v1/sandboxes/${sb}`)).status, 200);
    assert.equal((await call(b.secret, 'DELETE', `/v1/sandboxes/${sb}`)).status, 204);
    assert.equal((await call(a.secret, 'DELETE', `/v1/sandboxes/${sa}`)).status, 204);
  });

  it('quotas refuse with 429 QUOTA_EXCEEDED naming the limit: sandboxes, memory, lifetime, exec time', async () => {
    const s1 = await mustCreate(a.secret);
    await mustCreate(a.secret);
    const third = await create(a.secret);
    assert.equal(third.status, 429);
    assert.equal(third.json.code, 'QUOTA_EXCEEDED');
    assert.deepEqual(third.json.details, { limit: 'maxSandboxes', value: 2, requested: 3 });
    assert.match(String(third.json.message), /limit is 2; delete one first/);
    // B has no such limit; the admin has none either.
    await mustCreate(b.secret);

    // Deleting frees the slot.
    assert.equal((await call(a.secret, 'DELETE', `/v1/sandboxes/${s1}`)).status, 204);
    const s3 = await mustCreate(a.secret);

    const ttl = await create(b.secret);
    assert.equal(ttl.status, 201);
    created.push([b.secret, ttl.json.id as string]);
    const longTtl = await call(a.secret, 'POST', '/v1/sandboxes', { pack: 'shell', ttlSec: 601 });
    assert.equal(longTtl.status, 429);
    assert.equal((longTtl.json.details as { limit: string }).limit, 'maxTtlSec');

    const slow = await call(a.secret, 'POST', `/v1/sandboxes/${s3}/exec`, { cmd: 'true', timeoutMs: 5001 });
    assert.equal(slow.status, 429);
    assert.deepEqual(slow.json.details, { limit: 'maxExecTimeoutMs', value: 5000, requested: 5001 });
    const fine = await call(a.secret, 'POST', `/v1/sandboxes/${s3}/exec`, { cmd: 'echo ok', timeoutMs: 5000 });
    assert.equal(fine.json.stdout, 'ok\n');
    // With no timeoutMs an exec gets the key's limit, not the host default (30 s): it is cut at 5 s.
    const capped = await call(a.secret, 'POST', `/v1/sandboxes/${s3}/exec`, { cmd: 'sleep 8' });
    assert.equal(capped.json.timedOut, true);

    const mem = await createKey('mem', { maxMemoryMib: 100 });
    await mustCreate(mem.secret, { memoryMib: 64 });
    const over = await create(mem.secret, { memoryMib: 64 });
    assert.equal(over.status, 429);
    assert.deepEqual(over.json.details, { limit: 'maxMemoryMib', value: 100, requested: 128 });

    const run = await call(a.secret, 'POST', '/v1/run', { pack: 'shell', code: 'echo hi', timeoutMs: 9000 });
    assert.equal(run.status, 429, 'a one-shot run is held to the same limits');
  });

  it('labels filter the list (every label must match); pages follow nextCursor', async () => {
    const c = await createKey('lister');
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await mustCreate(c.secret, { labels: { job: 'build', n: String(i), parity: i % 2 ? 'odd' : 'even' } }));
    const even = await call(c.secret, 'GET', '/v1/sandboxes?label=job=build&label=parity=even');
    assert.deepEqual(
      (even.json.sandboxes as Array<{ id: string }>).map((s) => s.id),
      [ids[0], ids[2], ids[4]],
    );
    assert.deepEqual((even.json.sandboxes as Array<{ labels: Record<string, string> }>)[0]!.labels, { job: 'build', n: '0', parity: 'even' });
    const seen: string[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < 5; page++) {
      const r = await call(c.secret, 'GET', `/v1/sandboxes?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      seen.push(...(r.json.sandboxes as Array<{ id: string }>).map((s) => s.id));
      cursor = r.json.nextCursor as string | undefined;
      if (!cursor) break;
    }
    assert.deepEqual(seen, ids);
    assert.equal((await call(c.secret, 'GET', '/v1/sandboxes?label=nonsense')).status, 400);
    assert.equal((await call(c.secret, 'GET', '/v1/sandboxes?limit=0')).status, 400);
    assert.equal((await call(c.secret, 'GET', '/v1/sandboxes?cursor=bm9wZQ')).status, 400);
    const badLabel = await create(c.secret, { labels: { 'bad key!': 'x' } });
    assert.equal(badLabel.status, 400);
    for (const id of ids) await call(c.secret, 'DELETE', `/v1/sandboxes/${id}`);
  });

  it('keeps an event trail (no output) and usage per key; a revoked key is refused', async () => {
    const k = await createKey('trail');
    const id = await mustCreate(k.secret);
    await call(k.secret, 'PUT', `/v1/sandboxes/${id}/files?path=/workspace/a.txt`, 'hello');
    await call(k.secret, 'POST', `/v1/sandboxes/${id}/exec`, { cmd: 'echo secret-output; exit 3' });
    assert.equal((await call(k.secret, 'DELETE', `/v1/sandboxes/${id}`)).status, 204);
    const ev = await call(k.secret, 'GET', `/v1/sandboxes/${id}/events`);
    assert.equal(ev.status, 200, ev.text);
    const events = ev.json.events as Array<{ kind: string; data: Record<string, unknown> }>;
    assert.deepEqual(
      events.map((e) => e.kind),
      ['created', 'file.written', 'exec.started', 'exec.ended', 'deleted'],
    );
    assert.deepEqual(events[1]!.data, { path: '/workspace/a.txt', bytes: 5 });
    assert.equal(events[3]!.data.exitCode, 3);
    assert.equal(typeof events[3]!.data.durationMs, 'number');
    assert.equal(events[4]!.data.reason, 'deleted by request');
    assert.ok(!ev.text.includes('secret-output'), 'output is never kept');
    assert.equal((await call(b.secret, 'GET', `/v1/sandboxes/${id}/events`)).status, 404, 'another key cannot read the trail');

    const usage = await call(ADMIN, 'GET', `/v1/keys/${k.id}`);
    assert.deepEqual(usage.json.usage, { sandboxes: 0, memoryMib: 0, sandboxesCreated: 1, execs: 1, execMs: (usage.json.usage as { execMs: number }).execMs });

    assert.equal((await call(ADMIN, 'DELETE', `/v1/keys/${k.id}`)).status, 204);
    assert.equal((await call(k.secret, 'GET', '/v1/sandboxes')).status, 401);
    assert.equal((await call(ADMIN, 'DELETE', `/v1/keys/${k.id}`)).json.code, 'KEY_NOT_FOUND');
  });

  it('kiln keys create|ls|revoke drive the admin API; the key it prints works, then is refused once revoked', async () => {
    const kiln = (args: string[], token = ADMIN) =>
      promisify(execFile)(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'src/cli/main.ts'), 'keys', ...args], {
        cwd: REPO_ROOT,
        env: { ...process.env, KILN_URL: base, KILN_TOKEN: token },
      });
    const created = await kiln(['create', 'from-cli', '--max-sandboxes', '1', '--max-exec-timeout-ms', '2000']);
    const secret = created.stdout.trim();
    assert.match(secret, /^kiln_/);
    const id = /created (key-[0-9a-f]+)/.exec(created.stderr)?.[1];
    assert.ok(id, created.stderr);
    const ls = await kiln(['ls']);
    assert.match(ls.stdout, new RegExp(`${id} +from-cli +kiln_\\S+… +live +0 +maxSandboxes=1,maxExecTimeoutMs=2000`));
    assert.ok(!ls.stdout.includes(secret));
    assert.equal((await call(secret, 'GET', '/v1/sandboxes')).status, 200);
    await assert.rejects(kiln(['ls'], secret), (e: { stderr: string }) => /FORBIDDEN/.test(e.stderr));
    await kiln(['revoke', id]);
    assert.match((await kiln(['ls'])).stdout, new RegExp(`${id} .* revoked`));
    assert.equal((await call(secret, 'GET', '/v1/sandboxes')).status, 401);
    await assert.rejects(kiln(['revoke', id]), (e: { stderr: string }) => /KEY_NOT_FOUND/.test(e.stderr));
  });
});
