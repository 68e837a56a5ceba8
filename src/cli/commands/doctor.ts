/** kiln doctor: what this host can run, and for everything missing, how to fix it. */
import { execFile } from 'node:child_process';
import { access, constants, readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { loadConfig } from '../../core/config.js';
import { cgroupMode, createBackends, probeCgroups } from '../../server/compose.js';
import { listImages, loadPacks } from '../../images/index.js';
import { parseFlags, type Command } from '../command.js';

const run = promisify(execFile);

interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export async function hostChecks(): Promise<Check[]> {
  const checks: Check[] = [];
  const add = (name: string, ok: boolean, detail: string): void => { checks.push({ name, ok, detail }); };
  const version = async (cmd: string, args: string[]): Promise<string | undefined> => run(cmd, args).then((r) => (r.stdout || r.stderr).split('\n')[0]!.trim(), () => undefined);

  const bwrap = await version('bwrap', ['--version']);
  add('bubblewrap', !!bwrap, bwrap ?? 'missing: apt-get install bubblewrap');
  const fs = await readFile('/proc/filesystems', 'utf8');
  add('overlayfs', /\toverlay$/m.test(fs), /\toverlay$/m.test(fs) ? 'in the kernel' : 'missing: modprobe overlay');
  const sq = /\tsquashfs$/m.test(fs) || (await run('modprobe', ['squashfs']).then(() => true, () => false));
  add('squashfs', sq, sq ? 'in the kernel' : 'missing: modprobe squashfs (kernel module)');
  // A real attempt, not a look at the mounts: a probe sandbox cgroup with limits, delegated to nobody.
  const cg = process.getuid?.() === 0 ? await probeCgroups() : { mode: cgroupMode(), delegation: false, detail: 'not probed: run kiln doctor as root' };
  add('cgroups', cg.delegation, cg.detail);
  const userns = await readFile('/proc/sys/user/max_user_namespaces', 'utf8').then((s) => Number(s) > 0, () => false);
  add('user namespaces', userns, userns ? 'enabled' : 'disabled: sysctl -w user.max_user_namespaces=15000');
  add('root', process.getuid?.() === 0, process.getuid?.() === 0 ? 'running as root' : 'kiln serve must run as root (loop mounts, cgroups)');

  const kvmWritable = await access('/dev/kvm', constants.W_OK).then(() => true, () => false);
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8');
  const vmx = /\b(vmx|svm)\b/.test(cpuinfo);
  add('KVM', kvmWritable && vmx, kvmWritable && vmx ? '/dev/kvm writable, CPU has vmx/svm'
    : kvmWritable ? '/dev/kvm exists but the CPU flags show no vmx/svm (a kvm-pvm or nested host): ordinary guest kernels hang under KVM here, so microVMs use QEMU software emulation (TCG); see docs/hosts.md'
      : 'no writable /dev/kvm: microVMs fall back to QEMU software emulation; see docs/hosts.md');
  const qemu = await version('qemu-system-x86_64', ['--version']);
  add('QEMU', !!qemu, qemu ?? 'missing: apt-get install qemu-system-x86');
  return checks;
}

const command: Command = {
  name: 'doctor',
  summary: 'check the host',
  async run(argv) {
    const { flags } = parseFlags(argv, { boolean: ['json'] });
    const config = loadConfig();
    const checks = await hostChecks();
    const sources = { builtinDir: config.packsDir, customDir: config.customPacksDir };
    const packs = await loadPacks(sources, () => undefined).catch(() => []);
    const images = await listImages(config.dataDir, sources).catch(() => []);
    for (const p of packs) {
      const img = images.find((i) => i.name === p.name && i.current);
      checks.push({ name: `image ${p.name}`, ok: !!img, detail: img ? `${(img.sizeBytes / 1048576).toFixed(0)} MiB, built ${img.builtAt}` : `not built: kiln images build ${p.name}` });
    }
    const backends = await createBackends(config);
    const probes = await Promise.all([...backends.values()].map((b) => b.probe()));
    for (const p of probes) checks.push({ name: `backend ${p.name}`, ok: p.available, detail: p.available ? `available ${JSON.stringify(p.info ?? {})}` : `unavailable: ${p.reason}` });
    const { firecrackerDoctor } = await import('../../server/optional-backends.js');
    for (const c of await firecrackerDoctor()) checks.push({ name: c.name, ok: c.ok, detail: c.detail });
    if (flags.json) console.log(JSON.stringify({ checks }, null, 2));
    else for (const c of checks) console.log(`${c.ok ? ' ok ' : 'FAIL'}  ${c.name.padEnd(20)} ${c.detail}`);
    const nsOk = probes.find((p) => p.name === 'namespace')?.available ?? false;
    return nsOk ? 0 : 1;
  },
};
export default command;
