/**
 * Errors that name the real mistake (issue #14, items 6 and 7), against the real service: real
 * HTTP, the namespace backend, real bubblewrap. Each answer must name the field, the value sent
 * and the limit, and a user's mistake in files or exec must be a 4xx of its own, never a 5xx a
 * client would retry.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { startTestServer, type TestServer } from '../parity/fixture.js';

interface Answer {
  status: number;
  code: string;
  message: string;
  details?: Record<string, unknown>;
  body: Record<string, unknown>;
}

describe('errors that name the real mistake', { skip: process.getuid?.() === 0 ? undefined : 'the namespace backend needs root', timeout: 300_000 }, () => {
  let t: TestServer;
  let id = '';
  const call = async (method: string, path: string, body?: unknown, raw?: Buffer): Promise<Answer> => {
    const res = await fetch(t.server.url + path, {
      method,
      headers: body !== undefined ? { 'content-type': 'application/json' } : raw ? { 'content-type': 'application/octet-stream' } : {},
      body: body !== undefined ? JSON.stringify(body) : raw && new Uint8Array(raw),
    });
    const text = await res.text();
    const json = (text ? JSON.parse(text) : {}) as Record<string, unknown>;
    return { status: res.status, code: String(json.code), message: String(json.message), details: json.details as Record<string, unknown> | undefined, body: json };
  };

  before(async () => {
    t = await startTestServer({ KILN_BACKEND: 'namespace' });
    id = (await t.client.sandboxes.create({ pack: 'shell', memoryMib: 128, diskMib: 32 })).id;
  });
  after(async () => {
    await t?.client.sandboxes.delete(id).catch(() => undefined);
    await t?.close();
  });

  describe('6: each 4xx names the field, the value and the limit', () => {
    it('a missing cwd is CWD_NOT_FOUND naming the cwd, not "/bin/sh: no such file or directory"', async () => {
      const r = await call('POST', `/v1/sandboxes/${id}/exec`, { cmd: 'pwd', cwd: '/no/such/dir' });
      assert.equal(r.status, 400, r.message);
      assert.equal(r.code, 'CWD_NOT_FOUND');
      assert.match(r.message, /cwd \/no\/such\/dir does not exist/);
      assert.doesNotMatch(r.message, /bin\/sh/);
      // A cwd that is a file, and a good cwd with a missing program, are told apart as well.
      const file = await call('POST', `/v1/sandboxes/${id}/exec`, { cmd: 'pwd', cwd: '/etc/passwd' });
      assert.equal(file.code, 'CWD_NOT_FOUND');
      assert.match(file.message, /\/etc\/passwd is not a directory/);
      const prog = await call('POST', `/v1/sandboxes/${id}/exec`, { cmd: ['/no/such/program'], cwd: '/tmp' });
      assert.equal(prog.code, 'EXEC_FAILED');
      assert.match(prog.message, /\/no\/such\/program/);
    });

    it('an unknown field is named, with the fields there are', async () => {
      const r = await call('POST', '/v1/sandboxes', { pack: 'shell', colour: 'red' });
      assert.equal(r.status, 400);
      assert.equal(r.code, 'INVALID_REQUEST');
      assert.match(r.message, /unknown field "colour"/);
      assert.match(r.message, /memoryMib/);
      assert.equal(r.details?.field, 'colour');
      // Inside an array item the path says which item.
      const nested = await call('POST', '/v1/run', { pack: 'shell', files: [{ path: 'a.sh', content: 'true', mode: 493 }] });
      assert.equal(nested.status, 400);
      assert.match(nested.message, /unknown field "files\[0\]\.mode"; accepted: path, content, encoding/);
      const query = await call('GET', `/v1/sandboxes/${id}/files`);
      assert.match(query.message, /query parameter "path" is required/);
    });

    it('timeoutMs over the limit is refused as timeoutMs (the value and the maximum), never as ttlSec', async () => {
      const max = t.config.limits.maxExecTimeoutMs;
      const run = await call('POST', '/v1/run', { pack: 'shell', code: 'true', timeoutMs: 99_999_999 });
      assert.equal(run.status, 400);
      assert.doesNotMatch(run.message, /ttlSec/);
      assert.match(run.message, new RegExp(`timeoutMs must be an integer from 1 to ${max} on this host \\(got 99999999\\)`));
      const exec = await call('POST', `/v1/sandboxes/${id}/exec`, { cmd: 'true', timeoutMs: 99_999_999 });
      assert.equal(exec.status, 400);
      assert.match(exec.message, /timeoutMs .*got 99999999/);
      // No sandbox was made for the refused run.
      assert.deepEqual(
        (await t.client.sandboxes.list()).map((s) => s.id),
        [id],
      );
    });

    it("memoryMib states the schema's minimum (16), and the host maximum with the value sent", async () => {
      const low = await call('POST', '/v1/sandboxes', { pack: 'shell', memoryMib: 1 });
      assert.equal(low.status, 400);
      assert.match(low.message, /field "memoryMib" must be an integer >= 16 \(got 1\)/);
      const high = await call('POST', '/v1/sandboxes', { pack: 'shell', memoryMib: 10_000_000 });
      assert.equal(high.status, 400);
      assert.match(high.message, new RegExp(`memoryMib must be from 16 to ${t.config.limits.maxMemoryMib} MiB on this host \\(got 10000000\\)`));
      const cpus = await call('POST', '/v1/sandboxes', { pack: 'shell', cpus: 0 });
      assert.match(cpus.message, /field "cpus" must be a number > 0 and <= 64 \(got 0\)/);
    });

    it('an enum error lists the allowed values and the value sent', async () => {
      const r = await call('POST', '/v1/sandboxes', { pack: 'shell', backend: 'docker' });
      assert.equal(r.status, 400);
      assert.match(r.message, /field "backend" must be one of "namespace", "qemu", "firecracker" \(got "docker"\)/);
      const enc = await call('POST', '/v1/run', { pack: 'shell', files: [{ path: 'a.sh', content: 'true', encoding: 'hex' }] });
      assert.match(enc.message, /field "files\[0\]\.encoding" must be one of "utf8", "base64" \(got "hex"\)/);
      const type = await call('POST', `/v1/sandboxes/${id}/exec`, { cmd: 5 });
      assert.match(type.message, /field "cmd" must be a string or an array \(got 5\)/);
      // A big wrong value is never echoed back whole, in the message or in details.
      const big = await call('POST', `/v1/sandboxes/${id}/exec`, { cmd: { script: 'x'.repeat(100_000) } });
      assert.match(big.message, /^field "cmd" must be a string or an array \(got \{"script":"x+\.\.\.\)$/);
      assert.ok(JSON.stringify(big.body).length < 500, JSON.stringify(big.body).slice(0, 600));
    });

    it('invalid base64 file content is refused naming the file, and valid base64 still runs', async () => {
      const bad = await call('POST', '/v1/run', {
        pack: 'shell',
        files: [
          { path: 'main.sh', content: 'echo hi' },
          { path: 'data.bin', content: 'not base64!', encoding: 'base64' },
        ],
        entrypoint: 'main.sh',
      });
      assert.equal(bad.status, 400);
      assert.equal(bad.code, 'INVALID_REQUEST');
      assert.match(bad.message, /files\[1\]\.content is not valid base64: "!" at offset 10/);
      const good = await call('POST', '/v1/run', {
        pack: 'shell',
        files: [{ path: 'main.sh', content: Buffer.from('echo from base64\n').toString('base64'), encoding: 'base64' }],
        entrypoint: 'main.sh',
      });
      assert.equal(good.status, 200, good.message);
      assert.equal(good.body.stdout, 'from base64\n');
    });

    it('a one-shot run names what it got: code and files both or neither, an entrypoint among none of the files', async () => {
      const both = await call('POST', '/v1/run', { pack: 'shell', code: 'true', files: [{ path: 'a.sh', content: 'true' }] });
      assert.match(both.message, /^both "code" and "files" were sent/);
      const neither = await call('POST', '/v1/run', { pack: 'shell' });
      assert.match(neither.message, /^neither "code" nor "files" was sent/);
      const entry = await call('POST', '/v1/run', { pack: 'shell', files: [{ path: 'src/a.sh', content: 'true' }], entrypoint: 'main.sh' });
      assert.match(entry.message, /entrypoint "main\.sh" is not among the uploaded files \("src\/a\.sh"\)/);
    });

    it('a body over the limit names the limit', async () => {
      const over = (path: string, limit: number) =>
        new Promise<{ status: number; body: string; connection?: string }>((resolve, reject) => {
          // Only the Content-Length is sent: the answer must come before any of the body.
          const req = request(
            t.server.url + path,
            {
              method: path.includes('/files') ? 'PUT' : 'POST',
              headers: { 'content-type': path.includes('/files') ? 'application/octet-stream' : 'application/json', 'content-length': String(limit + 1) },
            },
            (res) => {
              let body = '';
              res
                .setEncoding('utf8')
                .on('data', (c: string) => {
                  body += c;
                })
                .on('end', () => {
                  resolve({ status: res.statusCode ?? 0, body, connection: res.headers.connection });
                  req.destroy();
                });
            },
          );
          req.on('error', reject);
          req.flushHeaders();
        });
      const max = t.config.limits.maxFileBytes;
      const file = await over(`/v1/sandboxes/${id}/files?path=/workspace/big`, max);
      assert.equal(file.status, 413);
      assert.match(file.body, new RegExp(`the upload is ${max + 1} bytes; the limit is ${max} bytes \\(KILN_MAX_FILE_BYTES\\)`));
      assert.equal(file.connection, 'close');
      const json = await over('/v1/sandboxes', 64 * 1024 * 1024);
      assert.equal(json.status, 413);
      assert.match(json.body, /the request body is over this route's limit of 67108864 bytes; upload big files with PUT/);
    });

    it('the WebSocket start message is checked the same way, and a missing cwd there is CWD_NOT_FOUND too', async () => {
      const first = (start: Record<string, unknown>) =>
        new Promise<{ code: string; message: string }>((resolve, reject) => {
          const ws = new WebSocket(t.client.execSocketUrl(id));
          ws.on('open', () => ws.send(JSON.stringify(start)));
          ws.on('message', (raw) => {
            const m = JSON.parse(String(raw)) as { type: string; code: string; message: string };
            if (m.type === 'error') {
              resolve(m);
              ws.close();
            }
          });
          ws.on('error', reject);
        });
      const bad = await first({ type: 'start', cmd: 5 });
      assert.equal(bad.code, 'INVALID_REQUEST');
      assert.match(bad.message, /^start message field "cmd" must be a string or an array \(got 5\)/);
      const cwd = await first({ type: 'start', cmd: ['pwd'], cwd: '/no/such/dir' });
      assert.equal(cwd.code, 'CWD_NOT_FOUND');
    });

    it('a body that is not JSON says so and where; an over-long id is named as the id, not as a missing route', async () => {
      const res = await fetch(`${t.server.url}/v1/run`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"pack": "shell",}' });
      assert.equal(res.status, 400);
      assert.match(((await res.json()) as { message: string }).message, /^the request body is not valid JSON: .*position 17/);
      const long = await call('GET', `/v1/sandboxes/${'x'.repeat(200)}`);
      assert.equal(long.status, 400);
      assert.match(long.message, /^path parameter "id" must be 1 to 128 characters long \(got 200\)/);
    });

    it('a JSON route sent a form body names the Content-Type it got', async () => {
      const res = await fetch(`${t.server.url}/v1/sandboxes`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'pack=shell' });
      const j = (await res.json()) as { code: string; message: string };
      assert.equal(res.status, 400);
      assert.match(j.message, /takes a JSON body \(Content-Type: application\/json\); this request sent Content-Type: application\/x-www-form-urlencoded/);
    });
  });

  describe('7: user mistakes in files and exec are 4xx with their own codes', () => {
    it('writing a file over a directory is 400 IS_A_DIRECTORY, reading one too', async () => {
      const w = await call('PUT', `/v1/sandboxes/${id}/files?path=/workspace`, undefined, Buffer.from('x'));
      assert.equal(w.status, 400, w.message);
      assert.equal(w.code, 'IS_A_DIRECTORY');
      const r = await call('GET', `/v1/sandboxes/${id}/files?path=/workspace`);
      assert.equal(r.status, 400, r.message);
      assert.equal(r.code, 'IS_A_DIRECTORY');
    });

    it('writing under /usr is 403 PERMISSION_DENIED', async () => {
      const r = await call('PUT', `/v1/sandboxes/${id}/files?path=/usr/bin/evil`, undefined, Buffer.from('x'));
      assert.equal(r.status, 403, r.message);
      assert.equal(r.code, 'PERMISSION_DENIED');
      assert.match(r.message, /\/usr\/bin\/evil/);
    });

    it('a file where a directory is needed is 400 NOT_A_DIRECTORY', async () => {
      assert.equal((await call('PUT', `/v1/sandboxes/${id}/files?path=/workspace/plain.txt`, undefined, Buffer.from('x'))).status, 200);
      const under = await call('PUT', `/v1/sandboxes/${id}/files?path=/workspace/plain.txt/child`, undefined, Buffer.from('x'));
      assert.equal(under.status, 400, under.message);
      assert.equal(under.code, 'NOT_A_DIRECTORY');
      const ls = await call('GET', `/v1/sandboxes/${id}/ls?path=/workspace/plain.txt`);
      assert.equal(ls.status, 400, ls.message);
      assert.equal(ls.code, 'NOT_A_DIRECTORY');
    });

    it('the sandbox is still fine after all of these', async () => {
      const r = await t.client.sandboxes.exec(id, { cmd: 'echo ok' });
      assert.equal(r.stdout, 'ok\n');
    });
  });
});
