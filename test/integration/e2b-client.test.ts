/**
 * The unmodified `e2b` npm client (pinned in package.json) against kiln: apiUrl and sandboxUrl
 * both point at kiln's own listener, the API key is a kiln API key. Real bwrap sandboxes of the
 * base pack (E2B's default "base" template).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { AuthenticationError, CommandExitError, FilesystemEventType, NotFoundError, Sandbox, SandboxNotFoundError, TimeoutError } from 'e2b';
import { startTestServer, type TestServer } from '../parity/fixture.js';

const ADMIN = 'admin-token-for-e2b-tests';

describe('the e2b client against kiln (namespace backend, real HTTP)', () => {
  let ts: TestServer;
  let a: { apiKey: string; apiUrl: string; sandboxUrl: string };
  let b: { apiKey: string; apiUrl: string; sandboxUrl: string };
  let sbx: Sandbox;

  const createKey = async (name: string): Promise<string> => {
    const r = await fetch(`${ts.server.url}/v1/keys`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: JSON.stringify({ name }) });
    assert.equal(r.status, 201);
    return ((await r.json()) as { secret: string }).secret;
  };

  before(async () => {
    ts = await startTestServer({ KILN_TOKEN: ADMIN, KILN_DATABASE_URL: 'memory://' });
    const url = ts.server.url;
    a = { apiKey: await createKey('e2b-a'), apiUrl: url, sandboxUrl: url };
    b = { apiKey: await createKey('e2b-b'), apiUrl: url, sandboxUrl: url };
    sbx = await Sandbox.create('base', { ...a, envs: { FOO: 'from-create' }, metadata: { purpose: 'e2b-test', 'not a label!': 'kept' }, timeoutMs: 120_000 });
  });
  after(async () => {
    await sbx?.kill().catch(() => undefined);
    await ts?.close();
  });

  it('runs commands: stdout, stderr, exit codes as CommandExitError, envs (create and run), cwd', async () => {
    const r = await sbx.commands.run('echo hi; echo oops >&2');
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, 'hi\n');
    assert.equal(r.stderr, 'oops\n');

    await assert.rejects(sbx.commands.run('echo partial; exit 3'), (e: unknown) => {
      assert.ok(e instanceof CommandExitError, String(e));
      assert.equal(e.exitCode, 3);
      assert.equal(e.stdout, 'partial\n');
      return true;
    });

    const env = await sbx.commands.run('echo "$FOO $BAR"', { envs: { BAR: 'from-run' } });
    assert.equal(env.stdout, 'from-create from-run\n');
    assert.equal((await sbx.commands.run('pwd', { cwd: '/tmp' })).stdout, '/tmp\n');
  });

  it('streams output to callbacks', async () => {
    const seen: string[] = [];
    await sbx.commands.run('for i in 1 2 3; do echo line$i; sleep 0.1; done', { onStdout: (d) => void seen.push(d) });
    assert.equal(seen.join(''), 'line1\nline2\nline3\n');
  });

  it('background commands: listed, killed, and wait() reports the kill', async () => {
    const h = await sbx.commands.run('sleep 60', { background: true });
    assert.ok(h.pid > 0);
    const listed = await sbx.commands.list();
    assert.ok(
      listed.some((p) => p.pid === h.pid),
      JSON.stringify(listed),
    );
    assert.equal(await h.kill(), true);
    await assert.rejects(h.wait(), CommandExitError);
    assert.equal(
      (await sbx.commands.list()).some((p) => p.pid === h.pid),
      false,
    );
    assert.equal(await sbx.commands.kill(h.pid), false, 'a gone process is not found');
  });

  it('stdin: sendStdin and closeStdin to a background command', async () => {
    const h = await sbx.commands.run('cat', { background: true, stdin: true });
    await sbx.commands.sendStdin(h.pid, 'hello ');
    await sbx.commands.sendStdin(h.pid, 'stdin\n');
    await sbx.commands.closeStdin(h.pid);
    const r = await h.wait();
    assert.equal(r.stdout, 'hello stdin\n');
  });

  it('connects to a running command from another handle', async () => {
    const h = await sbx.commands.run('sleep 0.5; echo late', { background: true });
    const again = await sbx.commands.connect(h.pid);
    const r = await again.wait();
    assert.equal(r.stdout, 'late\n');
  });

  it('pty: a terminal session gets input and answers through onData', async () => {
    let out = '';
    const term = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => void (out += Buffer.from(d).toString()) });
    await sbx.pty.resize(term.pid, { cols: 100, rows: 30 });
    await sbx.pty.sendInput(term.pid, new TextEncoder().encode('stty size; echo "pty-$((40+2))"; exit\n'));
    await term.wait().catch(() => undefined);
    assert.match(out, /30 100/);
    assert.match(out, /pty-42/);
  });

  it('files: write, read, list, makeDir, rename, exists, remove, getInfo', async () => {
    const info = await sbx.files.write('/workspace/notes/a.txt', 'alpha');
    assert.equal(info.path, '/workspace/notes/a.txt');
    assert.equal(await sbx.files.read('/workspace/notes/a.txt'), 'alpha');
    assert.deepEqual(await sbx.files.read('/workspace/notes/a.txt', { format: 'bytes' }), new Uint8Array(Buffer.from('alpha')));
    assert.equal(await sbx.files.read('notes/a.txt'), 'alpha', 'relative to the home folder');

    const many = await sbx.files.write([
      { path: '/workspace/many/1.txt', data: 'one' },
      { path: '/workspace/many/2.txt', data: new Blob(['two']) },
    ]);
    assert.equal(many.length, 2);
    assert.equal((await sbx.commands.run('cat /workspace/many/1.txt /workspace/many/2.txt')).stdout, 'onetwo');

    const entries = await sbx.files.list('/workspace/notes');
    assert.deepEqual(
      entries.map((e) => [e.name, e.type, e.size]),
      [['a.txt', 'file', 5]],
    );
    assert.equal(await sbx.files.makeDir('/workspace/d/e'), true);
    assert.equal(await sbx.files.makeDir('/workspace/d/e'), false, 'an existing folder');
    const deep = await sbx.files.list('/workspace/d', { depth: 2 });
    assert.deepEqual(
      deep.map((e) => [e.path, e.type]),
      [['/workspace/d/e', 'dir']],
    );
    const moved = await sbx.files.rename('/workspace/notes/a.txt', '/workspace/d/b.txt');
    assert.equal(moved.path, '/workspace/d/b.txt');
    assert.equal(await sbx.files.exists('/workspace/notes/a.txt'), false);
    assert.equal(await sbx.files.exists('/workspace/d/b.txt'), true);
    const st = await sbx.files.getInfo('/workspace/d/b.txt');
    assert.equal(st.type, 'file');
    assert.equal(st.size, 5);
    await sbx.files.remove('/workspace/d');
    assert.equal(await sbx.files.exists('/workspace/d'), false);
    await assert.rejects(sbx.files.read('/workspace/nope.txt'), NotFoundError);
  });

  it('watchDir reports a created, a written and a removed file', async () => {
    await sbx.files.makeDir('/workspace/watched');
    const seen: string[] = [];
    let done!: () => void;
    const removed = new Promise<void>((resolve) => {
      done = resolve;
    });
    const handle = await sbx.files.watchDir('/workspace/watched', (ev) => {
      seen.push(`${ev.type}:${ev.name}`);
      if (ev.type === FilesystemEventType.REMOVE) done();
    });
    await sbx.files.write('/workspace/watched/w.txt', 'one');
    await new Promise((r) => setTimeout(r, 500));
    await sbx.files.write('/workspace/watched/w.txt', 'three');
    await new Promise((r) => setTimeout(r, 500));
    await sbx.files.remove('/workspace/watched/w.txt');
    await removed;
    await handle.stop();
    assert.ok(seen.includes('create:w.txt') && seen.filter((e) => e === 'write:w.txt').length >= 2 && seen.includes('remove:w.txt'), seen.join(' '));
  });

  it("polling watchers (E2B's Python client): CreateWatcher, GetWatcherEvents, RemoveWatcher over Connect JSON", async () => {
    const token = (sbx as unknown as { envdAccessToken: string }).envdAccessToken;
    const rpc = async (method: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> => {
      const r = await fetch(`${ts.server.url}/filesystem.Filesystem/${method}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '49983', 'X-Access-Token': token },
        body: JSON.stringify(body),
      });
      return { status: r.status, json: (await r.json()) as Record<string, unknown> };
    };
    await sbx.files.makeDir('/workspace/polled');
    const created = await rpc('CreateWatcher', { path: '/workspace/polled' });
    assert.equal(created.status, 200, JSON.stringify(created.json));
    const watcherId = created.json.watcherId as string;
    await sbx.files.write('/workspace/polled/p.txt', 'x');
    await new Promise((r) => setTimeout(r, 700));
    const got = await rpc('GetWatcherEvents', { watcherId });
    assert.deepEqual(
      (got.json.events as Array<{ name: string; type: string }>).map((e) => `${e.type}:${e.name}`),
      ['EVENT_TYPE_CREATE:p.txt', 'EVENT_TYPE_WRITE:p.txt'],
    );
    assert.equal((await rpc('RemoveWatcher', { watcherId })).status, 200);
    const gone = await rpc('GetWatcherEvents', { watcherId });
    assert.equal(gone.status, 404);
    assert.equal(gone.json.code, 'not_found');
  });

  it('getInfo, setTimeout, list (with metadata filter), connect', async () => {
    const info = await sbx.getInfo();
    assert.equal(info.sandboxId, sbx.sandboxId);
    assert.equal(info.templateId, 'base');
    assert.deepEqual(info.metadata, { purpose: 'e2b-test', 'not a label!': 'kept' });
    assert.equal(info.state, 'running');
    const before = info.endAt.getTime();
    await sbx.setTimeout(600_000);
    const later = (await sbx.getInfo()).endAt.getTime();
    assert.ok(later > before + 60_000, `${later} vs ${before}`);

    const page = await Sandbox.list({ ...a, query: { metadata: { purpose: 'e2b-test' } } }).nextItems();
    assert.deepEqual(
      page.map((s) => s.sandboxId),
      [sbx.sandboxId],
    );
    assert.deepEqual(await Sandbox.list({ ...a, query: { metadata: { purpose: 'other' } } }).nextItems(), []);
    const byOddKey = await Sandbox.list({ ...a, query: { metadata: { 'not a label!': 'kept' } } }).nextItems();
    assert.deepEqual(
      byOddKey.map((s) => s.sandboxId),
      [sbx.sandboxId],
      'metadata that is not a kiln label filters too',
    );

    const same = await Sandbox.connect(sbx.sandboxId, a);
    assert.equal((await same.commands.run('echo $FOO')).stdout, 'from-create\n');
  });

  it("another key's sandbox is invisible: not listed, not found, not killed", async () => {
    assert.deepEqual(await Sandbox.list(b).nextItems(), []);
    await assert.rejects(Sandbox.getInfo(sbx.sandboxId, b), SandboxNotFoundError);
    await assert.rejects(Sandbox.connect(sbx.sandboxId, b), SandboxNotFoundError);
    assert.equal(await Sandbox.kill(sbx.sandboxId, b), false);
    assert.equal(await sbx.isRunning(), true);
  });

  it('refuses an unknown template and a wrong API key, E2B-style', async () => {
    await assert.rejects(Sandbox.create('no-such-template', a), (e: Error) => /template "no-such-template" not found/.test(e.message));
    await assert.rejects(Sandbox.create('base', { ...a, apiKey: 'kiln_wrong' }), AuthenticationError);
    await assert.rejects(Sandbox.list({ ...a, apiKey: 'kiln_wrong' }).nextItems(), AuthenticationError);
  });

  it("pause is kiln's: the sandbox is listed as paused, and connect resumes it with its files", async () => {
    const p = await Sandbox.create('base', { ...a, metadata: { batch: 'pause' }, timeoutMs: 60_000 });
    try {
      await p.files.write('kept.txt', 'still here');
      await p.pause();
      const paused = await Sandbox.list({ ...a, query: { metadata: { batch: 'pause' }, state: ['paused'] } }).nextItems();
      assert.deepEqual(
        paused.map((x) => [x.sandboxId, x.state]),
        [[p.sandboxId, 'paused']],
      );
      assert.deepEqual(await Sandbox.list({ ...a, query: { metadata: { batch: 'pause' }, state: ['running'] } }).nextItems(), []);
      const back = await Sandbox.connect(p.sandboxId, a);
      assert.equal((await back.commands.run('cat kept.txt')).stdout, 'still here');
      assert.equal((await back.getInfo()).state, 'running');
    } finally {
      await p.kill().catch(() => undefined);
    }
  });

  it('a data-plane request without the access token is refused', async () => {
    const r = await fetch(`${ts.server.url}/files?path=/etc/hostname`, { headers: { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '49983' } });
    assert.equal(r.status, 401);
    assert.equal(((await r.json()) as { code: number }).code, 401);
    const ci = await fetch(`${ts.server.url}/execute`, { method: 'POST', headers: { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '49999' } });
    assert.equal(ci.status, 401, 'the code interpreter checks the token before the body');
  });

  it('a silent command gets keepalive events on its stream', async () => {
    const token = (sbx as unknown as { envdAccessToken: string }).envdAccessToken;
    const body = JSON.stringify({ process: { cmd: '/bin/bash', args: ['-c', 'sleep 2.5; echo done'] }, stdin: false });
    const frame = Buffer.alloc(5 + Buffer.byteLength(body));
    frame.writeUInt32BE(Buffer.byteLength(body), 1);
    frame.write(body, 5);
    const r = await fetch(`${ts.server.url}/process.Process/Start`, {
      method: 'POST',
      headers: {
        'content-type': 'application/connect+json',
        'E2b-Sandbox-Id': sbx.sandboxId,
        'E2b-Sandbox-Port': '49983',
        'X-Access-Token': token,
        'Keepalive-Ping-Interval': '1',
      },
      body: frame,
    });
    assert.equal(r.status, 200);
    const raw = Buffer.from(await r.arrayBuffer());
    const kinds: string[] = [];
    for (let at = 0; at < raw.length; ) {
      const len = raw.readUInt32BE(at + 1);
      const msg = JSON.parse(raw.subarray(at + 5, at + 5 + len).toString()) as { event?: Record<string, unknown> };
      if (msg.event) kinds.push(Object.keys(msg.event)[0]!);
      at += 5 + len;
    }
    assert.equal(kinds[0], 'start');
    assert.ok(kinds.filter((k) => k === 'keepalive').length >= 2, kinds.join(','));
    assert.deepEqual(kinds.slice(-2), ['data', 'end']);
  });

  it('several sandboxes at once: each runs its own commands and files, and each is listed', async () => {
    const many = await Promise.all([1, 2, 3].map((n) => Sandbox.create('base', { ...a, envs: { N: String(n) }, metadata: { batch: 'several' }, timeoutMs: 60_000 })));
    try {
      const outs = await Promise.all(
        many.map(async (s) => {
          await s.files.write('n.txt', `file of ${s.sandboxId}`);
          return (await s.commands.run('echo $N; cat n.txt')).stdout;
        }),
      );
      assert.deepEqual(
        outs,
        many.map((s, i) => `${i + 1}\nfile of ${s.sandboxId}`),
      );
      const listed = await Sandbox.list({ ...a, query: { metadata: { batch: 'several' } } }).nextItems();
      assert.deepEqual(listed.map((x) => x.sandboxId).sort(), many.map((s) => s.sandboxId).sort());
    } finally {
      await Promise.all(many.map((s) => s.kill()));
    }
  });

  it('kill: the sandbox is gone for the client', async () => {
    const other = await Sandbox.create('base', { ...a, timeoutMs: 60_000 });
    assert.equal(await other.kill(), true);
    await assert.rejects(other.getInfo(), SandboxNotFoundError);
    // The data plane answers 502 for a gone sandbox, as E2B's proxy does; the client names it.
    await assert.rejects(other.commands.run('echo hi'), SandboxNotFoundError);
    await assert.rejects(other.files.read('/etc/hostname'), TimeoutError);
    assert.equal(await Sandbox.kill(other.sandboxId, a), false);
  });
});
