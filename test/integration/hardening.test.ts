/**
 * The namespace sandbox's boundary, tried from inside as an attacker would (issue #12): socket
 * families, descriptors inherited by the service, /dev and /dev/shm against the disk cap, and the
 * host's /proc facts. Real server, real bwrap, real images.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { KilnClient } from '../../sdk/src/index.js';
import { REPO_ROOT } from '../../src/core/config.js';
import { startTestServer, type TestServer, withSandbox } from '../parity/fixture.js';

const execFileAsync = promisify(execFile);
const skip = process.getuid?.() === 0 ? undefined : 'the namespace backend needs root';

describe('namespace sandbox hardening', { skip, timeout: 300_000 }, () => {
  let t: TestServer;
  let kiln: KilnClient;
  before(async () => {
    t = await startTestServer({ KILN_BACKEND: 'namespace' });
    kiln = t.client;
  });
  after(async () => {
    await t?.close();
  });

  it('opens unix and inet sockets but refuses vsock, packet and other families with EAFNOSUPPORT', async () => {
    const code = [
      'import socket, errno, json',
      'out = {}',
      'def attempt(name, *args):',
      '    try:',
      '        socket.socket(*args).close(); out[name] = "ok"',
      '    except OSError as e:',
      '        out[name] = errno.errorcode[e.errno]',
      'attempt("vsock", socket.AF_VSOCK, socket.SOCK_STREAM)',
      'attempt("packet", socket.AF_PACKET, socket.SOCK_RAW)',
      'attempt("netlink_audit", socket.AF_NETLINK, socket.SOCK_RAW, 9)',
      'attempt("netlink_route", socket.AF_NETLINK, socket.SOCK_RAW, 0)',
      'attempt("inet", socket.AF_INET, socket.SOCK_STREAM)',
      'attempt("inet6", socket.AF_INET6, socket.SOCK_DGRAM)',
      'attempt("unix", socket.AF_UNIX, socket.SOCK_STREAM)',
      'try:',
      '    a, b = socket.socketpair(); a.sendall(b"x"); out["socketpair"] = b.recv(1).decode()',
      'except OSError as e:',
      '    out["socketpair"] = errno.errorcode[e.errno]',
      'print(json.dumps(out))',
    ].join('\n');
    await withSandbox(kiln, { pack: 'python' }, async (id) => {
      await kiln.sandboxes.writeFile(id, '/tmp/s.py', code);
      const r = await kiln.sandboxes.exec(id, { cmd: 'python3 /tmp/s.py', timeoutMs: 30_000 });
      assert.equal(r.exitCode, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout), {
        vsock: 'EAFNOSUPPORT',
        packet: 'EAFNOSUPPORT',
        netlink_audit: 'EAFNOSUPPORT',
        netlink_route: 'ok',
        inet: 'ok',
        inet6: 'ok',
        unix: 'ok',
        socketpair: 'x',
      });
    });
  });

  it('keeps /dev and /dev/shm inside the disk cap: 100 MiB into either fails, and the sandbox still works', async () => {
    await withSandbox(kiln, { pack: 'shell', diskMib: 64, memoryMib: 512 }, async (id) => {
      const fill = (path: string) => kiln.sandboxes.exec(id, { cmd: `dd if=/dev/zero of=${path} bs=1M count=100 2>&1; echo rc=$?; du -m ${path} | cut -f1; rm -f ${path}`, timeoutMs: 60_000 });
      for (const path of ['/dev/shm/fill', '/dev/fill']) {
        const r = await fill(path);
        assert.match(r.stdout, /No space left on device/, `${path}: ${r.stdout}`);
        assert.doesNotMatch(r.stdout, /rc=0/);
        const mib = Number(r.stdout.trim().split('\n').at(-1));
        assert.ok(mib <= 64, `${path} took ${mib} MiB with a 64 MiB disk`);
      }
      const ok = await kiln.sandboxes.exec(id, { cmd: 'echo hi > /dev/shm/x && cat /dev/shm/x && echo ok > /workspace/y && cat /workspace/y && ls /dev/null /dev/zero /dev/urandom /dev/pts' });
      assert.equal(ok.exitCode, 0, ok.stderr);
      assert.match(ok.stdout, /^hi\nok\n/);
    });
  });

  it('masks what /proc tells about the host kernel and keeps what programs read', async () => {
    const hostCmdline = await readFile('/proc/cmdline', 'utf8');
    assert.ok(hostCmdline.length > 0);
    await withSandbox(kiln, { pack: 'shell' }, async (id) => {
      const r = await kiln.sandboxes.exec(id, {
        cmd:
          'for f in cmdline config.gz kallsyms keys key-users timer_list iomem; do [ -e /proc/$f ] && printf "%s=%s\\n" $f "$(cat /proc/$f 2>&1 | wc -c)"; done; ' +
          'printf "acpi=%s\\n" "$(ls -A /proc/acpi 2>/dev/null | wc -l)"; grep -c ^processor /proc/cpuinfo; grep -c MemTotal /proc/meminfo; ps -e | wc -l; echo > /proc/sysrq-trigger 2>/dev/null && echo sysrq-written',
      });
      const lines = r.stdout.trim().split('\n');
      const masked = lines.filter((l) => l.includes('='));
      assert.ok(
        masked.some((l) => l.startsWith('cmdline=')),
        r.stdout,
      );
      for (const l of masked) assert.match(l, /=0$/, `/proc/${l} must be empty in a sandbox`);
      const [cpus, mem, procs] = lines.filter((l) => !l.includes('=')).map(Number);
      assert.ok(cpus! >= 1 && mem === 1 && procs! >= 2, r.stdout);
      assert.doesNotMatch(r.stdout, /sysrq-written/);
    });
  });

  it('hands no descriptor the service inherited to bwrap, the agent or sandbox code', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-fd-leak-'));
    try {
      const marker = join(dir, 'inherited-marker');
      await writeFile(marker, 'x');
      // bash opens fd 100 without close-on-exec, then becomes the node process holding it (Node
      // marks its low descriptors close-on-exec at start-up, not the high ones a parent left).
      const { stdout } = await execFileAsync('bash', ['-c', 'exec 100<"$1"; exec node --import tsx test/integration/inherited-fd-child.ts namespace "$1"', 'bash', marker], {
        cwd: REPO_ROOT,
        maxBuffer: 1 << 20,
        timeout: 240_000,
      });
      const r = JSON.parse(stdout) as { sandboxFds: string; hostHolders: string[] };
      const fds = [...r.sandboxFds.matchAll(/ (\d+) -> /g)].map((m) => Number(m[1]));
      assert.deepEqual(
        fds.filter((fd) => fd > 3),
        [],
        r.sandboxFds,
      ); // 0-2, and 3: ls's own /proc/self/fd
      assert.doesNotMatch(r.sandboxFds, /inherited-marker/);
      assert.deepEqual(r.hostHolders, [], 'host processes holding the inherited file (bwrap, agent)');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
