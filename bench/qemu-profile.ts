/**
 * Where a template clone's time goes under TCG. A clone's QEMU starts with an empty translation
 * cache, so its cost is mostly the guest code it runs for the first time between `cont` and the
 * hello reply. This starts a real backend (template + idle spare), then launches a copy of the
 * spare's exact command line with `-d in_asm`, restores it, does the handshake, and attributes
 * every translated block to a guest kernel symbol (the guest's kallsyms) or an agent symbol
 * (go tool nm). `--cold` boots the same machine from scratch instead; `--exec CMD` profiles the
 * first exec after the hello instead; `--sequence` lists the functions in the order they were first
 * translated.
 *
 *   node --import tsx bench/qemu-profile.ts [--cold] [--exec CMD] [--top 40] [--sequence] [--keep-log FILE]
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { createQemuBackend } from '../src/backends/qemu/index.js';
import { QemuProcess } from '../src/backends/qemu/process.js';
import { QmpClient } from '../src/backends/qemu/qmp.js';
import { waitChardevConnected, waitMigration } from '../src/backends/qemu/vm.js';
import { REPO_ROOT } from '../src/core/config.js';
import { resolveImage } from '../src/images/index.js';
import { AgentClient } from '../src/protocol/agent-client.js';
import { jitBlocks } from './qemu.js';
import { argValue } from './stats.js';

const execFileAsync = promisify(execFile);

interface Sym {
  addr: bigint;
  name: string;
}

async function main(): Promise<void> {
  const top = Number(argValue('--top') ?? 40);
  const keepLog = argValue('--keep-log');
  const cold = process.argv.includes('--cold');
  const execCmd = argValue('--exec');
  const img = await resolveImage('shell', process.env.KILN_DATA_DIR ?? '/var/lib/kiln');
  const base = await mkdtemp(join(tmpdir(), 'kiln-qprof-'));
  // build/kiln-agent is stripped (-s -w): build one with its symbol table for the attribution.
  const agentPath = join(base, 'kiln-agent');
  await execFileAsync('go', ['build', '-trimpath', '-o', agentPath, '.'], { cwd: resolve(REPO_ROOT, 'agent'), env: { ...process.env, CGO_ENABLED: '0', GOPROXY: 'off' } });
  const backend = createQemuBackend({ dataDir: join(base, 'data'), runDir: join(base, 'run'), shmDir: join('/dev/shm', base.split('/').pop()!), agentPath, spares: 1, jail: false });
  let proc: QemuProcess | undefined;
  try {
    const pack = { name: img.name, hash: img.hash, imagePath: img.imagePath, env: img.env, run: img.run };
    const first = await backend.create({ id: 'first', pack, cpus: 1, memoryMib: 256, diskMib: 256 }, { readyTimeoutMs: 120_000 });
    // Debian ships only a stub System.map; the guest's own kallsyms has the addresses (no KASLR
    // under PVH direct boot, so every guest of this kernel has the same).
    const kallsyms = await first.agent.readText('/proc/kallsyms', { maxBytes: 64 << 20 });
    const spareArgs = await waitForSpare(join(base, 'run/qemu/spares'));
    const dir = join(base, 'prof');
    await mkdir(dir);
    const log = join(dir, 'in_asm.log');
    const debugArgs = [
      '-d',
      'in_asm',
      '-D',
      log,
      ...(process.env.QPROF_TRACE ?? '')
        .split(',')
        .filter(Boolean)
        .flatMap((t) => ['-trace', t]),
    ];
    let qmp: QmpClient;
    let ctl: Socket;
    let before = 0;
    let t0: number;
    if (cold) {
      // The same machine booted from scratch: no RAM file, no incoming state.
      proc = await QemuProcess.spawn('qemu-system-x86_64', coldArgs(retarget(spareArgs, dir)).concat(debugArgs), join(dir, 'con.sock'));
      t0 = performance.now();
      qmp = await QmpClient.connect(join(dir, 'qmp.sock'), { timeoutMs: 10_000 });
      ctl = await connect(join(dir, 'ctl.sock'));
    } else {
      const fh = await open(await templateState(join(base, 'run/qemu/templates')), 'r');
      proc = await QemuProcess.spawn('qemu-system-x86_64', retarget(spareArgs, dir).concat(debugArgs), join(dir, 'con.sock'), fh.fd);
      await fh.close();
      qmp = await QmpClient.connect(join(dir, 'qmp.sock'), { timeoutMs: 10_000 });
      await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
      // As a spare does: the control socket connected and accepted before the state loads.
      ctl = await connect(join(dir, 'ctl.sock'));
      await waitChardevConnected(qmp, proc, 'ctl', Date.now() + 10_000);
      await qmp.execute('migrate-incoming', { uri: 'fd:3' });
      await waitMigration(qmp, proc, Date.now() + 10_000);
      before = await jitBlocks(qmp);
      t0 = performance.now();
      await qmp.execute('cont');
    }
    const agent = await AgentClient.connect({ readable: ctl, writable: ctl, destroy: () => ctl.destroy() }, { sync: true, timeoutMs: 120_000 });
    const readyMs = performance.now() - t0;
    let after = await jitBlocks(qmp);
    let execNote = '';
    if (execCmd) {
      // Only what the first exec translates: the log restarts after the hello.
      await qmp.execute('human-monitor-command', { 'command-line': `logfile ${log}.exec` });
      const e0 = performance.now();
      const r = await agent.exec({ argv: ['sh', '-c', execCmd] }).result;
      execNote = `; first exec of "${execCmd}": ${(performance.now() - e0).toFixed(1)} ms (exit ${r.exitCode}), TBs ${after} → `;
      after = await jitBlocks(qmp);
      execNote += String(after);
    }
    agent.close();
    await qmp.execute('quit').catch(() => undefined);
    qmp.close();
    await proc.waitExit(3000);
    await first.destroy();

    const text = await readFile(execCmd ? `${log}.exec` : log, 'utf8');
    if (keepLog) await writeFile(keepLog, text);
    const starts = [...text.matchAll(/^IN:.*\n(0x[0-9a-f]+):/gm)].map((m) => BigInt(m[1]!));
    const kernel = parseKallsyms(kallsyms);
    const agentSyms = await goSymbols(agentPath);
    const counts = new Map<string, number>();
    let kernelTbs = 0;
    for (const a of starts) {
      const isKernel = a >= 0xffff800000000000n;
      if (isKernel) kernelTbs++;
      const name = (isKernel ? 'k ' : 'u ') + (lookup(isKernel ? kernel : agentSyms, a) ?? `?${a.toString(16)}`);
      counts.set(name, (counts.get(name) ?? 0) + 1);
    }
    if (process.argv.includes('--sequence')) {
      // The order functions were first translated in: what the guest did, step by step.
      let last = '';
      for (const a of starts) {
        const isKernel = a >= 0xffff800000000000n;
        const name = (isKernel ? 'k ' : 'u ') + (lookup(isKernel ? kernel : agentSyms, a) ?? '?');
        if (name !== last) console.log(`  seq ${name}`);
        last = name;
      }
    }
    console.log(
      `${cold ? 'spawn' : 'cont'} → hello reply: ${readyMs.toFixed(1)} ms; TBs (info jit) ${before} → ${after}${execNote}; logged blocks ${starts.length} (kernel ${kernelTbs}, user ${starts.length - kernelTbs})`,
    );
    for (const [name, n] of [...counts].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${String(n).padStart(6)}  ${name}`);
    const byPrefix = new Map<string, number>();
    for (const [name, n] of counts) {
      const key = name.startsWith('u ') ? `u ${name.slice(2).split(/[.(]/)[0]}` : `k ${kernelArea(name.slice(2))}`;
      byPrefix.set(key, (byPrefix.get(key) ?? 0) + n);
    }
    console.log('\nby area:');
    for (const [name, n] of [...byPrefix].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${String(n).padStart(6)}  ${name}`);
  } finally {
    if (proc?.alive) proc.signal('SIGKILL');
    await backend.close().catch(() => undefined);
    await rm(base, { recursive: true, force: true });
  }
}

/** Coarse kernel areas by symbol name, to see which subsystem a clone pays for. */
function kernelArea(sym: string): string {
  const rules: Array<[RegExp, string]> = [
    [/rcu/, 'rcu'],
    [/hrtimer|tick|timer|clock|timekeep|ktime/, 'time'],
    [/sched|enqueue|dequeue|pick_|wake|switch_|update_curr|load_avg|select_task/, 'sched'],
    [/irq|apic|ioapic|interrupt|vector|idt/, 'irq'],
    [/virt|vring|vp_|port_/, 'virtio'],
    [/crng|random|entropy|blake2|chacha|mix_pool/, 'random'],
    [/futex/, 'futex'],
    [/epoll|ep_|poll/, 'poll'],
    [/syscall|entry|do_sys/, 'syscall'],
    [/page|pte|pmd|fault|mm_|vma/, 'mm'],
    [/idle|cpuidle|halt/, 'idle'],
  ];
  for (const [re, area] of rules) if (re.test(sym)) return area;
  return 'other';
}

async function waitForSpare(sparesDir: string): Promise<string[]> {
  for (let i = 0; i < 300; i++) {
    for (const id of await readdir(sparesDir).catch(() => [] as string[])) {
      const pid = Number((await readFile(join(sparesDir, id, 'qemu.pid'), 'utf8').catch(() => '')).trim());
      if (pid) return (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').slice(1, -1);
    }
    await sleep(100);
  }
  throw new Error('no spare QEMU appeared');
}

/** A clone's arguments as a cold boot's: private anonymous RAM, no incoming state. */
function coldArgs(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '-incoming') {
      i++;
      continue;
    }
    if (args[i] === '-object' && args[i + 1]?.startsWith('memory-backend-file')) {
      i++;
      continue;
    }
    out.push(args[i]!.replace(/^microvm,memory-backend=mem$/, 'microvm'));
  }
  return out;
}

/**
 * The spare's arguments with its sockets, pid file and name moved to `dir`, still root (no
 * `-runas`): the profile reopens its log mid-run in a directory only root can write.
 */
function retarget(args: string[], dir: string): string[] {
  const i = args.indexOf('-runas');
  if (i >= 0) args = [...args.slice(0, i), ...args.slice(i + 2)];
  return args.map((a) =>
    a
      .replace(/path=[^,]*ctl\.sock/, `path=${dir}/ctl.sock`)
      .replace(/unix:[^,]*qmp\.sock/, `unix:${dir}/qmp.sock`)
      .replace(/^.*qemu\.pid$/, `${dir}/qemu.pid`)
      .replace(/kiln-sp-[0-9a-f]+/g, 'kiln-profile'),
  );
}

async function templateState(templatesDir: string): Promise<string> {
  const [id] = (await readdir(templatesDir)).filter((n) => n.startsWith('tpl-'));
  if (!id) throw new Error('no template');
  return join(templatesDir, id, 'state');
}

function connect(path: string): Promise<Socket> {
  return new Promise((res, rej) => {
    const s = createConnection(path);
    s.once('connect', () => res(s));
    s.once('error', rej);
  });
}

function parseKallsyms(map: string): Sym[] {
  return sortSyms(
    map
      .split('\n')
      .map((l) => l.split(' '))
      .filter((p) => p.length >= 3 && /[tTwW]/.test(p[1]!))
      .map((p) => ({ addr: BigInt(`0x${p[0]}`), name: p[2]! })),
  );
}

async function goSymbols(binary: string): Promise<Sym[]> {
  const { stdout } = await execFileAsync('go', ['tool', 'nm', '-n', binary], { maxBuffer: 64 << 20 });
  return sortSyms(
    stdout
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter((p) => p.length >= 3 && /[tT]/.test(p[1]!))
      .map((p) => ({ addr: BigInt(`0x${p[0]}`), name: p.slice(2).join(' ') })),
  );
}

function sortSyms(s: Sym[]): Sym[] {
  return s.sort((a, b) => (a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : 0));
}

function lookup(syms: Sym[], a: bigint): string | undefined {
  let lo = 0;
  let hi = syms.length - 1;
  let best: Sym | undefined;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (syms[mid]!.addr <= a) {
      best = syms[mid];
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return best?.name;
}

// Output piped into `head` must not end the process before its finally removes the VM's files.
process.stdout.on('error', () => undefined);
main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
