/** Hybrid vsock CONNECT/OK handshake and its failure modes, against fake Unix sockets; reconnection. */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { connectAgent } from '../../src/backends/firecracker/agent-link.js';
import { connectHybridVsock } from '../../src/backends/firecracker/vsock.js';
import { KilnError } from '../../src/core/errors.js';
import { type FakeAgentLog, serveFakeAgent } from './fake-agent.js';
import { fixture, READY } from './helpers.js';

async function withServer(onConn: (s: Socket, n: number, line: string) => void, fn: (path: string, server: Server) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'kfc-vs-'));
  const path = join(dir, 'v.sock');
  let n = 0;
  const conns = new Set<Socket>();
  const server = createServer((s) => {
    conns.add(s);
    s.on('error', () => undefined);
    let buf = '';
    s.on('data', function first(c: Buffer) {
      buf += c.toString();
      if (!buf.includes('\n')) return;
      s.removeListener('data', first);
      onConn(s, ++n, buf.slice(0, buf.indexOf('\n')));
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  try {
    await fn(path, server);
  } finally {
    for (const c of conns) c.destroy();
    server.close();
    await rm(dir, { recursive: true, force: true });
  }
}

async function failure(p: Promise<unknown>): Promise<KilnError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  assert.ok(e instanceof KilnError, `expected KilnError, got ${String(e)}`);
  return e;
}

test('OK: sends CONNECT 1024, reads OK <port>, hands bytes after the OK line to the next reader', async () => {
  let seen = '';
  await withServer(
    (s, _n, line) => {
      seen = line;
      s.write('OK 1073741824\nHELLO-FROM-AGENT');
    },
    async (path) => {
      const r = await connectHybridVsock({ udsPath: path, timeoutMs: 1_000 });
      assert.equal(seen, 'CONNECT 1024');
      assert.equal(r.hostPort, 1_073_741_824);
      assert.equal(r.attempts, 1);
      const data = await new Promise<string>((resolve) => {
        r.socket.once('data', (c: Buffer) => resolve(c.toString()));
        r.socket.resume();
      });
      assert.equal(data, 'HELLO-FROM-AGENT');
      r.socket.destroy();
    },
  );
});

test('retries while Firecracker closes the connection (guest not listening yet), then succeeds', async () => {
  await withServer(
    (s, n) => {
      if (n < 4) s.destroy();
      else s.write('OK 5\n');
    },
    async (path) => {
      const r = await connectHybridVsock({ udsPath: path, timeoutMs: 2_000, retryIntervalMs: 5 });
      assert.equal(r.attempts, 4);
      r.socket.destroy();
    },
  );
});

test('OK split across packets is still read correctly', async () => {
  await withServer(
    (s) => {
      s.write('O');
      setTimeout(() => s.write('K 77'), 10);
      setTimeout(() => s.write('\n'), 20);
    },
    async (path) => {
      const r = await connectHybridVsock({ udsPath: path, timeoutMs: 1_000 });
      assert.equal(r.hostPort, 77);
      r.socket.destroy();
    },
  );
});

test('no OK within the deadline: a BOOT_FAILED error that says how long and how often it tried', async () => {
  await withServer(
    () => {
      /* silent: never answers */
    },
    async (path) => {
      const t0 = Date.now();
      const e = await failure(connectHybridVsock({ udsPath: path, timeoutMs: 300, attemptTimeoutMs: 100 }));
      assert.equal(e.code, 'BOOT_FAILED');
      assert.match(e.message, /did not accept a vsock connection on port 1024 within 300 ms \(\d+ attempts; last: no "OK" line within \d+ ms\)/);
      assert.ok(Date.now() - t0 < 1_500);
    },
  );
});

test('always closed: the deadline error says Firecracker closed the connection', async () => {
  await withServer(
    (s) => s.destroy(),
    async (path) => {
      const e = await failure(connectHybridVsock({ udsPath: path, timeoutMs: 200, retryIntervalMs: 10 }));
      assert.match(e.message, /closed the connection without "OK" \(the guest is not listening yet\)/);
    },
  );
});

test('garbage instead of OK: AGENT_PROTOCOL at once, no retries', async () => {
  await withServer(
    (s) => s.write('HTTP/1.1 400 Bad Request\r\n'),
    async (path) => {
      const e = await failure(connectHybridVsock({ udsPath: path, timeoutMs: 2_000 }));
      assert.equal(e.code, 'AGENT_PROTOCOL');
      assert.match(e.message, /expected "OK <port>", got "HTTP\/1.1 400 Bad Request\\r"/);
    },
  );
  await withServer(
    (s) => s.write('x'.repeat(100)),
    async (path) => {
      const e = await failure(connectHybridVsock({ udsPath: path, timeoutMs: 2_000 }));
      assert.match(e.message, /expected "OK <port>", got "x{64}"…/);
    },
  );
});

test('socket gone: a clear error naming the missing socket; dead VM stops the retries', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kfc-vs-'));
  try {
    const e = await failure(connectHybridVsock({ udsPath: join(dir, 'gone.sock'), timeoutMs: 1_000 }));
    assert.match(e.message, /gone\.sock does not exist \(Firecracker is not running/);
    const d = await failure(connectHybridVsock({ udsPath: join(dir, 'gone.sock'), timeoutMs: 1_000, isAlive: () => false }));
    assert.match(d.message, /microVM exited while kiln waited for its agent/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the agent appears late: boot waits through refused CONNECTs', async () => {
  const f = await fixture({ backend: { snapshots: false }, fake: { refuseConnects: 5 } });
  try {
    const sb = await f.backend.create(f.spec('sb-late'), READY);
    assert.equal(f.launcher.instances[0]!.connectAttempts, 6);
    await sb.destroy();
  } finally {
    await f.close();
  }
});

test('reconnection: a dropped agent connection is re-established while the VM lives; a dead VM is reported', async () => {
  const f = await fixture({ backend: { snapshots: false } });
  try {
    const sb = await f.backend.create(f.spec('sb-rc'), READY);
    const fake = f.launcher.instances[0]!;
    const first = sb.agent;
    fake.dropVsockConnections();
    for (let i = 0; i < 100 && sb.agent === first; i++) await new Promise((r) => setTimeout(r, 10));
    assert.notEqual(sb.agent, first, 'a new agent connection');
    assert.equal(sb.details.agentReconnects, 1);
    assert.ok((await sb.agent.ping()).rttMs >= 0);
    assert.deepEqual(fake.agentLog.ops.filter((o) => o === 'hello').length, 2);

    const exited = new Promise<string>((r) => sb.onExit(r));
    fake.exit('killed by SIGSEGV');
    assert.match(await exited, /Firecracker killed by SIGSEGV|agent/);
    await sb.destroy();
  } finally {
    await f.close();
  }
});

test("a restored clone's sync rides on the hello; an agent that predates that gets the sync op before connect returns", async () => {
  for (const helloSync of [true, false]) {
    const log: FakeAgentLog = { ops: [], syncs: [], helloSync };
    await withServer(
      (s) => {
        s.write('OK 9\n');
        serveFakeAgent(s, log);
      },
      async (path) => {
        const agent = await connectAgent({ udsPath: path, timeoutMs: 2_000, sync: true });
        assert.deepEqual(agent.hello.sync, { reseeded: true, clockSet: true });
        assert.deepEqual(log.ops, helloSync ? ['hello'] : ['hello', 'sync']);
        assert.equal(log.syncs.length, 1);
        assert.equal(log.syncs[0]!.onHello, helloSync);
        assert.equal(log.syncs[0]!.entropyBytes, 64);
        assert.ok(Math.abs(log.syncs[0]!.wallClockMs - Date.now()) < 5_000);
        agent.close();
      },
    );
  }
});
