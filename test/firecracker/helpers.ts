/** Shared fixtures: a temp run dir with stand-in kernel/initrd/pack files and a backend on fakes. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FirecrackerBackend, type FirecrackerBackendOptions } from '../../src/backends/firecracker/backend.js';
import type { SandboxSpec } from '../../src/core/backend.js';
import { type FakeOptions, fakeLauncher } from './fake-firecracker.js';

export interface Fixture {
  root: string;
  runDir: string;
  backend: FirecrackerBackend;
  launcher: ReturnType<typeof fakeLauncher>;
  trace: string[];
  spec(id: string, backendOptions?: Record<string, unknown>): SandboxSpec;
  close(): Promise<void>;
}

export async function fixture(o: { fake?: FakeOptions | ((n: number) => FakeOptions); backend?: Partial<FirecrackerBackendOptions> } = {}): Promise<Fixture> {
  // Short paths: Unix socket paths are limited to 107 bytes.
  const root = await mkdtemp(join(tmpdir(), 'kfc-'));
  const runDir = join(root, 'run');
  for (const f of ['vmlinux', 'initrd.cpio', 'pack.sqfs']) await writeFile(join(root, f), `fake ${f}\n`);
  const launcher = fakeLauncher(o.fake);
  const trace: string[] = [];
  const backend = new FirecrackerBackend({
    runDir,
    vmImage: async () => ({ vmlinuxPath: join(root, 'vmlinux'), initrdPath: join(root, 'initrd.cpio'), hash: 'kernelhash1' }),
    firecrackerPath: '/opt/fc/firecracker',
    jailer: 'never',
    launcher,
    trace: (e) => trace.push(e),
    shutdownGraceMs: 500,
    // A NIC (and its TAP) only where a test asks for one.
    network: false,
    ...o.backend,
  });
  return {
    root,
    runDir,
    backend,
    launcher,
    trace,
    spec: (id, backendOptions) => ({
      id,
      pack: { name: 'python', imagePath: join(root, 'pack.sqfs'), hash: 'packhash1', env: {} },
      cpus: 1,
      memoryMib: 256,
      diskMib: 128,
      ...(backendOptions ? { backendOptions } : {}),
    }),
    async close() {
      await backend.close().catch(() => undefined);
      for (const f of launcher.instances) f.exit('test over');
      await rm(root, { recursive: true, force: true });
    },
  };
}

export const READY = { readyTimeoutMs: 5_000 };
