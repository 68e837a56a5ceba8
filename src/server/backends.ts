/**
 * The registry of backends: the one list of what kiln can run sandboxes on, and the only module
 * that imports concrete backends (.dependency-cruiser.cjs checks it). Everything else derives from
 * it: the names accepted in KILN_BACKEND and KILN_POOL (checkBackendNames), the `backend` enum of
 * the request schemas and /openapi.json (and through them the SDK's generated types), the services
 * the composition root builds, `kiln doctor` (each backend's probe, with its own host checks) and
 * the CLI's --backend help.
 *
 * Adding a backend is one entry here (and its module under src/backends/<name>/). Modules are
 * imported on first use, so naming the backends costs the CLI nothing at start-up.
 */
import { createHash } from 'node:crypto';
import type { Backend, BackendName } from '../core/backend.js';
import { checkBackendNames, type KilnConfig } from '../core/config.js';
import { gatewayOf } from '../net/addr.js';
import type { VmArtifacts } from '../vmimage/index.js';

export type Log = (msg: string, fields?: Record<string, unknown>) => void;

/** What a backend's factory is given: the config, a logger and the shared guest kernel + initramfs. */
export interface BackendContext {
  config: KilnConfig;
  log: Log;
  /** cgroup parent of this service instance (one per run dir, so test instances never collide). */
  cgroupName: string;
  /** The VMM-neutral guest kernel + initramfs, built on first use and shared by the microVM backends. */
  vmImage(): Promise<VmArtifacts>;
}

export interface BackendEntry {
  readonly name: BackendName;
  /** One line for help texts and docs. */
  readonly summary: string;
  /** Builds the backend cheaply (no boot, no kernel build): a host without its VMM still starts; probe() says why. */
  create(ctx: BackendContext): Promise<Backend>;
}

export const BACKENDS = [
  {
    name: 'namespace',
    summary: 'Linux namespaces via bubblewrap, cgroups and seccomp; runs anywhere (the default)',
    async create({ config, cgroupName }) {
      const { createNamespaceBackend } = await import('../backends/namespace/namespace-backend.js');
      return createNamespaceBackend({
        runDir: config.runDir,
        agentPath: config.agentPath,
        maxPids: config.limits.maxPids,
        cgroupName,
        nameserver: gatewayOf(config.network.subnet),
        spawner: config.namespaceSpawner,
      });
    },
  },
  {
    name: 'qemu',
    summary: 'QEMU microvm machines: KVM where usable, software emulation (TCG) otherwise',
    async create({ config, log }) {
      const { createQemuBackend } = await import('../backends/qemu/index.js');
      return createQemuBackend({
        dataDir: config.dataDir,
        runDir: config.runDir,
        agentPath: config.agentPath,
        accel: config.qemuAccel,
        log: (level, msg, fields) => log(`qemu ${level}: ${msg}`, fields),
      });
    },
  },
  {
    name: 'firecracker',
    summary: 'Firecracker microVMs through its REST API (needs KVM with vmx/svm and a firecracker binary)',
    async create({ config, vmImage }) {
      const { createFirecrackerBackend } = await import('../backends/firecracker/index.js');
      return createFirecrackerBackend({ runDir: config.runDir, vmImage, firecrackerPath: config.firecrackerPath, kvm: config.firecrackerKvm });
    },
  },
] as const satisfies readonly BackendEntry[];

/** The registered names, in registry order (the first is the default). */
export const BACKEND_NAMES: readonly BackendName[] = BACKENDS.map((b) => b.name);

/** Every registered backend, constructed but not started (no scan, no sandboxes). */
export async function createBackends(config: KilnConfig, log: Log = () => undefined, only?: readonly BackendName[]): Promise<Map<BackendName, Backend>> {
  checkBackendNames(config, BACKEND_NAMES);
  const { buildVmArtifacts } = await import('../vmimage/index.js');
  let artifacts: Promise<VmArtifacts> | undefined;
  const ctx: BackendContext = {
    config,
    log,
    cgroupName: cgroupNameFor(config.runDir),
    vmImage() {
      artifacts ??= buildVmArtifacts({ dataDir: config.dataDir, agentPath: config.agentPath, onProgress: (m) => log('vm image', { step: m }) });
      artifacts.catch(() => {
        artifacts = undefined;
      });
      return artifacts;
    },
  };
  const backends = new Map<BackendName, Backend>();
  for (const entry of BACKENDS) {
    if (only && !only.includes(entry.name)) continue;
    backends.set(entry.name, await entry.create(ctx));
  }
  return backends;
}

/** Each run dir gets its own cgroup parent, so a second instance (tests) never scans the first's. */
export function cgroupNameFor(runDir: string): string {
  return runDir === '/run/kiln' ? 'kiln' : `kiln-${createHash('sha256').update(runDir).digest('hex').slice(0, 8)}`;
}

// The backends' host tools for the CLI (kiln firecracker install): the CLI reaches backend code only
// through this registry.
export const firecrackerTools = () => import('../backends/firecracker/install.js');
