/**
 * Where a cold boot's time goes: boots the real guest (the backend's own kernel, initramfs and
 * command line, TCG on these machines) with kernel timestamps and no `quiet`, stamps every console
 * line with the host time since spawn, and prints the gaps over `--min-gap` ms, then boot to hello.
 *
 *   node --import tsx bench/qemu-boot-trace.ts [--min-gap 20] [--args "initcall_debug"]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { hostTscKhz } from '../src/backends/qemu/accel.js';
import { vmMemoryMib } from '../src/backends/qemu/backend.js';
import { qemuArgs, vmPaths } from '../src/backends/qemu/cmdline.js';
import { QemuProcess } from '../src/backends/qemu/process.js';
import { REPO_ROOT } from '../src/core/config.js';
import { resolveImage } from '../src/images/index.js';
import { AgentClient } from '../src/protocol/agent-client.js';
import { buildVmArtifacts, guestCmdline } from '../src/vmimage/index.js';
import { argValue } from './stats.js';

const minGap = Number(argValue('--min-gap') ?? 20);
const dataDir = process.env.KILN_DATA_DIR ?? '/var/lib/kiln';
const img = await resolveImage('shell', dataDir);
const artifacts = await buildVmArtifacts({ dataDir, agentPath: resolve(REPO_ROOT, 'build/kiln-agent') });
const base = await mkdtemp(join(tmpdir(), 'kiln-boot-trace-'));
const paths = vmPaths(base);
const cmdline = guestCmdline({ diskMib: 256, tscKhz: await hostTscKhz(), execUid: 1000, extra: `printk.time=1 ${argValue('--args') ?? ''}`.trim() }).replace(
  /\bquiet\b/,
  process.argv.includes('--quiet') ? 'quiet' : 'loglevel=7',
);
const args = qemuArgs({
  id: 'boot-trace',
  accel: 'tcg',
  cpus: 1,
  memoryMib: vmMemoryMib(256),
  kernelPath: artifacts.vmlinuxPath,
  initrdPath: artifacts.initrdPath,
  cmdline,
  diskImage: img.imagePath,
  paths,
});
const t0 = performance.now();
const proc = await QemuProcess.spawn('qemu-system-x86_64', args, paths.conSock);
const lines: Array<[number, string]> = [];
let partial = '';
const onData = (d: Buffer) => {
  partial += d.toString();
  const parts = partial.split('\n');
  partial = parts.pop()!;
  for (const l of parts) lines.push([performance.now() - t0, l.replace(/\r$/, '')]);
};
proc.onConsole(onData);
try {
  let sock: import('node:net').Socket | undefined;
  for (;;) {
    sock = await new Promise<import('node:net').Socket | undefined>((res) => {
      const s = createConnection(paths.ctlSock);
      s.once('connect', () => res(s));
      s.once('error', () => res(undefined));
    });
    if (sock) break;
    await sleep(2);
  }
  const s = sock;
  const agent = await AgentClient.connect({ readable: s, writable: s, destroy: () => s.destroy() }, { timeoutMs: 60_000 });
  const ready = performance.now() - t0;
  let prev = 0;
  for (const [t, l] of lines) {
    if (t - prev >= minGap) console.log(`${t.toFixed(0).padStart(6)} ms (+${(t - prev).toFixed(0).padStart(4)})  ${l}`);
    prev = t;
  }
  console.log(`${ready.toFixed(0).padStart(6)} ms  hello (agent bootMs ${agent.hello.bootMs})`);
  agent.close();
} finally {
  proc.signal('SIGKILL');
  await proc.waitExit(3000);
  await rm(base, { recursive: true, force: true });
}
