/**
 * The SDK's workspace methods (issue #18) against a real HTTP server made here that answers as the
 * design's API says (WORKSPACE-DESIGN.md): the requests they send (method, path, query, body,
 * token) and how they read each answer (JSON, patch text, raw bytes, a 409 with its conflicts).
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, describe, it } from 'node:test';
import { type Change, KilnClient, KilnError, WORKSPACE_CONFLICT, workspaceConflicts, workspaceOf } from '../../sdk/src/index.js';

interface Seen {
  method: string;
  path: string;
  query: Record<string, string>;
  body: unknown;
  auth?: string;
}

const CHANGE: Change = {
  path: 'src/a b.txt',
  pathBase64: Buffer.from('src/a b.txt').toString('base64'),
  status: 'modified',
  type: 'file',
  size: 6,
  binary: false,
  ignored: false,
  modeOld: 0o644,
  modeNew: 0o755,
};
const PATCH = 'diff --git "a/src/a b.txt" "b/src/a b.txt"\nold mode 100644\nnew mode 100755\n';
// Every byte value, so a text decoding anywhere on the way would show.
const BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));

describe('SDK workspace methods against a real HTTP server', () => {
  let server: Server;
  let kiln: KilnClient;
  let seen: Seen[] = [];
  /** What the next approve answers: 200, or 409 with the conflicts top level or in details. */
  let conflictShape: 'none' | 'top' | 'details' = 'none';

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url!, 'http://x');
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString();
    seen.push({ method: req.method!, path: url.pathname, query: Object.fromEntries(url.searchParams), body: raw ? JSON.parse(raw) : undefined, auth: req.headers.authorization });
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    const route = `${req.method} ${url.pathname}`;
    if (route === 'POST /v1/sandboxes') return json(201, { id: 'sb-1', workspace: { path: (JSON.parse(raw) as { workspace: { path: string } }).workspace.path, changes: 0 } });
    if (route === 'GET /v1/sandboxes/sb-1/changes') return json(200, { changes: [CHANGE], upperBytes: 8192, limitBytes: 1 << 30 });
    if (route === 'GET /v1/sandboxes/sb-1/diff') {
      res.writeHead(200, { 'content-type': 'text/x-diff; charset=utf-8' });
      return res.end(PATCH);
    }
    if (route === 'GET /v1/sandboxes/sb-1/changes/content') {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      return res.end(BYTES);
    }
    if (route === 'POST /v1/sandboxes/sb-1/approve') {
      const body = JSON.parse(raw) as { paths?: string[]; force?: boolean };
      if (conflictShape === 'top' && !body.force) return json(409, { code: WORKSPACE_CONFLICT, message: 'changed on the host', conflicts: ['src/a b.txt'] });
      if (conflictShape === 'details' && !body.force) return json(409, { code: WORKSPACE_CONFLICT, message: 'changed on the host', details: { conflicts: ['x', 'y'] } });
      return json(200, { applied: body.paths ?? [CHANGE.path] });
    }
    if (route === 'POST /v1/sandboxes/sb-1/reject') return json(200, { rejected: (JSON.parse(raw) as { paths?: string[] }).paths ?? [CHANGE.path] });
    json(404, { code: 'SANDBOX_NOT_FOUND', message: `no sandbox at ${url.pathname}` });
  };

  before(async () => {
    server = createServer((req, res) => void handle(req, res));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    kiln = new KilnClient({ baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, token: 'tok' });
  });
  after(async () => {
    await new Promise<void>((r) => server.close(() => r()));
  });
  beforeEach(() => {
    seen = [];
    conflictShape = 'none';
  });

  it('create sends the workspace; workspaceOf reads it from the answer', async () => {
    const sb = await kiln.sandboxes.create({ pack: 'python', workspace: { path: '/srv/proj', gitWritable: true, sizeMib: 64 } });
    assert.deepEqual(seen[0]?.body, { pack: 'python', workspace: { path: '/srv/proj', gitWritable: true, sizeMib: 64 } });
    assert.deepEqual(workspaceOf(sb), { path: '/srv/proj', changes: 0 });
  });

  it('changes: GET …/changes, with ?ignored=1 only when asked', async () => {
    const r = await kiln.sandboxes.changes('sb-1');
    assert.deepEqual(r, { changes: [CHANGE], upperBytes: 8192, limitBytes: 1 << 30 });
    await kiln.sandboxes.changes('sb-1', { ignored: true });
    await kiln.sandboxes.changes('sb-1', { ignored: false });
    assert.deepEqual(
      seen.map((s) => [s.method, s.path, s.query, s.auth]),
      [
        ['GET', '/v1/sandboxes/sb-1/changes', {}, 'Bearer tok'],
        ['GET', '/v1/sandboxes/sb-1/changes', { ignored: '1' }, 'Bearer tok'],
        ['GET', '/v1/sandboxes/sb-1/changes', {}, 'Bearer tok'],
      ],
    );
  });

  it('diff: the patch text as sent, the path encoded in the query', async () => {
    assert.equal(await kiln.sandboxes.diff('sb-1'), PATCH);
    assert.equal(await kiln.sandboxes.diff('sb-1', { path: 'src/a b&c=ü.txt', ignored: true }), PATCH);
    assert.deepEqual(
      seen.map((s) => s.query),
      [{}, { path: 'src/a b&c=ü.txt', ignored: '1' }],
    );
  });

  it('changeContent: the raw bytes of a side, every byte value intact', async () => {
    const got = await kiln.sandboxes.changeContent('sb-1', 'bin/x.dat', 'old');
    assert.ok(got instanceof Uint8Array);
    assert.deepEqual(Buffer.from(got), BYTES);
    assert.deepEqual(seen[0]?.query, { path: 'bin/x.dat', side: 'old' });
  });

  it('approve and reject: the body as given, the answer as sent', async () => {
    assert.deepEqual(await kiln.sandboxes.approve('sb-1'), { applied: [CHANGE.path] });
    assert.deepEqual(await kiln.sandboxes.approve('sb-1', { paths: ['a', 'b'], ignored: true }), { applied: ['a', 'b'] });
    assert.deepEqual(await kiln.sandboxes.reject('sb-1', { paths: ['c'] }), { rejected: ['c'] });
    assert.deepEqual(await kiln.sandboxes.reject('sb-1'), { rejected: [CHANGE.path] });
    assert.deepEqual(
      seen.map((s) => [s.method, s.path, s.body]),
      [
        ['POST', '/v1/sandboxes/sb-1/approve', {}],
        ['POST', '/v1/sandboxes/sb-1/approve', { paths: ['a', 'b'], ignored: true }],
        ['POST', '/v1/sandboxes/sb-1/reject', { paths: ['c'] }],
        ['POST', '/v1/sandboxes/sb-1/reject', {}],
      ],
    );
  });

  for (const shape of ['top', 'details'] as const) {
    it(`a 409 WORKSPACE_CONFLICT (conflicts ${shape === 'top' ? 'beside the code' : 'in details'}) is a KilnError whose paths workspaceConflicts lists; force applies`, async () => {
      conflictShape = shape;
      const e = await kiln.sandboxes.approve('sb-1', { paths: ['src/a b.txt'] }).then(
        () => undefined,
        (err: unknown) => err,
      );
      assert.ok(e instanceof KilnError);
      assert.equal(e.status, 409);
      assert.equal(e.code, WORKSPACE_CONFLICT);
      assert.equal(e.message, 'changed on the host');
      assert.deepEqual(workspaceConflicts(e), shape === 'top' ? ['src/a b.txt'] : ['x', 'y']);
      assert.deepEqual(await kiln.sandboxes.approve('sb-1', { paths: ['src/a b.txt'], force: true }), { applied: ['src/a b.txt'] });
    });
  }

  it('workspaceConflicts is undefined for any other error', async () => {
    const e = await kiln.sandboxes.changes('sb-404').catch((err: unknown) => err);
    assert.ok(e instanceof KilnError);
    assert.equal(e.code, 'SANDBOX_NOT_FOUND');
    assert.equal(workspaceConflicts(e), undefined);
    assert.equal(workspaceConflicts(new Error('x')), undefined);
  });
});
