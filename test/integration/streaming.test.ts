/** Streaming exec (NDJSON), interactive exec (WebSocket + tty), the Unix socket, and the CLI. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import WebSocket from 'ws';
import type { ExecEvent } from '../../sdk/src/index.js';
import { REPO_ROOT } from '../../src/core/config.js';
import { startTestServer, type TestServer } from '../parity/fixture.js';

const run = promisify(execFile);

describe('streaming and interactive exec', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 120_000 }, () => {
  let t: TestServer;
  let id: string;
  before(async () => {
    t = await startTestServer({ KILN_SOCKET: '' });
    id = (await t.client.sandboxes.create({ pack: 'python' })).id;
  });
  after(async () => {
    await t.client.sandboxes.delete(id).catch(() => undefined);
    await t.close();
  });

  it('streams output as it is produced, before the command ends', async () => {
    const events: Array<ExecEvent & { at: number }> = [];
    const t0 = performance.now();
    for await (const ev of t.client.sandboxes.execStream(id, { cmd: ['python3', '-c', 'import time\nprint("first", flush=True)\ntime.sleep(0.6)\nprint("second")'] })) {
      events.push({ ...ev, at: performance.now() - t0 });
    }
    const first = events.find((e) => e.type === 'stdout' && e.data.includes('first'))!;
    const result = events.find((e) => e.type === 'result')!;
    assert.ok(first, 'first line streamed');
    assert.ok(result.at - first.at >= 400, `first line arrived ${result.at - first.at} ms before the end`);
    assert.equal(events[0]!.type, 'started');
    assert.equal((result as { exitCode: number }).exitCode, 0);
  });

  it('streams a one-shot run and ends with the result', async () => {
    const out: string[] = [];
    let exit: number | null | undefined;
    for await (const ev of t.client.runStream({ pack: 'python', code: 'print(6*7)' })) {
      if (ev.type === 'stdout') out.push(ev.data);
      if (ev.type === 'result') exit = ev.exitCode;
    }
    assert.equal(out.join(''), '42\n');
    assert.equal(exit, 0);
  });

  it('runs programs small (inline with the exec) and large (uploaded first) alike', async () => {
    const small = await t.client.run({ pack: 'python', code: 'print(len(open(__file__).read()))' });
    assert.equal(small.stdout, `${'print(len(open(__file__).read()))'.length}\n`);
    const big = `#${'x'.repeat(300_000)}\nprint(len(open(__file__).read()))`;
    const r = await t.client.run({ pack: 'python', code: big });
    assert.equal(r.stdout, `${big.length}\n`, r.stderr);
    const escaped = await t.client.run({ pack: 'python', files: [{ path: '../x.py', content: 'print(1)' }], entrypoint: '../x.py' }).catch((e: Error) => e);
    assert.match(String(escaped), /PATH_ESCAPE|must be relative/);
  });

  it('reports errors inside the stream as a final error event', async () => {
    const events: ExecEvent[] = [];
    for await (const ev of t.client.sandboxes.execStream(id, { cmd: ['/no/such/program'] })) events.push(ev);
    const last = events.at(-1)!;
    assert.equal(last.type, 'error');
    assert.equal((last as { code: string }).code, 'EXEC_FAILED');
  });

  it('runs an interactive shell on a tty over WebSocket', async () => {
    const ws = new WebSocket(t.client.execSocketUrl(id));
    const got: string[] = [];
    let result: Record<string, unknown> | undefined;
    await new Promise<void>((resolve, reject) => {
      ws.on('open', () => ws.send(JSON.stringify({ type: 'start', cmd: ['/bin/sh'], tty: { cols: 100, rows: 30 } })));
      ws.on('message', (raw) => {
        const m = JSON.parse(String(raw)) as { type: string; data?: string };
        if (m.type === 'started') {
          ws.send(JSON.stringify({ type: 'stdin', data: 'stty size; echo hi-$((40+2))\n' }));
          ws.send(JSON.stringify({ type: 'stdin', data: 'exit 3\n' }));
        }
        if (m.type === 'stdout') got.push(m.data!);
        if (m.type === 'result') result = m;
        if (m.type === 'error') reject(new Error(String(raw)));
      });
      ws.on('close', () => resolve());
      ws.on('error', reject);
    });
    const text = got.join('');
    assert.match(text, /30 100/);
    assert.match(text, /hi-42/);
    assert.equal(result?.exitCode, 3);
  });

  it('rejects a WebSocket message before start with a clear error', async () => {
    const ws = new WebSocket(t.client.execSocketUrl(id));
    const msg = await new Promise<string>((resolve) => {
      ws.on('open', () => ws.send(JSON.stringify({ type: 'stdin', data: 'x' })));
      ws.on('message', (raw) => resolve(String(raw)));
    });
    assert.match(msg, /"code":"INVALID_REQUEST"/);
    ws.close();
  });

  it('the CLI runs a snippet against the service and passes the exit code through', async () => {
    const env = { ...process.env, KILN_URL: t.server.url };
    const ok = await run(join(REPO_ROOT, 'bin/kiln'), ['run', 'python', '-c', 'print(6*7)'], { env });
    assert.equal(ok.stdout, '42\n');
    await assert.rejects(run(join(REPO_ROOT, 'bin/kiln'), ['run', 'shell', '-c', 'echo oops >&2; exit 4'], { env }), (e: { code: number; stderr: string }) => e.code === 4 && /oops/.test(e.stderr));
    const ls = await run(join(REPO_ROOT, 'bin/kiln'), ['sandbox', 'ls'], { env });
    assert.match(ls.stdout, new RegExp(id));
  });
});

describe('trusted Unix socket', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 60_000 }, () => {
  it('serves the API on KILN_SOCKET without a token while TCP requires one', async () => {
    const sock = join(REPO_ROOT, '.kiln', `test-${process.pid}.sock`);
    const t = await startTestServer({ KILN_SOCKET: sock, KILN_TOKEN: 'tok', KILN_HOST: '127.0.0.1' });
    try {
      const status = await new Promise<number>((resolve, reject) => {
        request({ socketPath: sock, path: '/v1/packs' }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        })
          .on('error', reject)
          .end();
      });
      assert.equal(status, 200);
      const tcp = await fetch(`${t.server.url}/v1/packs`);
      assert.equal(tcp.status, 401);
    } finally {
      await t.close();
    }
  });
});
