/**
 * The composition root: builds the service from a config: the registered backends
 * (./backends.ts), packs, metrics, manager, warm pools, and the start-up scan of leftovers.
 */
import type { BackendAvailability } from '../core/backend.js';
import type { KilnConfig } from '../core/config.js';
import { SandboxManager } from '../core/manager.js';
import { InstanceLock } from '../core/instance-lock.js';
import { Metrics } from '../core/metrics.js';
import { WarmPools } from '../core/pools.js';
import { PackBuilds } from './pack-builds.js';
import { createPackCatalog } from './pack-catalog.js';
import type { KilnService } from './service.js';
import { createBackends } from './backends.js';

export interface ComposeOptions {
  log?: (msg: string, fields?: Record<string, unknown>) => void;
  /** Skip the leftovers scan (tests that run several services side by side). */
  skipScan?: boolean;
  /** Where the service will listen: named to a second service refused by the run directory's lock. */
  address?: string;
}

export async function composeService(config: KilnConfig, o: ComposeOptions = {}): Promise<KilnService> {
  const log = o.log ?? (() => undefined);
  // Before anything touches the run directory: the scan below removes what it does not know, so a
  // second service on the same run directory must not get this far (core/instance-lock.ts).
  const lock = await InstanceLock.acquire(config.runDir, o.address);
  try {
    return await compose(config, log, o, lock);
  } catch (e) {
    await lock.release();
    throw e;
  }
}

async function compose(config: KilnConfig, log: NonNullable<ComposeOptions['log']>, o: ComposeOptions, lock: InstanceLock): Promise<KilnService> {
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
  // Every name was checked against the registry by createBackends: a pool names a backend we built.
  const targets = config.poolTargets.filter((t) => t.target > 0).map((t) => ({ ...t, backend: t.backend ?? config.defaultBackend }));
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
      await lock.release();
    },
  };
}
