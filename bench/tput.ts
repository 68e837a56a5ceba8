/**
 * What one-shot throughput costs: `node --import tsx bench/tput.ts [--seconds 20] [--clients 8]
 * [--profile DIR] [--top 25]` (as root, cgroup v1 or v2). In the same run:
 * - bare: `clients` workers spawning `/usr/bin/python3 -c print(1)` for `seconds`: runs/s, p50, and
 *   the CPU time per run (user + system of the reaped interpreters);
 * - kiln: the service as its own process (pool python=8) in a cgroup of its own, `clients` clients
 *   posting `/v1/run` python `print(1)`: runs/s, p50, errors, and the CPU time per run of the
 *   service process itself and of everything else in its cgroup (sandboxes, bwrap, mounts);
 * - serial p50 of bare and of pooled `/v1/run` (one at a time, pool refilled between runs);
 * - with --profile, a V8 CPU profile of the service under the throughput load (`--cpu-prof`),
 *   summarised as the top self-time functions.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, rmdir, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { KilnClient } from '../sdk/src/index.js';
import { REPO_ROOT } from '../src/core/config.js';
import { waitPoolFull } from './server.js';
import { argValue, percentile, runCmd } from './stats.js';

const PY = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
const CLK_TCK = 100;

export interface TputResult {
  runsPerSec: number;
  p50Ms: number;
  errors: number;
  /** CPU ms per run: total, and (kiln only) the service process alone. */
  cpuMsPerRun: number;
  serviceCpuMsPerRun?: number;
  /** kiln only: of which its embedded database's process (when the store runs in one). */
  storeCpuMsPerRun?: number;
  errorKinds?: string;
  /** kiln only: pool hits and misses during the throughput run. */
  pool?: string;
  /** kiln only: the service's CPU ms per run by thread (threads that ended meanwhile are not counted). */
  threads?: string;
}

/** user + system time of this process's reaped children, in ms. */
async function childrenCpuMs(): Promise<number> {
  const stat = await readFile('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[13]) + Number(f[14])) * 1000) / CLK_TCK; // cutime, cstime
}

/** user + system time of each thread of a process, in ms, summed by thread name. */
async function threadCpuMs(pid: number): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const tid of await readdir(`/proc/${pid}/task`).catch(() => [] as string[])) {
    const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8').catch(() => '');
    if (!stat) continue;
    const name = Number(tid) === pid ? 'main' : stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    out.set(name, (out.get(name) ?? 0) + ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK);
  }
  return out;
}

/** user + system time of one process (all its threads), in ms. */
async function processCpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK; // utime, stime
}

/** The service's own CPU ms: its process and its node children (the embedded database's process). */
async function serviceCpuMs(pid: number): Promise<{ main: number; children: number }> {
  const kids = (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '')).split(' ').filter(Boolean).map(Number);
  let children = 0;
  for (const k of kids) {
    const comm = (await readFile(`/proc/${k}/comm`, 'utf8').catch(() => '')).trim();
    if (comm === 'node' || comm === 'MainThread') children += await processCpuMs(k).catch(() => 0);
  }
  return { main: await processCpuMs(pid), children };
}

export async function bareThroughput(clients: number, seconds: number): Promise<TputResult> {
  const cpu0 = await childrenCpuMs();
  const end = performance.now() + seconds * 1000;
  const lat: number[] = [];
  let errors = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        await runCmd(PY, ['-c', 'print(1)']).then(
          () => lat.push(performance.now() - t0),
          () => errors++,
        );
      }
    }),
  );
  const cpu = (await childrenCpuMs()) - cpu0;
  return { runsPerSec: lat.length / seconds, p50Ms: percentile(lat, 50), errors, cpuMsPerRun: cpu / Math.max(1, lat.length) };
}

/** The service's cgroup (cpuacct on v1, the unified tree on v2): where its CPU time is read. */
class ServiceCgroup {
  private constructor(
    readonly dir: string,
    private readonly v2: boolean,
  ) {}

  static async create(name: string): Promise<ServiceCgroup> {
    const v2 = !existsSync('/sys/fs/cgroup/cpuacct');
    const self = (await readFile('/proc/self/cgroup', 'utf8')).split('\n');
    const line = v2 ? self.find((l) => l.startsWith('0::')) : self.find((l) => /^\d+:([^:]*,)?cpuacct(,[^:]*)?:/.test(l));
    const own = line?.split(':')[2] ?? '/';
    const dir = join('/sys/fs/cgroup', v2 ? '' : 'cpuacct', own, name);
    await mkdir(dir, { recursive: true });
    return new ServiceCgroup(dir, v2);
  }

  /** Total CPU time of every process that ever ran in it (removed child cgroups included), in ms. */
  async cpuMs(): Promise<number> {
    if (!this.v2) return Number(await readFile(join(this.dir, 'cpuacct.usage'), 'utf8')) / 1e6;
    const m = /^usage_usec (\d+)/m.exec(await readFile(join(this.dir, 'cpu.stat'), 'utf8'));
    return Number(m?.[1] ?? 0) / 1000;
  }

  async remove(): Promise<void> {
    // Whatever the service left (it removes its own sandbox cgroups on close) goes first.
    const rmTree = async (d: string): Promise<void> => {
      for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) if (e.isDirectory()) await rmTree(join(d, e.name));
      await rmdir(d).catch(() => undefined);
    };
    await rmTree(this.dir);
  }
}

interface Service {
  client: KilnClient;
  pid: number;
  cgroup: ServiceCgroup;
  close(): Promise<void>;
}

async function startService(env: Record<string, string>, profileDir?: string): Promise<Service> {
  const base = await mkdtemp(join(tmpdir(), 'kiln-tput-'));
  await chmod(base, 0o755);
  const cgroup = await ServiceCgroup.create(`kiln-tput-${process.pid}`);
  const port = 20_000 + Math.floor(Math.random() * 2000);
  // --cpu-prof is not allowed in NODE_OPTIONS: node runs bin/kiln itself.
  const nodeArgs = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [];
  // The shell enters the cgroup, then becomes the service: every process it starts counts there.
  const child: ChildProcess = spawn('sh', ['-c', `echo $$ > ${cgroup.dir}/cgroup.procs && exec "$@"`, 'sh', process.execPath, ...nodeArgs, join(REPO_ROOT, 'bin/kiln'), 'serve'], {
    env: { ...process.env, KILN_RUN_DIR: join(base, 'run'), KILN_PORT: String(port), KILN_TOKEN: '', ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const client = new KilnClient({ baseUrl: `http://127.0.0.1:${port}` });
  const close = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    }
    await rm(base, { recursive: true, force: true });
    await cgroup.remove();
  };
  for (let i = 0; ; i++) {
    if (
      await client.health().then(
        () => true,
        () => false,
      )
    )
      break;
    if (i > 300 || child.exitCode !== null) {
      await close();
      throw new Error('the service did not start');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { client, pid: child.pid!, cgroup, close };
}

export async function kilnThroughput(s: Service, clients: number, seconds: number): Promise<TputResult> {
  await waitPoolFull(s.client, 8);
  const pool0 = await poolCounts(s.client);
  const [svc0, all0, th0] = await Promise.all([serviceCpuMs(s.pid), s.cgroup.cpuMs(), threadCpuMs(s.pid)]);
  const end = performance.now() + seconds * 1000;
  const lat: number[] = [];
  const kinds = new Map<string, number>();
  let ok = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        let kind: string | undefined;
        try {
          const r = await s.client.run({ pack: 'python', code: 'print(1)' });
          if (r.stdout !== '1\n' || r.exitCode !== 0) kind = `exit ${r.exitCode}: ${JSON.stringify(r.stdout + r.stderr).slice(0, 80)}`;
        } catch (e) {
          kind = (e as { code?: string }).code ?? (e as Error).message.slice(0, 60);
        }
        lat.push(performance.now() - t0);
        if (kind) kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
        else ok++;
      }
    }),
  );
  // The runs' sandboxes are deleted after their answers: let the last teardowns land in the count.
  await waitPoolFull(s.client, 8);
  const [svc1, all1, th1] = await Promise.all([serviceCpuMs(s.pid), s.cgroup.cpuMs(), threadCpuMs(s.pid)]);
  const threads = [...th1]
    .map(([name, ms]) => [name, (ms - (th0.get(name) ?? 0)) / Math.max(1, lat.length)] as const)
    .filter(([, ms]) => ms >= 0.05)
    .sort((a, b) => b[1] - a[1])
    .map(([name, ms]) => `${name} ${ms.toFixed(1)}`)
    .join(', ');
  const pool1 = await poolCounts(s.client);
  const errors = lat.length - ok;
  return {
    runsPerSec: ok / seconds,
    p50Ms: percentile(lat, 50),
    errors,
    errorKinds: [...kinds].map(([k, n]) => `${n}× ${k}`).join(', '),
    cpuMsPerRun: (all1 - all0) / Math.max(1, lat.length),
    serviceCpuMsPerRun: (svc1.main + svc1.children - svc0.main - svc0.children) / Math.max(1, lat.length),
    storeCpuMsPerRun: (svc1.children - svc0.children) / Math.max(1, lat.length),
    pool: `pool and runners ${pool1.hits - pool0.hits} hits, ${pool1.misses - pool0.misses} misses`,
    threads,
  };
}

/** waitPoolFull polling every 50 ms: fewer requests of its own in the service's CPU time. */
async function poolFull(kiln: KilnClient, n: number): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const { pools } = (await kiln.pools()) as { pools: Array<{ ready: number; target: number }> };
    if (pools.every((p) => p.ready >= Math.min(n, p.target))) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Warm pool and runner (fork runs) hits and misses: a one-shot run is served by one or the other. */
async function poolCounts(kiln: KilnClient): Promise<{ hits: number; misses: number }> {
  const { pools, runners = [] } = (await kiln.pools()) as { pools: Array<{ hits: number; misses: number }>; runners?: Array<{ hits: number; misses: number }> };
  const all = [...pools, ...runners];
  return { hits: all.reduce((n, p) => n + p.hits, 0), misses: all.reduce((n, p) => n + p.misses, 0) };
}

async function serialP50(n: number, fn: () => Promise<unknown>, before?: () => Promise<void>): Promise<number> {
  const out: number[] = [];
  for (let i = 0; i < n + 2; i++) {
    await before?.();
    const t0 = performance.now();
    await fn();
    if (i >= 2) out.push(performance.now() - t0);
  }
  return percentile(out, 50);
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Where a frame's code comes from: a package, kiln's own file, node's internals, or V8. */
function origin(url: string): string {
  if (!url) return '(native / V8)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1]!;
  if (url.startsWith('node:')) return 'node internals';
  if (url.startsWith('wasm://')) return 'wasm';
  return url.replace(/^file:\/\//, '').replace(`${REPO_ROOT}/`, '');
}

/**
 * A .cpuprofile (V8's format) summarised: busy CPU ms, then the top self-time functions and the
 * top origins (package or file), each as a share of the busy time.
 */
export function summariseProfile(profile: CpuProfile, top: number): string[] {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const fns = new Map<string, number>();
  const origins = new Map<string, number>();
  let busyUs = 0;
  let totalUs = 0;
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] ?? 0;
    totalUs += dt;
    const f = byId.get(id)?.callFrame;
    if (!f || f.functionName === '(idle)') return;
    busyUs += dt;
    const file = f.url.replace(/^file:\/\//, '').replace(`${REPO_ROOT}/`, '');
    const key = `${f.functionName || '(anonymous)'}${file ? ` ${file}:${f.lineNumber + 1}` : ''}`;
    fns.set(key, (fns.get(key) ?? 0) + dt);
    const o = origin(f.url);
    origins.set(o, (origins.get(o) ?? 0) + dt);
  });
  const pct = (us: number) => `${((100 * us) / Math.max(1, busyUs)).toFixed(1).padStart(5)}%`;
  const topOf = (m: Map<string, number>, n: number) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([k, us]) => `${pct(us)}  ${k}`);
  return [`busy ${(busyUs / 1000).toFixed(0)} ms of ${(totalUs / 1000).toFixed(0)} ms profiled; top self time:`, ...topOf(fns, top), 'by origin:', ...topOf(origins, Math.ceil(top / 2))];
}

async function main(): Promise<void> {
  const seconds = Number(argValue('--seconds') ?? 20);
  const clients = Number(argValue('--clients') ?? 8);
  const profileDir = argValue('--profile');
  const top = Number(argValue('--top') ?? 25);
  await runCmd('bash', [join(REPO_ROOT, 'scripts/build.sh')]);
  if (profileDir) await mkdir(profileDir, { recursive: true });
  // The data dir's images, with an embedded database of this run's own (the shared one may be
  // another service's, and a run's records must not pile up there).
  const data = await mkdtemp(join(tmpdir(), 'kiln-tput-data-'));
  await symlink(join(process.env.KILN_DATA_DIR ?? '/var/lib/kiln', 'images'), join(data, 'images'));
  const s = await startService({ KILN_DATA_DIR: data, KILN_POOL: 'python=8', KILN_MAX_SANDBOXES: '64' }, profileDir).catch(async (e) => {
    await rm(data, { recursive: true, force: true });
    throw e;
  });
  let kiln: TputResult;
  let pooledP50: number;
  let serialCpu: { all: number; service: number };
  try {
    // Serial pooled runs, each a pool hit: CPU per run counts each one's replacement too.
    await waitPoolFull(s.client, 8);
    const [svc0, all0] = await Promise.all([serviceCpuMs(s.pid), s.cgroup.cpuMs()]);
    pooledP50 = await serialP50(
      30,
      () => s.client.run({ pack: 'python', code: 'print(1)' }),
      () => poolFull(s.client, 8),
    );
    await waitPoolFull(s.client, 8);
    const [svc1, all1] = await Promise.all([serviceCpuMs(s.pid), s.cgroup.cpuMs()]);
    serialCpu = { all: (all1 - all0) / 32, service: (svc1.main + svc1.children - svc0.main - svc0.children) / 32 };
    kiln = await kilnThroughput(s, clients, seconds);
  } finally {
    await s.close();
    await rm(data, { recursive: true, force: true });
  }
  const bareP50 = await serialP50(30, () => runCmd(PY, ['-c', 'print(1)']));
  const bare = await bareThroughput(clients, seconds);
  const lines = [
    `one-shot throughput, ${clients} clients, ${seconds} s each, same run (${new Date().toISOString()})`,
    `bare ${PY} -c print(1): ${bare.runsPerSec.toFixed(1)} runs/s, p50 ${bare.p50Ms.toFixed(1)} ms, CPU ${bare.cpuMsPerRun.toFixed(1)} ms/run, ${bare.errors} errors`,
    `kiln /v1/run python print(1): ${kiln.runsPerSec.toFixed(1)} runs/s (${(kiln.runsPerSec / bare.runsPerSec).toFixed(2)}× bare), p50 ${kiln.p50Ms.toFixed(1)} ms, ` +
      `CPU ${kiln.cpuMsPerRun.toFixed(1)} ms/run (service ${kiln.serviceCpuMsPerRun!.toFixed(1)} of which its database process ${kiln.storeCpuMsPerRun!.toFixed(1)}, sandboxes and helpers ${(kiln.cpuMsPerRun - kiln.serviceCpuMsPerRun!).toFixed(1)}), ` +
      `${kiln.errors} errors${kiln.errorKinds ? `: ${kiln.errorKinds}` : ''}; ${kiln.pool}`,
    `kiln service process CPU ms per run by thread: ${kiln.threads}`,
    `serial p50: bare ${bareP50.toFixed(1)} ms, pooled /v1/run ${pooledP50.toFixed(1)} ms (${(pooledP50 / bareP50).toFixed(2)}× bare); ` +
      `CPU per serial pooled run with its replacement ${serialCpu.all.toFixed(1)} ms (service process ${serialCpu.service.toFixed(1)}, sandboxes and helpers ${(serialCpu.all - serialCpu.service).toFixed(1)})`,
  ];
  if (profileDir) {
    // One profile per thread: the service's main thread and its workers (the embedded store's).
    for (const f of (await readdir(profileDir)).filter((f) => f.endsWith('.cpuprofile')).sort()) {
      const summary = summariseProfile(JSON.parse(await readFile(join(profileDir, f), 'utf8')) as CpuProfile, top);
      lines.push(`service CPU profile ${join(profileDir, f)} (whole service life: pool fill, serial runs, throughput):`, ...summary);
      await writeFile(join(profileDir, `${f}.txt`), `${summary.join('\n')}\n`);
    }
  }
  console.log(lines.join('\n'));
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((e) => {
    console.error(e);
    process.exitCode = 1;
  });
}
