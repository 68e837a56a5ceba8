/**
 * Firecracker without the jailer still runs confined (confine.ts): its own uid, its own cgroup
 * with limits, its own namespaces with a root holding only its files; released on destroy and
 * after a crash (scan). The VMM is the fake Firecracker as a real process (fake-firecracker-process.ts)
 * started by the real launcher through bwrap and setpriv.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, readlink, realpath, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { FirecrackerBackend, type FirecrackerBackendOptions } from '../../src/backends/firecracker/backend.js';
import { ancestors } from '../../src/backends/firecracker/confine.js';
import { netnsPrefix } from '../../src/backends/firecracker/netns.js';
import type { BackendSandbox } from '../../src/core/backend.js';
import { REPO_ROOT } from '../../src/core/config.js';
import { processesOf, running, statusField } from '../parity/leaks.js';

const run = promisify(execFile);
const root = process.getuid?.() === 0;
const bwrap = await run('bwrap', ['--version']).then(
  () => true,
  () => false,
);
const skip = !root ? 'confinement needs root' : !bwrap ? 'bubblewrap is not installed' : false;
const V2 = existsSync('/sys/fs/cgroup/cgroup.controllers');

async function cgroupDirs(pid: number): Promise<Record<'memory' | 'pids' | 'cpu', string>> {
  const out: Record<string, string> = {};
  for (const line of (await readFile(`/proc/${pid}/cgroup`, 'utf8')).split('\n')) {
    const [, ctrls, path] = line.split(':');
    for (const c of ['memory', 'pids', 'cpu']) {
      if (V2 && ctrls === '') out[c] = `/sys/fs/cgroup${path}`;
      else if (!V2 && ctrls?.split(',').includes(c)) out[c] = `/sys/fs/cgroup/${c}${path}`;
    }
  }
  return out as Record<'memory' | 'pids' | 'cpu', string>;
}

/** The VM's own network namespace, made by kiln (netns.ts), holding its TAP (the service is root: kiln's NIC is on). */
function netnsOf(dir: string, id: string): string {
  return `/run/netns/${netnsPrefix(join(dir, 'run'))}${id}`;
}

async function assertOwnNetns(pid: number, sb: BackendSandbox, uid: number, dir: string): Promise<void> {
  const handle = netnsOf(dir, sb.id);
  assert.equal(await readlink(`/proc/${pid}/ns/net`), `net:[${(await stat(handle)).ino}]`, "Firecracker runs in the VM's own namespace");
  const { stdout } = await run('nsenter', [`--net=${handle}`, '--', 'ip', '-d', '-o', 'link', 'show', 'dev', String(sb.details.tap)]);
  assert.match(stdout, new RegExp(` tun type tap .* user ${uid} `), "its TAP is there, the VM's uid's");
}

/** Running as the service sees it (processStart): a zombie leader whose other threads still exit runs on. */
async function alive(pid: number): Promise<boolean> {
  return running(pid);
}

/**
 * A temp dir with stand-in kernel/initrd/pack, an executable `firecracker` that runs the fake,
 * and a bwrap wrapper adding what only the fake (a Node program) needs: the repo, node_modules.
 */
async function setup(): Promise<{ root: string; backend: FirecrackerBackend; options: FirecrackerBackendOptions; testBinds: string[] }> {
  const dir = await mkdtemp(join(tmpdir(), 'kfcc-'));
  for (const f of ['vmlinux', 'initrd.cpio', 'pack.sqfs']) await writeFile(join(dir, f), `fake ${f}\n`);
  const modules = await realpath(join(REPO_ROOT, 'node_modules'));
  const fc = join(dir, 'firecracker');
  // TMPDIR: tsx keeps its cache there; the VM's directory is the only place it may write.
  await writeFile(
    fc,
    `#!/bin/sh\n[ "$1" = --version ] && exec echo 'Firecracker v1.17.0-dev (fake)'\nTMPDIR="$PWD" exec ${process.execPath} --import ${join(modules, 'tsx/dist/loader.mjs')} ${join(REPO_ROOT, 'test/firecracker/fake-firecracker-process.ts')} "$@"\n`,
  );
  const wrapper = join(dir, 'bwrap');
  const testBinds = [REPO_ROOT, modules];
  const dirs = ancestors(testBinds)
    .map((d) => `--perms 0755 --dir ${d}`)
    .join(' ');
  await writeFile(wrapper, `#!/bin/sh\nexec bwrap ${dirs} ${testBinds.map((p) => `--ro-bind ${p} ${p}`).join(' ')} "$@"\n`);
  await Promise.all([chmod(fc, 0o755), chmod(wrapper, 0o755), chmod(dir, 0o755)]);
  const options: FirecrackerBackendOptions = {
    runDir: join(dir, 'run'),
    vmImage: async () => ({ vmlinuxPath: join(dir, 'vmlinux'), initrdPath: join(dir, 'initrd.cpio'), hash: 'kernelhash1' }),
    firecrackerPath: fc,
    jailer: 'never',
    kvm: 'force',
    shutdownGraceMs: 2000,
    apiTimeoutMs: 20_000,
    unjailed: { bwrapPath: wrapper },
  };
  return { root: dir, backend: new FirecrackerBackend(options), options, testBinds };
}

test('unjailed Firecracker runs as its own uid, in its own limited cgroup and namespaces; destroy releases them', { skip, timeout: 120_000 }, async () => {
  const { root: dir, backend, testBinds } = await setup();
  const spec = (id: string) => ({ id, pack: { name: 'python', imagePath: join(dir, 'pack.sqfs'), hash: 'packhash1', env: {} }, cpus: 1, memoryMib: 256, diskMib: 128 });
  const live: BackendSandbox[] = [];
  try {
    for (const id of ['fcc-a', 'fcc-b']) live.push(await backend.create(spec(id), { readyTimeoutMs: 60_000 }));
    const held: Array<{ pid: number; uid: number; dirs: string[]; netns: string }> = [];
    for (const sb of live) {
      assert.ok(sb.details.cloneOf, 'restored from a snapshot template');
      const pid = sb.details.pid as number;
      const status = await readFile(`/proc/${pid}/status`, 'utf8');
      const uid = Number(statusField(status, 'Uid')[0]);
      assert.deepEqual(statusField(status, 'Uid'), Array(4).fill(String(uid)));
      assert.ok(uid >= 1000, `Firecracker runs as uid ${uid}`);
      assert.equal(sb.details.uid, uid);
      assert.deepEqual(statusField(status, 'CapEff'), ['0000000000000000']);

      const cg = await cgroupDirs(pid);
      const read = async (p: string) => Number((await readFile(p, 'utf8')).trim().split(' ')[0]);
      const mem = await read(V2 ? `${cg.memory}/memory.max` : `${cg.memory}/memory.limit_in_bytes`);
      assert.ok(mem >= 256 * 2 ** 20 && mem <= 512 * 2 ** 20, `memory limit ${mem}`);
      const pidsMax = await read(`${cg.pids}/pids.max`);
      assert.ok(pidsMax > 0 && pidsMax < 1000, `pids.max ${pidsMax}`);
      const quota = await read(V2 ? `${cg.cpu}/cpu.max` : `${cg.cpu}/cpu.cfs_quota_us`);
      assert.ok(quota > 0 && quota <= 200_000, `cpu quota ${quota}`);
      for (const d of Object.values(cg)) assert.ok(d.endsWith(`/${sb.id}`), `${d} is the VM's own cgroup`);

      const { stdout } = await run('nsenter', ['-t', String(pid), '-m', 'find', '/', '-path', '/usr', '-prune', '-o', '!', '-type', 'd', '-print']);
      const vmDir = join(dir, 'run/firecracker/vms', sb.id);
      const own = [join(dir, 'pack.sqfs'), join(dir, 'firecracker'), '/dev/null'];
      for (const p of stdout.split('\n').filter(Boolean)) {
        const ok =
          p.startsWith(`${vmDir}/`) ||
          own.includes(p) ||
          p.startsWith(join(dir, 'run/firecracker/templates/')) ||
          /^\/(bin|sbin|lib|lib32|lib64|libx32)$/.test(p) ||
          /^\/dev\/(kvm|userfaultfd|net\/tun)$/.test(p) ||
          testBinds.some((b) => p.startsWith(`${b}/`));
        assert.ok(ok, `Firecracker's namespace shows ${p}`);
      }
      assert.ok(stdout.includes(`${vmDir}/api.sock`));
      assert.ok((await sb.agent.ping()).rttMs >= 0);
      await assertOwnNetns(pid, sb, uid, dir);
      held.push({ pid, uid, dirs: [...new Set(Object.values(cg))], netns: netnsOf(dir, sb.id) });
    }
    assert.notEqual(held[0]!.uid, held[1]!.uid, 'two VMs, two uids');
    // The template VM's uid is handed out again later: its snapshot files must not stay its own.
    const tplDir = join(dir, 'run/firecracker/templates', String(live[0]!.details.cloneOf));
    for (const f of ['vmstate', 'memory']) assert.equal((await stat(join(tplDir, f))).uid, 0, `${f} belongs to root`);
    await Promise.all(live.splice(0).map((sb) => sb.destroy()));
    for (const h of held) {
      for (let i = 0; i < 100 && (await alive(h.pid)); i++) await new Promise((r) => setTimeout(r, 50));
      assert.equal(await alive(h.pid), false);
      for (const d of h.dirs) assert.equal(existsSync(d), false, `${d} is removed`);
      assert.equal(existsSync(h.netns), false, `${h.netns} is removed`);
      assert.deepEqual(await processesOf(h.uid), []);
    }
  } finally {
    await Promise.all(live.map((sb) => sb.destroy().catch(() => undefined)));
    await backend.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test("the start-up scan of a restarted service removes a confined Firecracker's cgroup, and with it the VMM", { skip, timeout: 120_000 }, async () => {
  const { root: dir, backend, options } = await setup();
  const again = new FirecrackerBackend(options);
  try {
    const sb = await backend.create(
      { id: 'fcc-orphan', pack: { name: 'python', imagePath: join(dir, 'pack.sqfs'), hash: 'packhash1', env: {} }, cpus: 1, memoryMib: 256, diskMib: 128 },
      { readyTimeoutMs: 60_000 },
    );
    const pid = sb.details.pid as number;
    const dirs = Object.values(await cgroupDirs(pid));
    // A second instance on the same run dir knows nothing of `sb`: all of it is a leftover there.
    const report = await again.scan();
    assert.match(report.removed.join('\n'), /stale VMM cgroup .*\/fcc-orphan/);
    assert.ok(report.removed.includes(`removed leftover network namespace ${netnsPrefix(options.runDir)}fcc-orphan`), report.removed.join('\n'));
    assert.equal(existsSync(netnsOf(dir, 'fcc-orphan')), false);
    for (let i = 0; i < 100 && (await alive(pid)); i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(await alive(pid), false);
    for (const d of dirs) assert.equal(existsSync(d), false, `${d} is removed`);
    assert.deepEqual(await processesOf(sb.details.uid as number), []);
    await sb.destroy();
  } finally {
    await backend.close();
    await again.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('a confined Firecracker outlives its service: the next one reattaches it (API, vsock agent, a save), a dead one is lost, the scan keeps the live one, its destroy releases it', {
  skip,
  timeout: 120_000,
}, async () => {
  const { root: dir, backend, options } = await setup();
  const again = new FirecrackerBackend(options);
  try {
    const spec = (id: string) => ({ id, pack: { name: 'python', imagePath: join(dir, 'pack.sqfs'), hash: 'packhash1', env: {} }, cpus: 1, memoryMib: 256, diskMib: 128 });
    const sb = await backend.create(spec('fcc-kept'), { readyTimeoutMs: 60_000 });
    const gone = await backend.create(spec('fcc-gone'), { readyTimeoutMs: 60_000 });
    const pid = sb.details.pid as number;
    const dirs = Object.values(await cgroupDirs(pid));
    const goneDirs = Object.values(await cgroupDirs(gone.details.pid as number));
    assert.ok(sb.detach && gone.detach, 'an unjailed VM can be kept');
    await Promise.all([sb.detach!(), gone.detach!()]);
    await backend.close();
    assert.equal(await alive(pid), true, 'the VM runs on after its service closed');
    process.kill(gone.details.pid as number, 'SIGKILL'); // dies while no service runs
    for (let i = 0; i < 100 && (await alive(gone.details.pid as number)); i++) await new Promise((r) => setTimeout(r, 50));

    const back = await again.reattach();
    assert.deepEqual(back.lost, [{ id: 'fcc-gone', reason: 'its Firecracker ended while the service was not running' }]);
    for (const d of goneDirs) assert.equal(existsSync(d), false, `the lost VM's ${d} is removed`);
    assert.equal(existsSync(join(dir, 'run/firecracker/vms/fcc-gone')), false, "the lost VM's folder is removed");
    assert.equal(existsSync(netnsOf(dir, 'fcc-gone')), false, "the lost VM's network namespace is removed");
    assert.deepEqual(
      back.alive.map((s) => s.id),
      ['fcc-kept'],
    );
    const kept = back.alive[0]!;
    assert.equal(kept.details.pid, pid);
    assert.equal(typeof kept.details.reattachMs, 'number');
    assert.ok((await kept.agent.ping()).rttMs >= 0, 'the agent answers on a new vsock connection');
    // Its machine saves over the API it was reattached to (a snapshot: it runs on).
    await kept.saveMachine!(join(dir, 'snap'), { keepRunning: true });
    assert.ok((await kept.agent.ping()).rttMs >= 0);
    const report = await again.scan();
    assert.deepEqual(report.removed, [], 'the scan keeps what reattach took over');
    assert.equal(await alive(pid), true);
    for (const d of dirs) assert.equal(existsSync(d), true, `${d} is kept`);
    assert.equal(existsSync(netnsOf(dir, 'fcc-kept')), true, 'its network namespace is kept');

    await kept.destroy();
    for (let i = 0; i < 100 && (await alive(pid)); i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(await alive(pid), false);
    for (const d of dirs) assert.equal(existsSync(d), false, `${d} is removed`);
    assert.deepEqual(await processesOf(sb.details.uid as number), []);
    assert.equal(existsSync(join(dir, 'run/firecracker/vms/fcc-kept')), false, 'its folder is removed');
    assert.equal(existsSync(netnsOf(dir, 'fcc-kept')), false, 'its network namespace is removed');
  } finally {
    await backend.close();
    await again.close();
    await rm(dir, { recursive: true, force: true });
  }
});
