/**
 * Inbound ports on the namespace backend (docs/ports.md): servers in a sandbox without any network
 * (loopback only) reached through the real server's HTTP proxy, a WebSocket through the proxy,
 * the tunnel through `kiln sandbox port-forward`, the token, the errors, and nothing left open.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { KilnClient, KilnError } from '../../sdk/src/index.js';
import { REPO_ROOT } from '../../src/core/config.js';
import { startTestServer, type TestServer } from '../parity/fixture.js';
import { establishedOn, eventually, HTTP_PORT, startServers, WS_PORT } from './port-servers.js';

const TOKEN = 'port-test-token';

describe('inbound ports (namespace)', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 120_000 }, () => {
  let t: TestServer;
  let kiln: KilnClient;
  let id: string;
  before(async () => {
    t = await startTestServer({ KILN_SOCKET: '', KILN_TOKEN: TOKEN });
    kiln = new KilnClient({ baseUrl: t.server.url, token: TOKEN });
    id = (await kiln.sandboxes.create({ pack: 'python' })).id;
    await startServers(kiln, id);
  });
  after(async () => {
    await kiln.sandboxes.delete(id).catch(() => undefined);
    await t.close();
  });

  it('proxies a GET with its path and query, without kiln token, with X-Forwarded-*', async () => {
    const t0 = performance.now();
    const res = await kiln.fetchPort(id, HTTP_PORT, '/info/a%2Fb?x=1&y=two%20words');
    const ms = performance.now() - t0;
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-app'), 'yes');
    assert.equal(res.headers.get('x-kiln-error'), null);
    const body = (await res.json()) as { path: string; headers: Record<string, string> };
    assert.equal(body.path, '/info/a%2Fb?x=1&y=two%20words');
    assert.equal(body.headers.authorization, undefined, 'the kiln token never reaches the sandbox');
    assert.equal(body.headers.host, `127.0.0.1:${HTTP_PORT}`);
    assert.equal(body.headers['x-forwarded-prefix'], `/v1/sandboxes/${id}/ports/${HTTP_PORT}`);
    assert.equal(body.headers['x-forwarded-proto'], 'http');
    assert.equal(body.headers['x-forwarded-host'], new URL(t.server.url).host);
    assert.match(body.headers['x-forwarded-for'] ?? '', /127\.0\.0\.1/);
    const root = (await (await kiln.fetchPort(id, HTTP_PORT, '')).json()) as { path: string };
    assert.equal(root.path, '/');
    const timings: number[] = [];
    for (let i = 0; i < 20; i++) {
      const s = performance.now();
      await (await kiln.fetchPort(id, HTTP_PORT, '/info')).arrayBuffer();
      timings.push(performance.now() - s);
    }
    timings.sort((a, b) => a - b);
    console.log(`proxy GET: first ${ms.toFixed(1)} ms, median of 20 ${timings[10]!.toFixed(1)} ms, p90 ${timings[18]!.toFixed(1)} ms`);
  });

  it('streams a 1 MiB POST body there and back byte-exact', async () => {
    const data = randomBytes(1024 * 1024);
    const res = await kiln.fetchPort(id, HTTP_PORT, '/echo', { method: 'POST', body: data, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(res.status, 201);
    const back = Buffer.from(await res.arrayBuffer());
    assert.equal(back.length, data.length);
    assert.ok(back.equals(data), 'the echoed body differs');
    // kiln parses no body on these paths: JSON passes through as bytes too.
    const json = await kiln.fetchPort(id, HTTP_PORT, '/echo', { method: 'POST', body: '{"a": [1, 2]}', headers: { 'content-type': 'application/json' } });
    assert.equal(await json.text(), '{"a": [1, 2]}');
  });

  it('streams a response as the server writes it', async () => {
    const t0 = performance.now();
    const arrivals: number[] = [];
    let text = '';
    await new Promise<void>((resolve, reject) => {
      const req = request(kiln.portUrl(id, HTTP_PORT, '/stream'), { headers: { authorization: `Bearer ${TOKEN}` } }, (res) => {
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          text += c;
          arrivals.push(performance.now() - t0);
        });
        res.on('end', resolve);
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(text, 'chunk0\nchunk1\nchunk2\n');
    assert.ok(arrivals.at(-1)! - arrivals[0]! >= 450, `chunks arrived within ${arrivals.at(-1)! - arrivals[0]!} ms: buffered, not streamed`);
  });

  it('asks for the token (401) and answers with it', async () => {
    const anon = await fetch(kiln.portUrl(id, HTTP_PORT, '/info'));
    assert.equal(anon.status, 401);
    assert.equal(anon.headers.get('x-kiln-error'), 'UNAUTHORIZED');
    const ok = await fetch(kiln.portUrl(id, HTTP_PORT, '/info'), { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(ok.status, 200);
    await ok.arrayBuffer();
  });

  it('answers 502 PORT_UNREACHABLE for a port nobody listens on, 400 for a bad port, 404 for no sandbox', async () => {
    const e = await kiln.fetchPort(id, 8099, '/').catch((x: unknown) => x);
    assert.ok(e instanceof KilnError, String(e));
    assert.equal(e.status, 502);
    assert.equal(e.code, 'PORT_UNREACHABLE');
    assert.match(e.message, new RegExp(`port 8099 in sandbox ${id}`));
    for (const bad of ['0', '65536', 'abc']) {
      const res = await fetch(`${t.server.url}/v1/sandboxes/${id}/ports/${bad}/`, { headers: { authorization: `Bearer ${TOKEN}` } });
      assert.equal(res.status, 400, bad);
      assert.match(((await res.json()) as { message: string }).message, /port/);
    }
    const gone = await kiln.fetchPort('sb-nope', HTTP_PORT, '/').catch((x: unknown) => x);
    assert.equal((gone as KilnError).code, 'SANDBOX_NOT_FOUND');
  });

  it('passes a WebSocket through the proxy (token as access_token, not forwarded)', async () => {
    const ws = new WebSocket(kiln.portSocketUrl(id, WS_PORT, '/chat?room=1'));
    let path: string | undefined;
    ws.once('upgrade', (res: { headers: Record<string, string> }) => {
      path = res.headers['x-path'];
    });
    await once(ws, 'open'); // 'upgrade' comes just before it
    assert.equal(path, '/chat?room=1');
    ws.send('hello');
    const [text] = (await once(ws, 'message')) as [Buffer];
    assert.equal(text.toString(), 'hello');
    const big = randomBytes(200_000);
    ws.send(big);
    const [back] = (await once(ws, 'message')) as [Buffer];
    assert.ok(Buffer.from(back).equals(big));
    ws.close();
    await once(ws, 'close');
    await eventually(
      `connections on ${WS_PORT} after the close`,
      () => establishedOn(kiln, id, WS_PORT),
      (n) => n === 0,
    );

    const anon = new WebSocket(kiln.portSocketUrl(id, WS_PORT, '/').replace(/access_token=[^&]*/, ''));
    anon.on('error', () => undefined); // terminate() before the upgrade reports itself as an error
    const [, res] = (await once(anon, 'unexpected-response')) as [unknown, { statusCode: number }];
    assert.equal(res.statusCode, 401);
    anon.terminate();

    const nobody = new WebSocket(kiln.portSocketUrl(id, 8099, '/'));
    nobody.on('error', () => undefined);
    const [, refused] = (await once(nobody, 'unexpected-response')) as [unknown, { statusCode: number }];
    assert.equal(refused.statusCode, 502);
    nobody.terminate();
  });

  it('forwards a local port with kiln sandbox port-forward, and stops cleanly on Ctrl-C', async () => {
    const cli = spawn(join(REPO_ROOT, 'bin/kiln'), ['sandbox', 'port-forward', id, `0:${HTTP_PORT}`], {
      env: { ...process.env, KILN_URL: t.server.url, KILN_TOKEN: TOKEN },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      const local = await forwardedPort(cli);
      const body = await new Promise<string>((resolve, reject) => {
        request(`http://127.0.0.1:${local}/info?via=cli`, (res) => {
          let s = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => {
            s += c;
          });
          res.on('end', () => resolve(s));
        })
          .on('error', reject)
          .end();
      });
      assert.equal((JSON.parse(body) as { path: string }).path, '/info?via=cli');
      cli.kill('SIGINT');
      const [code] = (await once(cli, 'exit')) as [number | null];
      assert.equal(code, 0);
      await eventually(
        `connections on ${HTTP_PORT} after port-forward`,
        () => establishedOn(kiln, id, HTTP_PORT),
        (n) => n === 0,
      );
    } finally {
      cli.kill('SIGKILL');
    }
  });

  it('closes the sandbox side when the client goes away mid-answer', async () => {
    await new Promise<void>((resolve, reject) => {
      const req = request(kiln.portUrl(id, HTTP_PORT, '/stream'), { headers: { authorization: `Bearer ${TOKEN}` } }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', (e) => (req.destroyed ? undefined : reject(e)));
      req.end();
    });
    await eventually(
      `connections on ${HTTP_PORT} after the client left`,
      () => establishedOn(kiln, id, HTTP_PORT),
      (n) => n === 0,
    );
  });

  it('aborts an answer cleanly when the sandbox goes away mid-request', async () => {
    const other = (await kiln.sandboxes.create({ pack: 'python' })).id;
    await startServers(kiln, other);
    const outcome = await new Promise<string>((resolve) => {
      const req = request(kiln.portUrl(other, HTTP_PORT, '/stream'), { headers: { authorization: `Bearer ${TOKEN}` } }, (res) => {
        res.once('data', () => void kiln.sandboxes.delete(other));
        res.on('end', () => resolve(res.complete ? 'complete' : 'incomplete'));
        res.on('error', () => resolve('aborted'));
        res.on('aborted', () => resolve('aborted'));
      });
      req.on('error', () => resolve('aborted'));
      req.end();
    });
    assert.notEqual(outcome, 'complete');
    assert.equal((await kiln.health()).status, 'ok');
  });
});

/** Reads "Forwarding 127.0.0.1:PORT -> …" from the CLI's stdout. */
async function forwardedPort(cli: ChildProcess): Promise<number> {
  let out = '';
  let err = '';
  cli.stderr?.on('data', (c: Buffer) => {
    err += c.toString();
  });
  return new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`port-forward printed nothing within 20 s: ${out} ${err}`)), 20_000);
    cli.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /Forwarding 127\.0\.0\.1:(\d+) -> sandbox \S+:\d+/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    cli.once('exit', (code) => reject(new Error(`port-forward exited ${code}: ${err}`)));
  });
}
