/**
 * The composition root: the only module that imports concrete backends. Builds the service from a
 * config: backends, packs, metrics, manager, warm pools, and the start-up scan of leftovers.
 */
import { createHash } from 'node:crypto';
import type { Backend, BackendAvailability, BackendName } from '../core/backend.js';
import type { KilnConfig } from '../core/config.js';
import { SandboxManager } from '../core/manager.js';
import { Metrics } from '../core/metrics.js';
import { WarmPools } from '../core/pools.js';
import { createNamespaceBackend } from '../backends/namespace/namespace-backend.js';
import { PackBuilds } from './pack-builds.js';
import { createPackCatalog } from './pack-catalog.js';
import type { KilnService } from './service.js';
import { optionalBackends } from './optional-backends.js';

export interface ComposeOptions {
  log?: (msg: string, fields?: Record<string, unknown>) => void;
  /** Skip the leftovers scan (tests that run several services side by side). */
  skipScan?: boolean;
}

export function cgroupNameFor(runDir: string): string {
  return runDir === '/run/kiln' ? 'kiln' : `kiln-${createHash('sha256').update(runDir).digest('hex').slice(0, 8)}`;
}

/** Every backend this build knows, constructed but not started (no scan, no sandboxes). */
export async function createBackends(config: KilnConfig, log: (msg: string, fields?: Record<string, unknown>) => void = () => undefined): Promise<Map<BackendName, Backend>> {
  const backends = new Map<BackendName, Backend>();
  // Each run dir gets its own cgroup parent, so a second instance (tests) never scans the first's.
  backends.set('namespace', createNamespaceBackend({ runDir: config.runDir, agentPath: config.agentPath, maxPids: config.limits.maxPids, cgroupName: cgroupNameFor(config.runDir) }));
  for (const b of await optionalBackends(config, log)) backends.set(b.name, b);
  return backends;
}

export async function composeService(config: KilnConfig, o: ComposeOptions = {}): Promise<KilnService> {
  const log = o.log ?? (() => undefined);
  const backends = await createBackends(config, log);

  if (!o.skipScan) {
    for (const b of backends.values()) {
      const report = await b.scan().catch((e: Error) => ({ removed: [`scan failed: ${e.message}`] }));
      if (report.removed.length) log(`start-up scan (${b.name}) removed leftovers`, { removed: report.removed });
    }
  }

  const sources = { builtinDir: config.packsDir, customDir: config.customPacksDir };
  const packs = await createPackCatalog(config.dataDir, sources, log);
  const packBuilds = new PackBuilds({ dataDir: config.dataDir, sources, catalog: packs, log });
  let manager!: SandboxManager;
  const metrics = new Metrics({ queueDepth: () => manager.admission.stats.queued, inUse: () => manager.admission.stats.inUse });
  let pools: WarmPools | undefined;
  const targets = config.poolTargets.filter((t) => t.target > 0).flatMap((t) => {
    const backend = t.backend ?? config.defaultBackend;
    if (backends.has(backend)) return [{ ...t, backend }];
    log('warm pool skipped: its backend is not set up on this host', { pool: `${backend}/${t.pack}` });
    return [];
  });
  manager = new SandboxManager({ config, backends, packs, metrics, log, get pools() { return pools; } });
  manager.startHealthChecks();
  if (targets.length) {
    const l = config.limits;
    pools = new WarmPools({
      targets: targets.map(({ backend, pack, target }) => ({ key: { backend, pack, cpus: l.defaultCpus, memoryMib: l.defaultMemoryMib, diskMib: l.defaultDiskMib }, target })),
      start: (k) => manager.startPoolMember(k),
      maxAgeMs: 10 * 60_000,
      refillConcurrency: 1,
      metrics,
      log,
    });
    pools.start();
  }

  let availability: Promise<BackendAvailability[]> | undefined;
  return {
    config, manager, packs, packBuilds, backends, metrics, pools,
    availability: () => (availability ??= Promise.all([...backends.values()].map((b) => b.probe()))),
    async close() {
      await packBuilds.close();
      await pools?.close();
      await manager.close();
      await Promise.allSettled([...backends.values()].map((b) => b.close()));
    },
  };
}

// The namespace backend's cgroup probes for kiln doctor: the CLI reaches backend code only through
// the composition root (.dependency-cruiser.cjs).
export { cgroupMode, probeCgroups } from '../core/cgroups.js';
