/**
 * Uploads as clients really send them (issue #14, item 8), against the real service (namespace
 * backend, real bubblewrap): raw bytes whatever the Content-Type or none (curl -T sends none,
 * curl --data-binary a form type), archives told apart by their first bytes, zip accepted.
 * Requests go through node:http so the headers are exactly the ones written here.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { startTestServer, type TestServer } from '../parity/fixture.js';
import { tarOf } from '../parity/tar.js';
import { zipOf } from '../parity/zip.js';

interface Answer {
  status: number;
  body: Buffer;
  json: Record<string, unknown>;
}

function send(base: string, method: string, path: string, headers: Record<string, string>, body?: Buffer): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const h: Record<string, string> = { ...headers };
    if (body) h['content-length'] = String(body.length);
    const req = request(base + path, { method, headers: h }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const b = Buffer.concat(chunks);
        let json: Record<string, unknown> = {};
        if (/json/.test(String(res.headers['content-type']))) json = JSON.parse(b.toString('utf8')) as Record<string, unknown>;
        resolve({ status: res.statusCode ?? 0, body: b, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('uploads whatever the client calls them', { skip: process.getuid?.() === 0 ? undefined : 'the namespace backend needs root', timeout: 300_000 }, () => {
  let t: TestServer;
  let id = '';
  const put = (path: string, headers: Record<string, string>, body?: Buffer) => send(t.server.url, 'PUT', `/v1/sandboxes/${id}/files?path=${encodeURIComponent(path)}`, headers, body);
  const read = async (path: string) => (await send(t.server.url, 'GET', `/v1/sandboxes/${id}/files?path=${encodeURIComponent(path)}`, {})).body.toString('utf8');
  const archive = (path: string, headers: Record<string, string>, body: Buffer) => send(t.server.url, 'POST', `/v1/sandboxes/${id}/archive?path=${encodeURIComponent(path)}`, headers, body);
  const sh = async (cmd: string) => (await t.client.sandboxes.exec(id, { cmd })).stdout;

  before(async () => {
    t = await startTestServer({ KILN_BACKEND: 'namespace' });
    id = (await t.client.sandboxes.create({ pack: 'shell', memoryMib: 128, diskMib: 64 })).id;
  });
  after(async () => {
    await t?.client.sandboxes.delete(id).catch(() => undefined);
    await t?.close();
  });

  describe('PUT /files takes the raw bytes', () => {
    const cases: Array<[string, Record<string, string>, string]> = [
      ['no Content-Type (curl -T)', {}, 'print("no type")\n'],
      ['a form body (curl --data-binary)', { 'content-type': 'application/x-www-form-urlencoded' }, 'a=1&b=2'],
      ['a JSON file sent as JSON', { 'content-type': 'application/json' }, '{"not": "parsed", "kept": [1, 2]}'],
      ['an unusual type', { 'content-type': 'image/png' }, '\u0089PNG-ish bytes'],
    ];
    for (const [name, headers, text] of cases) {
      it(name, async () => {
        const path = `/workspace/up-${name.replace(/\W+/g, '-')}`;
        const r = await put(path, headers, Buffer.from(text));
        assert.equal(r.status, 200, r.body.toString());
        assert.equal(r.json.bytes, Buffer.byteLength(text));
        assert.equal(await read(path), text);
      });
    }

    it('an empty body with no Content-Type makes an empty file', async () => {
      const r = await put('/workspace/empty.txt', {}, Buffer.alloc(0));
      assert.equal(r.status, 200, r.body.toString());
      assert.equal(r.json.bytes, 0);
      assert.equal(await sh('wc -c < /workspace/empty.txt'), '0\n');
    });
  });

  describe('POST /archive reads the format from the first bytes', () => {
    const tree = tarOf([
      { name: 'proj/a.txt', body: 'alpha\n' },
      { name: 'proj/sub/b.txt', body: 'beta\n' },
    ]);
    const types: Array<[string, Record<string, string>]> = [
      ['application/x-tar', { 'content-type': 'application/x-tar' }],
      ['application/octet-stream', { 'content-type': 'application/octet-stream' }],
      ['no Content-Type', {}],
    ];
    for (const [name, headers] of types) {
      it(`a tar.gz sent as ${name} is unpacked`, async () => {
        const dest = `/workspace/tgz-${name.replace(/\W+/g, '-')}`;
        const r = await archive(dest, headers, gzipSync(tree));
        assert.equal(r.status, 200, r.body.toString());
        assert.equal(r.json.files, 2);
        assert.equal(await read(`${dest}/proj/sub/b.txt`), 'beta\n');
      });
    }

    it('a plain tar sent as application/gzip is unpacked too', async () => {
      const r = await archive('/workspace/plain-tar', { 'content-type': 'application/gzip' }, tree);
      assert.equal(r.status, 200, r.body.toString());
      assert.equal(await read('/workspace/plain-tar/proj/a.txt'), 'alpha\n');
    });

    it('a zip is unpacked with its folders, modes and links', async () => {
      const zip = zipOf([
        { name: 'app/' },
        { name: 'app/main.sh', body: '#!/bin/sh\necho "zip ran: $(cat data.txt)"\n', mode: 0o755 },
        { name: 'app/data.txt', body: 'payload' },
        { name: 'app/link.txt', symlink: 'data.txt' },
      ]);
      const r = await archive('/workspace/z', { 'content-type': 'application/zip' }, zip);
      assert.equal(r.status, 200, r.body.toString());
      assert.equal(r.json.files, 4);
      assert.equal(await sh('cd /workspace/z/app && ./main.sh && readlink link.txt && ls -A'), 'zip ran: payload\ndata.txt\ndata.txt\nlink.txt\nmain.sh\n');
    });

    it('a zip that climbs out is refused and writes nothing outside', async () => {
      const r = await archive('/workspace/zevil', {}, zipOf([{ name: '../escaped.txt', body: 'evil' }]));
      assert.equal(r.status, 400, r.body.toString());
      assert.equal(r.json.code, 'PATH_ESCAPE');
      const link = await archive('/workspace/zevil', {}, zipOf([{ name: 'out', symlink: '../../etc' }]));
      assert.equal(link.json.code, 'PATH_ESCAPE');
      assert.equal(await sh('ls -A /workspace/escaped.txt /workspace/zevil 2>&1; true'), "ls: cannot access '/workspace/escaped.txt': No such file or directory\n/workspace/zevil:\n");
    });

    it('bytes that are no archive are a 400 saying which formats are accepted', async () => {
      const r = await archive('/workspace/junk', { 'content-type': 'application/x-tar' }, Buffer.from('print("I am a script")\n'));
      assert.equal(r.status, 400, r.body.toString());
      assert.equal(r.json.code, 'INVALID_REQUEST');
      assert.match(String(r.json.message), /not a tar, tar\.gz or zip archive/);
    });
  });
});
