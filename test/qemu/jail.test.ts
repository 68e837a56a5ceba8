/**
 * Each sandbox QEMU is confined like Firecracker's jailer confines its VMMs: its own uid, its own
 * cgroup with memory/pids/CPU limits, its own namespaces with a root that holds only its files;
 * all of it is released when the VM is gone, also after the service crashed (start-up scan). The
 * guest kernel is at a random address (KASLR) per boot. Real QEMU (TCG here): kept to few VMs.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { readdir, readFile, readlink, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { QmpClient } from '../../src/backends/qemu/qmp.js';
import type { BackendSandbox } from '../../src/core/backend.js';
import { REPO_ROOT } from '../../src/core/config.js';
import { processesOf, statusField } from '../parity/leaks.js';
import { isAlive, type QemuFixture, setup, sh, skipReason, spec } from './fixture.js';

const execFileAsync = promisify(execFile);
const root = process.getuid?.() === 0;
const skip = (await skipReason()) ?? (root ? undefined : 'QEMU jails need root');
const READY = { readyTimeoutMs: 60_000 };
const V2 = existsSync('/sys/fs/cgroup/cgroup.controllers');

/** The host directory of `pid`'s cgroup for a controller (v1) or the unified one (v2). */
async function cgroupDir(pid: number, controller: 'memory' | 'pids' | 'cpu'): Promise<string> {
  for (const line of (await readFile(`/proc/${pid}/cgroup`, 'utf8')).split('\n')) {
    const [, ctrls, path] = line.split(':');
    if (V2 && ctrls === '') return `/sys/fs/cgroup${path}`;
    if (!V2 && ctrls?.split(',').includes(controller)) return `/sys/fs/cgroup/${controller}${path}`;
  }
  throw new Error(`pid ${pid} has no ${controller} cgroup`);
}

async function limits(pid: number): Promise<{ memoryBytes: number; pidsMax: number; cpuQuotaUs: number; dirs: string[] }> {
  const [mem, pids, cpu] = [await cgroupDir(pid, 'memory'), await cgroupDir(pid, 'pids'), await cgroupDir(pid, 'cpu')];
  const read = async (p: string) => (await readFile(p, 'utf8')).trim();
  return {
    memoryBytes: Number(await read(V2 ? `${mem}/memory.max` : `${mem}/memory.limit_in_bytes`)),
    pidsMax: Number(await read(`${pids}/pids.max`)),
    cpuQuotaUs: Number(V2 ? (await read(`${cpu}/cpu.max`)).split(' ')[0] : await read(`${cpu}/cpu.cfs_quota_us`)),
    dirs: [...new Set([mem, pids, cpu])],
  };
}

/** Every non-directory entry of the mount namespace `pid` lives in, except under /usr. */
async function namespaceFiles(pid: number): Promise<string[]> {
  const { stdout } = await execFileAsync('nsenter', ['-t', String(pid), '-m', 'find', '/', '-path', '/usr', '-prune', '-o', '!', '-type', 'd', '-print']);
  return stdout.split('\n').filter(Boolean).sort();
}

async function kernelText(sb: BackendSandbox): Promise<string> {
  let out = '';
  // As root in the guest: kallsyms shows addresses to root only.
  const r = await sb.agent.exec(
    { argv: ['sh', '-c', 'grep -w _text /proc/kallsyms'], uid: 0, gid: 0 },
    {
      onStdout: (d) => {
        out += d.toString();
      },
    },
  ).result;
  assert.equal(r.exitCode, 0);
  const addr = out.split(' ')[0]!;
  assert.match(addr, /^[0-9a-f]{16}$/);
  assert.notEqual(addr, '0000000000000000', 'kallsyms hid the address');
  return addr;
}

async function waitGone(pids: number[]): Promise<void> {
  for (let i = 0; i < 100 && (await Promise.all(pids.map(isAlive))).some(Boolean); i++) await new Promise((r) => setTimeout(r, 50));
}

describe('qemu jail', { skip, timeout: 300_000 }, () => {
  let f: QemuFixture;
  let templateText: string | undefined;
  before(async () => {
    f = await setup();
  });
  after(async () => {
    await f?.cleanup();
  });

  it('runs each sandbox QEMU as its own uid, in its own limited cgroup, seeing only its own files; delete releases all of it', async () => {
    const backend = f.backend();
    const a = await backend.create(spec(f, 'jail-a'), READY);
    let b: BackendSandbox | undefined;
    try {
      b = await backend.create(spec(f, 'jail-b'), READY);
      assert.ok(a.details.cloneOf && b.details.cloneOf, 'both are template clones');
      const uids: number[] = [];
      for (const sb of [a, b]) {
        const pid = sb.details.pid as number;
        const status = await readFile(`/proc/${pid}/status`, 'utf8');
        const uid = Number(statusField(status, 'Uid')[0]);
        assert.deepEqual(statusField(status, 'Uid'), Array(4).fill(String(uid)), 'real, effective, saved and fs uid');
        assert.deepEqual(statusField(status, 'Gid'), Array(4).fill(statusField(status, 'Gid')[0]));
        assert.deepEqual(statusField(status, 'Groups'), statusField(status, 'Gid').slice(0, 1), 'no supplementary groups but its own');
        assert.ok(uid >= 1000 && uid !== 65534, `QEMU runs as uid ${uid}`);
        assert.equal(sb.details.uid, uid);
        uids.push(uid);

        const l = await limits(pid);
        const guestBytes = (sb.details.vmMemoryMib as number) * 2 ** 20;
        // A template clone may hold its guest RAM twice (holes of the template file filled, then
        // copied): twice the guest, plus QEMU's own overhead (jail.ts, JailLimits.templateBacked).
        assert.ok(l.memoryBytes >= 2 * guestBytes && l.memoryBytes <= 2 * guestBytes + 512 * 2 ** 20, `memory limit ${l.memoryBytes} for a clone of ${guestBytes} of guest RAM`);
        assert.ok(l.pidsMax > 0 && l.pidsMax < 1000, `pids.max ${l.pidsMax}`);
        assert.ok(l.cpuQuotaUs > 0 && l.cpuQuotaUs <= 200_000, `cpu quota ${l.cpuQuotaUs} us per 100 ms for 1 vCPU`);
        for (const d of l.dirs) assert.ok(d.endsWith(`/${String(sb.details.cgroup).split('/').pop()}`), `${d} is the VM's own cgroup`);

        // QEMU's root after start-up is an empty directory but for the VM's own (empty) migration
        // folder, where a pause's state goes out (machine-state.ts); its namespace holds only its files.
        assert.equal(await readlink(`/proc/${pid}/root`), '/empty');
        assert.deepEqual(await readdir(`/proc/${pid}/root`), ['mig']);
        assert.deepEqual(await readdir(`/proc/${pid}/root/mig`), []);
        const files = await namespaceFiles(pid);
        const vmDirs = new Set(files.filter((p) => p.startsWith(`${f.runDir}/`)).map((p) => p.slice(0, p.lastIndexOf('/'))));
        assert.equal(vmDirs.size, 1, `one VM directory: ${[...vmDirs].join(', ')}`);
        const [vmDir] = vmDirs;
        assert.ok(vmDir === `${f.runDir}/qemu/vms/${sb.id}` || vmDir === `${f.runDir}/qemu/spares/${sb.details.spare}`, vmDir);
        for (const p of files) {
          const allowed =
            p.startsWith(`${vmDir}/`) ||
            p === f.pack.imagePath ||
            p.startsWith(`${f.dataDir}/vm/`) ||
            p.startsWith(`${f.shmDir}/`) ||
            p === '/dev/null' ||
            /^\/(bin|sbin|lib|lib32|lib64|libx32)$/.test(p);
          assert.ok(allowed, `QEMU's namespace shows ${p}\n${files.join('\n')}`);
        }
        assert.ok(
          files.some((p) => p.startsWith(`${f.shmDir}/`)),
          'the template RAM file is there',
        );
        assert.ok(!files.some((p) => /^\/(etc|home|root|proc|sys|run|var\/run)\//.test(p)));
      }
      assert.notEqual(uids[0], uids[1], 'two VMs, two uids');

      // Clones of one template share its kernel layout (a snapshot).
      templateText = await kernelText(a);
      assert.equal(await kernelText(b), templateText);
    } finally {
      const held = await Promise.all(
        [a, b]
          .filter((x) => x !== undefined)
          .map(async (sb) => ({
            sb,
            pids: (sb as { pids?: number[] }).pids ?? [sb.details.pid as number],
            l: await limits(sb.details.pid as number),
          })),
      );
      await Promise.all([a.destroy(), b?.destroy()]);
      await backend.close();
      for (const { sb, pids, l } of held) {
        await waitGone(pids);
        for (const pid of pids) assert.equal(await isAlive(pid), false, `pid ${pid} of ${sb.id} is gone`);
        for (const d of l.dirs) assert.equal(existsSync(d), false, `${d} is removed`);
        assert.deepEqual(await processesOf(sb.details.uid as number), [], `nothing runs as ${sb.id}'s uid`);
        for (const d of l.dirs) assert.equal(existsSync(dirname(d)), false, `close() removed the parent ${dirname(d)}`);
      }
    }
  });

  it('gives every boot its own kernel address (KASLR)', async () => {
    assert.ok(templateText, 'runs after the clone test');
    const backend = f.backend({ templates: false });
    const texts = [templateText];
    // 2 MiB steps over 1 GiB: two boots collide 1 time in ~500, three all alike 1 in ~250 000.
    for (let i = 0; i < 2 && new Set(texts).size === 1; i++) {
      const sb = await backend.create(spec(f, `kaslr-${i}`), READY);
      try {
        texts.push(await kernelText(sb));
      } finally {
        await sb.destroy();
      }
    }
    await backend.close();
    assert.ok(new Set(texts).size > 1, `_text is ${texts.join(', ')} in every boot`);
  });

  it("a crashed service's QEMU runs on; the next backend reattaches it, its scan keeps it, its destroy removes process, cgroup and files", async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', resolve(REPO_ROOT, 'test/qemu/crashing-service.ts'), f.dataDir, f.runDir, f.shmDir], { stdio: ['ignore', 'pipe', 'inherit'] });
    let details: { pid: number; uid: number };
    let l: Awaited<ReturnType<typeof limits>>;
    try {
      const [line] = await Promise.race([
        once(createInterface({ input: child.stdout! }), 'line') as Promise<[string]>,
        once(child, 'exit').then(() => {
          throw new Error('the service stand-in exited before its sandbox was ready');
        }),
      ]);
      details = JSON.parse(line) as { pid: number; uid: number };
      l = await limits(details.pid);
    } finally {
      child.kill('SIGKILL');
      await once(child, 'exit').catch(() => undefined);
    }
    // No --die-with-parent: the VM outlives the service, and the next one takes it over.
    assert.equal(await isAlive(details.pid), true, 'the VM outlives the service');
    // As a save the service's death cut short would leave it: stopped. The reattach continues it.
    const qmp = await QmpClient.connect(`${f.runDir}/qemu/vms/crashed/qmp.sock`, { timeoutMs: 5000 });
    await qmp.execute('stop');
    qmp.close();
    const next = f.backend({ templates: false });
    const back = await next.reattach!();
    assert.deepEqual(back.lost, []);
    assert.deepEqual(
      back.alive.map((s) => s.id),
      ['crashed'],
    );
    const sb = back.alive[0]!;
    assert.equal(sb.details.pid, details.pid);
    assert.equal((await sh(sb, 'echo $((6*7))')).stdout, '42\n');
    // The scan leaves what reattach took over alone.
    assert.deepEqual((await next.scan()).removed, []);
    assert.equal(await isAlive(details.pid), true);
    for (const d of l.dirs) assert.equal(existsSync(d), true, `${d} is kept`);
    await sb.destroy();
    await waitGone([details.pid]);
    assert.equal(await isAlive(details.pid), false);
    assert.deepEqual(await processesOf(details.uid), []);
    for (const d of l.dirs) assert.equal(existsSync(d), false, `${d} is removed`);
    await assert.rejects(stat(`${f.runDir}/qemu/vms/crashed`), { code: 'ENOENT' });
  });
});
