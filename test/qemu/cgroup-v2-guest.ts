/**
 * Runs INSIDE a QEMU guest with the unified hierarchy (bundled by cgroup-v2.test.ts, run as root
 * by node 18): the real cgroup code of the namespace backend in a delegated subtree laid out as
 * systemd does for a Delegate=yes service (controllers delegated to system.slice/kiln.service,
 * which holds the service process). Prints "ok <step>" per step; any failed assertion exits 1.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, readFileSync, rmdirSync, statSync } from 'node:fs';
import { AGENT_RESERVE, cgroupMode, detectCgroupLayout, prepareLayout, probeCgroups, removeLayoutParents, SandboxCgroup, scanStaleCgroups } from '../../src/core/cgroups.js';

const ROOT = '/sys/fs/cgroup';
const OWN = '/system.slice/kiln.service';
const MiB = 1024 * 1024;
const read = (p: string): string => readFileSync(p, 'utf8').trim();
const cgroupOf = (pid: number): string => read(`/proc/${pid}/cgroup`);
const sorted = (text: string): string[] => text.split(/\s+/).filter(Boolean).sort();
const step = (name: string): void => console.log(`ok ${name}`);

/** A process held at `read` until released, so it can be placed before it does anything. */
function gated(script: string, uid = 0): ChildProcess {
  return spawn('sh', ['-c', `read x; ${script}`], { uid, gid: uid, stdio: ['pipe', 'pipe', 'inherit'] });
}

async function firstLine(child: ChildProcess): Promise<string> {
  let out = '';
  for await (const chunk of child.stdout!) {
    out += String(chunk);
    if (out.includes('\n')) break;
  }
  return out.split('\n')[0]!;
}

async function exitSignal(child: ChildProcess): Promise<string | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.signalCode;
  const [, sig] = await once(child, 'exit');
  return sig as string | null;
}

assert.equal(cgroupMode(), 'v2');
assert.equal(cgroupOf(process.pid), `0::${OWN}`);
const layout = detectCgroupLayout('kiln');
assert.deepEqual(layout, { version: 2, parents: { unified: `${ROOT}${OWN}/kiln` } });
step('detect');

// The service's own cgroup holds the service and has no controllers enabled yet: v2's
// no-internal-processes rule makes enabling them there fail unless the service moves first.
assert.deepEqual(sorted(read(`${ROOT}${OWN}/cgroup.controllers`)), ['cpu', 'memory', 'pids']);
assert.equal(read(`${ROOT}${OWN}/cgroup.subtree_control`), '');
await prepareLayout(layout);
assert.equal(cgroupOf(process.pid), `0::${OWN}/kiln-service`);
assert.deepEqual(sorted(read(`${ROOT}${OWN}/cgroup.subtree_control`)), ['cpu', 'memory', 'pids']);
assert.deepEqual(sorted(read(`${ROOT}${OWN}/kiln/cgroup.subtree_control`)), ['cpu', 'memory', 'pids']);
assert.deepEqual(detectCgroupLayout('kiln'), layout, 'the layout is the same after the service moved into its leaf');
await prepareLayout(layout); // idempotent (a restart in the same cgroup)
step('prepare');

const S = `${ROOT}${OWN}/kiln/sb1`;
const cg = await SandboxCgroup.create(layout, 'sb1', { memoryBytes: 64 * MiB, pidsMax: 100, cpus: 0.5 }, { delegateUid: 1000 });
assert.equal(read(`${S}/memory.max`), String(64 * MiB + AGENT_RESERVE.memoryBytes));
assert.equal(read(`${S}/pids.max`), '100');
assert.equal(read(`${S}/cpu.max`), '50000 100000');
assert.equal(read(`${S}/user/memory.max`), String(64 * MiB));
assert.equal(read(`${S}/user/pids.max`), '75', 'a quarter of 100 kept for the agent');
for (const f of ['', '/cgroup.procs', '/cgroup.subtree_control', '/cgroup.threads']) assert.equal(statSync(`${S}/user${f}`).uid, 1000, `user${f}`);
assert.equal(statSync(`${S}/cgroup.procs`).uid, 1000, 'the common ancestor of agent/ and user/ lets the sandbox uid move processes');
for (const f of ['memory.max', 'pids.max', 'cpu.max', 'user/memory.max', 'user/pids.max']) assert.equal(statSync(`${S}/${f}`).uid, 0, `${f} stays root's`);
assert.deepEqual(cg.userDirs, { unified: `${S}/user` });
step('create');

// What the agent does, as the sandbox uid: from agent/, make an exec cgroup and move in.
const exec1 = gated(`mkdir ${S}/user/exec-1 && echo $$ > ${S}/user/exec-1/cgroup.procs && cat /proc/self/cgroup && exec sleep 1000`, 1000);
await cg.addProcess(exec1.pid!);
assert.equal(cgroupOf(exec1.pid!), `0::${OWN}/kiln/sb1/agent`);
exec1.stdin!.write('go\n');
assert.equal(await firstLine(exec1), `0::${OWN}/kiln/sb1/user/exec-1`);
assert.equal(await cg.pids(), 1);
step('delegate');

const kill = spawnSync('sh', ['-c', `echo 1 > ${S}/user/exec-1/cgroup.kill`], { uid: 1000, gid: 1000 });
assert.equal(kill.status, 0, String(kill.stderr));
assert.equal(await exitSignal(exec1), 'SIGKILL');
rmdirSync(`${S}/user/exec-1`);
step('kill');

// Memory: user/ carries the limit; an OOM there kills user code, never what is in agent/.
const agent = gated('exec sleep 1000');
await cg.addProcess(agent.pid!);
mkdirSync(`${S}/user/exec-2`);
const hog = gated(`exec node -e 'const a = []; for (;;) a.push(Buffer.alloc(8 << 20, 1))'`);
await writeProcs(`${S}/user/exec-2`, hog.pid!);
hog.stdin!.write('go\n');
assert.equal(await exitSignal(hog), 'SIGKILL');
assert.ok((await cg.oomKills()) >= 1, read(`${S}/memory.events`));
assert.equal(agent.exitCode ?? agent.signalCode, null, 'the process in agent/ survived the OOM');
step('oom');

// Removal kills what is left in every part and removes the tree bottom-up.
const left = gated('exec sleep 1000');
await writeProcs(`${S}/user/exec-2`, left.pid!);
await cg.remove();
assert.equal(existsSync(S), false);
assert.equal(await exitSignal(agent), 'SIGKILL');
assert.equal(await exitSignal(left), 'SIGKILL');
step('remove');

// A crashed service's leftovers: the start-up scan removes them, then the parent goes.
const stale = await SandboxCgroup.create(layout, 'sb2', { memoryBytes: 32 * MiB, pidsMax: 50, cpus: 1 }, { delegateUid: 1000 });
const orphan = gated('exec sleep 1000');
await stale.addProcess(orphan.pid!);
assert.deepEqual(await scanStaleCgroups(layout), [`cgroup ${ROOT}${OWN}/kiln/sb2`]);
assert.equal(await exitSignal(orphan), 'SIGKILL');
await removeLayoutParents(layout);
assert.equal(existsSync(`${ROOT}${OWN}/kiln`), false);
step('scan');

const probe = await probeCgroups();
assert.deepEqual([probe.mode, probe.delegation], ['v2', true], probe.detail);
step('probe');

// Not delegated (a plain unit without Delegate=yes): a clear error, not a swallowed one.
mkdirSync(`${ROOT}/system.slice/plain.service`);
try {
  await assert.rejects(prepareLayout({ version: 2, parents: { unified: `${ROOT}/system.slice/plain.service/svc/kiln` } }), /not available in .*svc.*Delegate=yes/);
  mkdirSync(`${ROOT}/system.slice/plain.service/svc`);
  await assert.rejects(prepareLayout({ version: 2, parents: { unified: `${ROOT}/system.slice/plain.service/svc/kiln` } }), /memory, pids.*not available.*Delegate=yes/);
} finally {
  if (existsSync(`${ROOT}/system.slice/plain.service/svc`)) rmdirSync(`${ROOT}/system.slice/plain.service/svc`);
  rmdirSync(`${ROOT}/system.slice/plain.service`);
}
step('undelegated');

// systemd mounts cgroup2 with nsdelegate (so does the agent's init in VMs): a process may then move processes only between
// cgroups inside its cgroup namespace's root. A namespace sandbox's agent lives in agent/ and
// moves execs into user/: a cgroup namespace made where the agent is (bwrap --unshare-cgroup)
// would fail there, so the backend gives v2 sandboxes none (bwrap.ts). Both cases, for real:
assert.match(read('/proc/self/mountinfo'), /cgroup2 .*nsdelegate/);
await prepareLayout(layout);
const S3 = `${ROOT}${OWN}/kiln/sb3`;
const sb3 = await SandboxCgroup.create(layout, 'sb3', { memoryBytes: 32 * MiB, pidsMax: 50, cpus: 1 }, { delegateUid: 1000 });
mkdirSync(`${S3}/user/exec-1`);
spawnSync('chown', ['1000:1000', `${S3}/user/exec-1`, `${S3}/user/exec-1/cgroup.procs`]);
const move = `echo $$ > ${S3}/user/exec-1/cgroup.procs && echo moved || echo refused`;
const withNs = gated(`unshare -U -r -C sh -c '${move}' 2>/dev/null`, 1000);
await sb3.addProcess(withNs.pid!);
withNs.stdin!.write('go\n');
assert.equal(await firstLine(withNs), 'refused', 'nsdelegate: a cgroup namespace rooted at agent/ cannot reach user/');
const withoutNs = gated(`unshare -U -r sh -c '${move}' 2>/dev/null`, 1000);
await sb3.addProcess(withoutNs.pid!);
withoutNs.stdin!.write('go\n');
assert.equal(await firstLine(withoutNs), 'moved', 'nsdelegate: without a cgroup namespace the sandbox uid moves it');
await sb3.remove();
await removeLayoutParents(layout);
step('nsdelegate');

async function writeProcs(dir: string, pid: number): Promise<void> {
  const { writeFile } = await import('node:fs/promises');
  await writeFile(`${dir}/cgroup.procs`, String(pid));
}
