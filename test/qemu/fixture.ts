/**
 * Shared set-up for the QEMU tests: a real QEMU (TCG on these machines), the real agent, the real
 * shell pack image, and a private runDir/dataDir per suite that is removed afterwards.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { createQemuBackend, type QemuBackendOptions } from '../../src/backends/qemu/index.js';
import type { Backend, BackendSandbox, PackImage } from '../../src/core/backend.js';
import { REPO_ROOT } from '../../src/core/config.js';
import { resolveImage } from '../../src/images/index.js';

const execFileAsync = promisify(execFile);

export const AGENT_PATH = resolve(REPO_ROOT, 'build/kiln-agent');

export interface QemuFixture {
  dataDir: string;
  runDir: string;
  /** Template RAM files. */
  shmDir: string;
  pack: PackImage;
  backend(options?: Partial<QemuBackendOptions>): Backend;
  cleanup(): Promise<void>;
}

/** Why the QEMU tests cannot run here, or undefined when they can. */
export async function skipReason(): Promise<string | undefined> {
  const probe = await createQemuBackend({ dataDir: tmpdir(), runDir: tmpdir(), agentPath: AGENT_PATH }).probe();
  if (!probe.available && !probe.reason?.includes('kiln-agent')) return probe.reason;
  const pack = await findPack().catch((e: Error) => e);
  return pack instanceof Error ? pack.message : undefined;
}

export async function findPack(): Promise<PackImage> {
  const dataDir = process.env.KILN_DATA_DIR ?? '/var/lib/kiln';
  const img = await resolveImage('shell', dataDir);
  return { name: img.name, hash: img.hash, imagePath: img.imagePath, env: img.env, run: img.run };
}

export async function setup(): Promise<QemuFixture> {
  if (
    !(await stat(AGENT_PATH).then(
      () => true,
      () => false,
    ))
  ) {
    await execFileAsync('bash', [resolve(REPO_ROOT, 'agent/build.sh')]);
  }
  const base = await mkdtemp(join(tmpdir(), 'kiln-qemu-test-'));
  const dataDir = join(base, 'data');
  const runDir = join(base, 'run');
  const pack = await findPack();
  const backends: Backend[] = [];
  return {
    dataDir,
    runDir,
    pack,
    shmDir: join(base, 'shm'),
    backend(options = {}) {
      const b = createQemuBackend({ dataDir, runDir, agentPath: AGENT_PATH, shmDir: join(base, 'shm'), ...options });
      backends.push(b);
      return b;
    },
    async cleanup() {
      await Promise.allSettled(backends.map((b) => b.close()));
      await rm(base, { recursive: true, force: true });
    },
  };
}

export function spec(f: QemuFixture, id: string, extra: Record<string, unknown> = {}) {
  return { id, pack: f.pack, cpus: 1, memoryMib: 256, diskMib: 64, ...extra };
}

export async function sh(sb: BackendSandbox, script: string): Promise<{ stdout: string; stderr: string; exitCode: number | null }> {
  let stdout = '';
  let stderr = '';
  const r = await sb.agent.exec(
    { argv: ['/bin/sh', '-c', script] },
    {
      onStdout: (d) => {
        stdout += d.toString();
      },
      onStderr: (d) => {
        stderr += d.toString();
      },
    },
  ).result;
  return { stdout, stderr, exitCode: r.exitCode };
}

/**
 * QEMU processes whose pidfile lives under `runDir` (what a leak would look like). With
 * `idleSpares: false`, spares still waiting in `<runDir>/qemu/spares/<id>` are left out (a taken
 * spare's directory has moved to `vms/`).
 */
export async function qemuProcessesUnder(runDir: string, o: { idleSpares?: boolean } = {}): Promise<number[]> {
  const idle = o.idleSpares === false ? new Set(await readdir(`${runDir}/qemu/spares`).catch(() => [] as string[])) : new Set<string>();
  const pids: number[] = [];
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const argv = (await readFile(`/proc/${e}/cmdline`).catch(() => Buffer.alloc(0))).toString().split('\0');
    const i = argv.indexOf('-pidfile');
    const st = await readFile(`/proc/${e}/stat`, 'utf8').catch(() => '');
    const name = (argv[argv.indexOf('-name') + 1] ?? '').split(',')[0]!.replace(/^kiln-/, '');
    if (i >= 0 && argv[i + 1]?.startsWith(`${runDir}/`) && !/\) Z /.test(st) && !idle.has(name)) pids.push(Number(e));
  }
  return pids;
}

/** A killed child stays a zombie until Node reaps it: that counts as dead. */
export async function isAlive(pid: number): Promise<boolean> {
  const st = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return st !== '' && !/\) Z /.test(st);
}
