/**
 * Real workloads in a one-CPU namespace sandbox against the same work on the host with one CPU,
 * same run (#15): `go test` of standard-library packages, a CPU-bound Python program and a Node
 * test suite.
 *
 * The host side runs the pack image's own toolchain (same Go, Python and Node builds as the
 * sandbox): the image is loop-mounted once and each host sample runs `chroot` into it under
 * `taskset -c <the sandbox's CPU>`, from a private mount namespace that adds /proc, /dev and
 * disk-backed /tmp and /workspace (kept across samples: the Go build cache stays warm). No user,
 * pid or network namespace, no cgroup, no seccomp: the host as far as the CPU is concerned.
 *
 * Both sides run the same bash script and time the workload inside it (`date +%s%N`), so HTTP
 * and sandbox set-up are outside the numbers. Each side runs the workload once untimed (warm
 * build cache, page cache), then host and sandbox samples alternate so load from other tenants of
 * the machine falls on both alike.
 *
 * Run alone: `node --import tsx bench/workloads.ts [--samples N]` (builds nothing: run
 * scripts/build.sh first); `npm run bench` runs it with the rest.
 */
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import type { KilnClient } from '../sdk/src/index.js';
import { resolveImage } from '../src/images/index.js';
import { startServerProcess } from './server.js';
import { argValue, mergeRuns, percentile, type Row, ratio, renderTable, runCmd } from './stats.js';

const run = promisify(execFile);

export interface WorkloadOptions {
  samples: number;
  dataDir: string;
}

interface Workload {
  pack: string;
  name: string;
  files: Record<string, string>;
  /** Run in /workspace/w; must exit 0. */
  command: string;
}

/** A CPU-bound pure-Python program: recursion, a sieve, sorting, string and dict work (~1.5 s). */
const PYTHON_BENCH = `import random

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

def sieve(n):
    is_p = bytearray([1]) * (n + 1)
    is_p[0:2] = b"\\0\\0"
    for i in range(2, int(n ** 0.5) + 1):
        if is_p[i]:
            is_p[i * i :: i] = bytes(len(range(i * i, n + 1, i)))
    return sum(is_p)

rng = random.Random(42)
assert fib(29) == 514229
assert sieve(5_000_000) == 348513
xs = [rng.random() for _ in range(1_000_000)]
xs.sort()
words = {}
for i in range(1_000_000):
    w = "w%d" % (i % 5000)
    words[w] = words.get(w, 0) + len(w)
assert len(words) == 5000
print("ok")
`;

/** A Node test suite: 8 files of 4 tests each, JSON, sorting, regular expressions and maps. */
function nodeSuite(): Record<string, string> {
  const files: Record<string, string> = { 'package.json': '{"name":"suite","version":"1.0.0","type":"module"}\n' };
  for (let f = 0; f < 8; f++) {
    files[`test/t${f}.test.js`] = `import { test } from 'node:test';
import assert from 'node:assert/strict';
const seed = ${f + 1};
const rand = (() => { let s = seed; return () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648; })();
test('json round trip', () => {
  const data = Array.from({ length: 5000 }, (_, i) => ({ id: i, name: 'n' + i, tags: ['a', 'b', String(i % 7)], v: rand() }));
  for (let k = 0; k < 3; k++) assert.equal(JSON.parse(JSON.stringify(data)).length, 5000);
});
test('sorting', () => {
  const xs = Array.from({ length: 50000 }, rand);
  xs.sort((a, b) => a - b);
  for (let i = 1; i < xs.length; i++) assert.ok(xs[i - 1] <= xs[i]);
});
test('regular expressions', () => {
  const text = Array.from({ length: 5000 }, (_, i) => 'user' + i + '@example' + (i % 13) + '.com').join(' ');
  assert.equal(text.match(/[a-z0-9]+@example(\\d+)\\.com/g).length, 5000);
});
test('maps', () => {
  const m = new Map();
  for (let i = 0; i < 50000; i++) m.set('k' + (i % 12500), (m.get('k' + (i % 12500)) ?? 0) + i);
  assert.equal(m.size, 12500);
});
`;
  }
  return files;
}

export const WORKLOADS: Workload[] = [
  { pack: 'go', name: '`go test -short strings sort container/list encoding/json` (warm build cache)', files: {}, command: 'go test -count=1 -short strings sort container/list encoding/json' },
  { pack: 'python', name: 'CPU-bound Python (recursion, sieve, sort, dicts)', files: { 'bench.py': PYTHON_BENCH }, command: 'python3 bench.py' },
  { pack: 'node', name: '`node --test`: 8 files, 32 tests', files: nodeSuite(), command: 'node --test' },
];

/**
 * The script both sides run: the workload, its output shown only when it fails, then bash's
 * `time` of it: wall, user and system seconds (CPU time moves less than wall time when other
 * tenants load the machine).
 */
function timedScript(command: string): string {
  return `cd /workspace/w\nTIMEFORMAT='%3R %3U %3S'\n{ time ${command} > /tmp/.workload.out 2>&1 || { cat /tmp/.workload.out; exit 1; }; } 2> /tmp/.workload.time\ncat /tmp/.workload.time`;
}

interface Timing {
  wallMs: number;
  cpuMs: number;
}

function timing(out: string): Timing {
  const [real, user, sys] = (out.trim().split('\n').at(-1) ?? '').split(' ').map(Number);
  if (real === undefined || user === undefined || sys === undefined || ![real, user, sys].every(Number.isFinite)) throw new Error(`workload printed no time: ${out.slice(-500)}`);
  return { wallMs: real * 1000, cpuMs: (user + sys) * 1000 };
}

interface HostSide {
  run(script: string): Promise<string>;
  close(): Promise<void>;
}

/** The pack image's root on the host, chrooted into under taskset (see the header). */
async function hostSide(imagePath: string, env: Record<string, string>, cpu: number, files: Record<string, string>): Promise<HostSide> {
  const base = await mkdtemp(join(tmpdir(), 'kiln-bench-host-'));
  const mnt = join(base, 'root');
  const tmp = join(base, 'tmp');
  const ws = join(base, 'workspace');
  await mkdir(mnt);
  await mkdir(tmp);
  await chmod(tmp, 0o1777);
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(ws, 'w', path)), { recursive: true });
    await writeFile(join(ws, 'w', path), content);
  }
  await mkdir(join(ws, 'w'), { recursive: true });
  await run('mount', ['-t', 'squashfs', '-o', 'loop,ro', imagePath, mnt]);
  const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  const setup = [
    `mount --bind ${tmp} ${mnt}/tmp`,
    `mount --bind ${ws} ${mnt}/workspace`,
    `mount -t proc proc ${mnt}/proc`,
    `mount --rbind /dev ${mnt}/dev`,
    `exec taskset -c ${cpu} chroot ${mnt} /usr/bin/env -i "$@"`,
  ].join('\n');
  return {
    run: (script) => runCmd('unshare', ['--mount', '--propagation', 'private', 'sh', '-ec', setup, 'sh', ...envArgs, '/bin/bash', '-ec', script]),
    close: async () => {
      await run('umount', [mnt]).catch(() => undefined);
      await rm(base, { recursive: true, force: true });
    },
  };
}

/** nr_periods and nr_throttled of the sandbox's cpu cgroup, found from its agent's pid. */
async function throttling(pid: number): Promise<{ periods: number; throttled: number } | undefined> {
  const lines = (await readFile(`/proc/${pid}/cgroup`, 'utf8')).split('\n');
  const v1 = lines.find((l) => l.split(':')[1]?.split(',').includes('cpu'));
  let file: string;
  if (v1) file = join('/sys/fs/cgroup', v1.split(':')[1]!, v1.split(':')[2]!, 'cpu.stat');
  else {
    const v2 = lines.find((l) => l.startsWith('0::'));
    if (!v2) return undefined;
    file = join('/sys/fs/cgroup', dirname(v2.slice(3)), 'cpu.stat'); // the agent sits in <sandbox>/agent
  }
  const text = await readFile(file, 'utf8').catch(() => '');
  const n = (k: string) => Number(new RegExp(`^${k} (\\d+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
  return { periods: n('nr_periods'), throttled: n('nr_throttled') };
}

async function benchOne(kiln: KilnClient, w: Workload, o: WorkloadOptions): Promise<Row[]> {
  const sb = await kiln.sandboxes.create({ pack: w.pack, cpus: 1 });
  let host: HostSide | undefined;
  try {
    const cpu = Number(String(sb.details.cpuList ?? '0').split(/[,-]/)[0]);
    for (const [path, content] of Object.entries(w.files)) await kiln.sandboxes.writeFile(sb.id, `/workspace/w/${path}`, content);
    await kiln.sandboxes.exec(sb.id, { cmd: ['mkdir', '-p', '/workspace/w'] });
    const img = await resolveImage(w.pack, o.dataDir);
    host = await hostSide(img.imagePath, img.env, cpu, w.files);
    const script = timedScript(w.command);
    const inSandbox = async () => {
      const r = await kiln.sandboxes.exec(sb.id, { cmd: ['bash', '-ec', script], timeoutMs: 300_000 });
      if (r.exitCode !== 0) throw new Error(`${w.pack} workload failed in the sandbox (exit ${r.exitCode}): ${r.stdout.slice(-500)}${r.stderr.slice(-500)}`);
      return timing(r.stdout);
    };
    const onHost = async () => timing(await host!.run(script));
    await onHost(); // warm-up: build cache, page cache
    await inSandbox();
    const before = await throttling(sb.details.pid as number);
    const hostT: Timing[] = [];
    const sandboxT: Timing[] = [];
    for (let i = 0; i < o.samples; i++) {
      hostT.push(await onHost());
      sandboxT.push(await inSandbox());
    }
    const hostMs = hostT.map((x) => x.wallMs);
    const sandboxMs = sandboxT.map((x) => x.wallMs);
    const hostCpu = percentile(
      hostT.map((x) => x.cpuMs),
      50,
    );
    const sandboxCpu = percentile(
      sandboxT.map((x) => x.cpuMs),
      50,
    );
    const after = await throttling(sb.details.pid as number);
    const h = percentile(hostMs, 50);
    const s = percentile(sandboxMs, 50);
    const throttled = before && after ? `; sandbox throttled in ${after.throttled - before.throttled} of ${after.periods - before.periods} periods` : '';
    return [
      {
        group: 'workload',
        name: `host, 1 CPU (taskset -c ${cpu}, the pack's toolchain): ${w.name}`,
        p50: h,
        p99: percentile(hostMs, 99),
        note: `n=${o.samples}; CPU time (user+sys) p50 ${hostCpu.toFixed(0)} ms`,
      },
      {
        group: 'workload',
        name: `namespace sandbox, cpus 1 (CPU ${cpu}): ${w.name}`,
        p50: s,
        p99: percentile(sandboxMs, 99),
        vsBaseline: `${ratio(s, h)} host`,
        target: '≤ 1.3× host',
        met: s <= 1.3 * h,
        note: `n=${o.samples}, alternating with the host's (wall ms, host/sandbox: ${hostMs.map((x, i) => `${x.toFixed(0)}/${sandboxMs[i]!.toFixed(0)}`).join(', ')}); CPU time (user+sys) p50 ${sandboxCpu.toFixed(0)} ms, ${ratio(sandboxCpu, hostCpu)} host's${throttled}`,
      },
    ];
  } finally {
    await host?.close();
    await kiln.sandboxes.delete(sb.id).catch(() => undefined);
  }
}

export async function benchWorkloads(o: WorkloadOptions): Promise<Row[]> {
  const p = await startServerProcess({ KILN_DATA_DIR: o.dataDir, KILN_POOL: '' });
  const rows: Row[] = [];
  try {
    for (const w of WORKLOADS) {
      console.error(`bench: workload ${w.pack}: ${w.command}…`);
      try {
        rows.push(...(await benchOne(p.client, w, o)));
      } catch (e) {
        rows.push({ group: 'workload', name: w.name, note: `not measured: ${(e as Error).message.split('\n')[0]}` });
      }
    }
  } finally {
    await p.close();
  }
  return rows;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const samples = Number(argValue('--samples') ?? 5);
  benchWorkloads({ samples, dataDir: process.env.KILN_DATA_DIR ?? '/var/lib/kiln' }).then(
    (rows) => console.log(renderTable(mergeRuns([rows]), 1)),
    (e) => {
      console.error(e);
      process.exitCode = 1;
    },
  );
}
