/**
 * The sandbox contract, run unchanged on every backend available on the machine: behaviour an
 * untrusted-code service must guarantee whatever isolates the code.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { type BackendName, type KilnClient, KilnError } from '../../sdk/src/index.js';
import { startTestServer, type TestServer, withSandbox } from './fixture.js';
import { tarOf } from './tar.js';

export interface ParityOptions {
  backend: BackendName;
  /** Why the suite cannot run here (skips it with that reason), or undefined. */
  skip?: string;
  /** Scale for slow backends (software-emulated VMs). */
  slow?: number;
}

const isCode = (code: string) => (e: unknown) => e instanceof KilnError && e.code === code;

export function paritySuite(o: ParityOptions): void {
  const slow = o.slow ?? 1;
  describe(`sandbox contract on ${o.backend}`, { skip: o.skip, timeout: 900_000 }, () => {
    let t: TestServer;
    let kiln: KilnClient;
    let shared: string;
    before(async () => {
      t = await startTestServer({ KILN_BACKEND: o.backend });
      kiln = t.client;
      shared = (await kiln.sandboxes.create({ pack: 'python', memoryMib: 256, diskMib: 64 })).id;
    });
    after(async () => {
      await kiln?.sandboxes.delete(shared).catch(() => undefined);
      await t?.close();
    });
    const sh = (cmd: string, extra: Record<string, unknown> = {}) => kiln.sandboxes.exec(shared, { cmd, timeoutMs: 20_000 * slow, ...extra });

    it('runs a one-shot snippet in each pack: 6*7 = 42', async () => {
      const cases: Array<[string, string]> = [
        ['python', 'print(6*7)'],
        ['node', 'console.log(6*7)'],
        ['shell', 'echo $((6*7))'],
        ['go', 'package main\nimport "fmt"\nfunc main() { fmt.Println(6 * 7) }\n'],
      ];
      for (const [pack, code] of cases) {
        const r = await kiln.run({ pack, backend: o.backend, code, timeoutMs: 120_000 });
        assert.equal(r.stdout, '42\n', `${pack}: ${r.stderr}`);
        assert.equal(r.exitCode, 0, pack);
      }
    });

    it('reports exit codes and keeps stderr apart from stdout', async () => {
      const r = await sh('echo out; echo err >&2; exit 7');
      assert.deepEqual([r.exitCode, r.stdout, r.stderr, r.timedOut], [7, 'out\n', 'err\n', false]);
      assert.equal((await sh('true')).exitCode, 0);
      const missing = await sh('exec /nonexistent/binary');
      assert.notEqual(missing.exitCode, 0);
    });

    it('pipes stdin to the program', async () => {
      const r = await kiln.sandboxes.exec(shared, { cmd: ['python3', '-c', 'import sys; d=sys.stdin.read(); print(len(d), d.upper())'], stdin: 'hello kiln' });
      assert.equal(r.stdout, '10 HELLO KILN\n');
    });

    it('reports resource usage', async () => {
      const r = await kiln.sandboxes.exec(shared, { cmd: ['python3', '-c', 'x = bytearray(40*1024*1024); sum(range(2000000))'] });
      assert.equal(r.exitCode, 0);
      assert.ok(r.usage.peakMemoryBytes >= 40 * 1024 * 1024, `peak ${r.usage.peakMemoryBytes}`);
      assert.ok(r.usage.cpuUserMs > 0);
      assert.ok(r.durationMs > 0);
    });

    it('a timeout kills a double-forking tree and says timedOut', async () => {
      const r = await sh('(setsid sh -c "sleep 300" &) ; (sh -c "sleep 301 &") ; sleep 302', { timeoutMs: 1500 * slow });
      assert.equal(r.timedOut, true);
      const ps = await sh('ps -eo args | grep -c "^sleep 30[012]" || true');
      assert.equal(ps.stdout.trim(), '0', 'no sleeper survives the timeout');
    });

    it('leaves no zombies after double forks', async () => {
      await sh('for i in 1 2 3 4 5; do (sh -c "sleep 0.1 &" &); done; sleep 0.5');
      await new Promise((r) => setTimeout(r, 300));
      const z = await sh("ps -eo stat | grep -c '^Z' || true");
      assert.equal(z.stdout.trim(), '0');
    });

    it('caps a flood of output and says outputTruncated', async () => {
      const r = await kiln.sandboxes.exec(shared, { cmd: 'head -c 50000000 /dev/zero | tr "\\0" x', maxOutputBytes: 100_000, timeoutMs: 30_000 * slow });
      assert.equal(r.outputTruncated, true);
      assert.ok(r.stdout.length <= 100_000, `got ${r.stdout.length} bytes`);
    });

    it('runs 50 concurrent execs in one sandbox', async () => {
      const rs = await Promise.all(Array.from({ length: 50 }, (_, i) => sh(`echo ${i}`)));
      for (const [i, r] of rs.entries()) assert.equal(r.stdout, `${i}\n`);
    });

    it('has no network by default', async () => {
      const r = await kiln.sandboxes.exec(shared, {
        cmd: ['python3', '-c', 'import socket\ntry:\n  socket.create_connection(("1.1.1.1", 53), timeout=2); print("connected")\nexcept OSError as e: print("blocked", e.errno)'],
      });
      assert.match(r.stdout, /^blocked/);
      // A microVM has its NIC from boot (eth0), but with no address and no route until the
      // network manager connects it (its host end is down and on no bridge until then).
      const ifs = await sh('cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d " "; echo --; tail -n +2 /proc/net/route; grep -v " lo$" /proc/net/if_inet6; true');
      const [names, routes] = ifs.stdout.split('--\n') as [string, string];
      assert.deepEqual(
        names
          .trim()
          .split('\n')
          .filter((x) => x !== 'lo' && x !== 'eth0'),
        [],
      );
      assert.equal(routes, '', 'no IPv4 route and no IPv6 address off lo');
    });

    it('sees only the image: host files outside it are invisible', async () => {
      const r = await sh('ls /work /root/.npm /var/lib/kiln /etc/kiln-host-marker 2>&1; cat /proc/1/cmdline | tr "\\0" " "');
      assert.doesNotMatch(r.stdout, /main|images|\.sqfs/);
      assert.match(r.stdout, /No such file/);
    });

    it('runs user code without capabilities, and in namespaces also under seccomp', async () => {
      const st = await sh('grep -E "^(CapEff|CapBnd|NoNewPrivs|Seccomp):" /proc/self/status');
      assert.match(st.stdout, /CapEff:\s+0000000000000000/);
      if (o.backend === 'namespace') {
        assert.match(st.stdout, /CapBnd:\s+0000000000000000/);
        assert.match(st.stdout, /NoNewPrivs:\s+1/);
        assert.match(st.stdout, /Seccomp:\s+2/);
        const denied = await sh('unshare -U true 2>&1; echo rc=$?; mount -t tmpfs none /tmp 2>&1; echo rc=$?');
        assert.doesNotMatch(denied.stdout, /rc=0/, denied.stdout);
      }
    });

    it('writes and reads files, and refuses paths that escape', async () => {
      await kiln.sandboxes.writeFile(shared, '/workspace/dir/hello.txt', 'hi there');
      assert.equal(Buffer.from(await kiln.sandboxes.readFile(shared, '/workspace/dir/hello.txt')).toString(), 'hi there');
      await assert.rejects(kiln.sandboxes.readFile(shared, '/workspace/nope.txt'), isCode('FILE_NOT_FOUND'));
      await sh('ln -sf /etc /workspace/etclink');
      await assert.rejects(kiln.sandboxes.writeFile(shared, '/workspace/../../x', 'x'), (e: unknown) => e instanceof KilnError && e.status === 400);
    });

    it("file ops meet the sandbox user's permissions, whatever link the sandbox planted", async () => {
      // The user cannot read /etc/shadow on any backend; a planted link must not change that.
      const before = (await sh('stat -c %s:%u:%a:%Y /etc/shadow')).stdout;
      await sh('ln -sf /etc/shadow /workspace/planted && ln -sfn /etc /workspace/etcdir');
      await assert.rejects(kiln.sandboxes.writeFile(shared, '/workspace/planted', 'root::0:0:99999:7:::\n'), (e: unknown) => e instanceof KilnError && e.status < 500);
      await assert.rejects(kiln.sandboxes.readFile(shared, '/workspace/planted'), (e: unknown) => e instanceof KilnError && e.status < 500);
      const tar = Buffer.from(await kiln.sandboxes.downloadArchive(shared, { path: '/workspace/etcdir', gzip: false })).toString('latin1');
      assert.match(tar, /passwd/);
      assert.doesNotMatch(tar, /:19000:0:99999:7:::/);
      assert.equal((await sh('stat -c %s:%u:%a:%Y /etc/shadow')).stdout, before);
      await sh('rm -f /workspace/planted /workspace/etcdir');
    });

    it('unpacks a tar.gz and rejects archives that escape with ../ or a symlink', async () => {
      const good = gzipSync(tarOf([{ name: 'proj/main.py', body: 'print("from tar")\n' }]));
      const up = await kiln.sandboxes.uploadArchive(shared, good, { path: '/workspace', gzip: true });
      assert.ok(up.files >= 1);
      assert.equal((await sh('python3 /workspace/proj/main.py')).stdout, 'from tar\n');
      const dotdot = tarOf([{ name: '../escape.txt', body: 'x' }]);
      await assert.rejects(kiln.sandboxes.uploadArchive(shared, dotdot, { path: '/workspace/a', gzip: false }), isCode('PATH_ESCAPE'));
      const viaLink = tarOf([
        { name: 'link', symlink: '/etc' },
        { name: 'link/evil', body: 'x' },
      ]);
      await assert.rejects(kiln.sandboxes.uploadArchive(shared, viaLink, { path: '/workspace/b', gzip: false }), isCode('PATH_ESCAPE'));
      assert.equal((await sh('ls /escape.txt /workspace/escape.txt /etc/evil 2>/dev/null | wc -l')).stdout.trim(), '0');
    });

    it('contains memory over the limit: OOM reported, sandbox and service fine', async () => {
      await withSandbox(kiln, { pack: 'python', backend: o.backend, memoryMib: 128 }, async (id) => {
        const r = await kiln.sandboxes.exec(id, { cmd: ['python3', '-c', 'b = []\nwhile True: b.append(bytearray(8*1024*1024))'], timeoutMs: 60_000 * slow });
        assert.notEqual(r.exitCode, 0);
        // The namespace backend counts OOM kills in the sandbox's cgroup, the microVMs (QEMU and
        // Firecracker alike, core/vm-usage.ts) in the guest's own kernel.
        assert.equal(r.oomKilled, true, JSON.stringify(r));
        assert.equal((await kiln.sandboxes.exec(id, { cmd: 'echo alive' })).stdout, 'alive\n');
        // A SIGKILL that is not the OOM killer's is not reported as one.
        const killed = await kiln.sandboxes.exec(id, { cmd: 'kill -9 $$' });
        assert.deepEqual([killed.signal, killed.oomKilled], ['SIGKILL', false], JSON.stringify(killed));
      });
      assert.equal((await kiln.health()).status, 'ok');
    });

    it('contains a fork bomb with the pids limit: neighbours and the host stay fine, delete still works', async () => {
      const bombed = await kiln.sandboxes.create({ pack: 'shell', backend: o.backend });
      try {
        // Background bomb processes outlive the exec (kiln keeps background processes, like servers);
        // the pids limit keeps them inside the sandbox.
        const r = await kiln.sandboxes.exec(bombed.id, { cmd: 'bomb() { bomb | bomb & }; bomb; sleep 2; echo done', timeoutMs: 10_000 * slow });
        assert.match(r.stderr, /fork|resource temporarily unavailable/i);
        assert.equal((await sh('echo neighbour fine')).stdout, 'neighbour fine\n');
        assert.equal((await kiln.health()).status, 'ok');
      } finally {
        await kiln.sandboxes.delete(bombed.id);
      }
      await assert.rejects(kiln.sandboxes.get(bombed.id), isCode('SANDBOX_NOT_FOUND'));
    });

    it('contains a disk fill in the size-limited upper layer', async () => {
      await withSandbox(kiln, { pack: 'shell', backend: o.backend, diskMib: 16, memoryMib: 256 }, async (id) => {
        const r = await kiln.sandboxes.exec(id, { cmd: 'dd if=/dev/zero of=/workspace/big bs=1M count=64 2>&1; echo rc=$?', timeoutMs: 30_000 * slow });
        assert.match(r.stdout, /No space left on device/);
        const du = await kiln.sandboxes.exec(id, { cmd: 'du -m /workspace/big | cut -f1' });
        assert.ok(Number(du.stdout.trim()) <= 16);
      });
    });

    it('answers 400 for an unknown pack and 404 for deleting twice', async () => {
      await assert.rejects(kiln.sandboxes.create({ pack: 'cobol' }), (e: unknown) => e instanceof KilnError && e.status === 400 && e.code === 'UNKNOWN_PACK');
      const sb = await kiln.sandboxes.create({ pack: 'shell', backend: o.backend });
      await kiln.sandboxes.delete(sb.id);
      await assert.rejects(kiln.sandboxes.delete(sb.id), (e: unknown) => e instanceof KilnError && e.status === 404);
    });

    it('runs 20 sandboxes at once', async () => {
      const ids = await Promise.all(Array.from({ length: 20 }, () => kiln.sandboxes.create({ pack: 'shell', backend: o.backend, memoryMib: 64 }).then((s) => s.id)));
      try {
        const rs = await Promise.all(ids.map((id) => kiln.sandboxes.exec(id, { cmd: 'echo $(hostname) ok' })));
        for (const r of rs) assert.match(r.stdout, /ok/);
        assert.equal(new Set(ids).size, 20);
      } finally {
        await Promise.all(ids.map((id) => kiln.sandboxes.delete(id)));
      }
    });
  });
}
