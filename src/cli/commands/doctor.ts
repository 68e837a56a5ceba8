/**
 * kiln doctor: what this host can run, and for everything missing, how to fix it. The checks are
 * the registered backends' own probes (thorough: a real cgroup is tried) plus the pack images;
 * nothing here repeats a backend's knowledge of what it needs.
 */
import type { HostCheck } from '../../core/backend.js';
import { loadConfig } from '../../core/config.js';
import { listImages, loadPacks } from '../../images/index.js';
import { BACKEND_NAMES, createBackends } from '../../server/backends.js';
import { type Command, parseFlags, UsageError } from '../command.js';

export interface DoctorReport {
  backends: Array<{ name: string; available: boolean; checks: HostCheck[]; info?: Record<string, unknown> }>;
  images: HostCheck[];
}

/** Every registered backend's probe (or those named), and the state of each pack's image. */
export async function doctorReport(only?: readonly string[]): Promise<DoctorReport> {
  const config = loadConfig();
  const backends = await createBackends(config, undefined, only);
  const probes = await Promise.all([...backends.values()].map((b) => b.probe({ thorough: true })));
  const sources = { builtinDir: config.packsDir, customDir: config.customPacksDir };
  const packs = await loadPacks(sources, () => undefined).catch(() => []);
  const images = await listImages(config.dataDir, sources).catch(() => []);
  return {
    backends: probes.map((p) => ({ name: p.name, available: p.available, checks: p.checks, info: p.info })),
    images: packs.map((p) => {
      const img = images.find((i) => i.name === p.name && i.current);
      return { name: `image ${p.name}`, ok: !!img, detail: img ? `${(img.sizeBytes / 1048576).toFixed(0)} MiB, built ${img.builtAt}` : `not built: kiln images build ${p.name}` };
    }),
  };
}

const USAGE = `usage: kiln doctor [--json] [--backend NAME]...
  checks what this host can run and says how to fix what is missing
  backends: ${BACKEND_NAMES.join(', ')}
  exit status 0 when the namespace backend (the default) can run, 1 otherwise`;

const command: Command = {
  name: 'doctor',
  summary: 'check the host',
  usage: `usage: kiln doctor [--json]
  checks what this host can run (bubblewrap, cgroups, KVM, QEMU, Firecracker, the pack images and
  each backend) and says how to fix what is missing; exits 1 when the namespace backend cannot run.
    --json   the checks as JSON`,
  async run(argv) {
    const { flags, positional } = parseFlags(argv, { boolean: ['json', 'help'], string: ['backend'] });
    if (flags.help) {
      console.log(USAGE);
      return 0;
    }
    if (positional.length) throw new UsageError(`unexpected argument ${positional[0]}\n${USAGE}`);
    const only = flags.backend === undefined ? undefined : [flags.backend as string];
    if (only && !BACKEND_NAMES.includes(only[0]!)) throw new UsageError(`no backend "${only[0]}": use one of ${BACKEND_NAMES.join(', ')}`);
    const report = await doctorReport(only);
    if (flags.json) {
      console.log(JSON.stringify(report, null, 2));
    } else {
      for (const b of report.backends) {
        console.log(`backend ${b.name}: ${b.available ? 'available' : 'unavailable'}`);
        for (const c of b.checks) console.log(`  ${c.ok ? ' ok ' : 'FAIL'}  ${c.name.padEnd(20)} ${c.detail}`);
      }
      if (!only) {
        console.log('images:');
        for (const c of report.images) console.log(`  ${c.ok ? ' ok ' : 'FAIL'}  ${c.name.padEnd(20)} ${c.detail}`);
      }
    }
    const gate = only?.[0] ?? 'namespace';
    return report.backends.find((b) => b.name === gate)?.available ? 0 : 1;
  },
};
export default command;
