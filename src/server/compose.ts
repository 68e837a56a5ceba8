/**
 * The composition root: builds the service from a config: the registered backends
 * (./backends.ts), packs, metrics, manager, warm pools, and the start-up scan of leftovers.
 */
import type { BackendAvailability } from '../core/backend.js';
import type { KilnConfig } from '../core/config.js';
import { SandboxManager } from '../core/manager.js';
import { Metrics } from '../core/metrics.js';
import { Journal } from '../core/journal.js';
import { KeyRing } from '../core/keys.js';
import { WarmPools } from '../core/pools.js';
import type { Store } from '../core/store.js';
import { openStore } from '../store/index.js';
import { createPackCatalog } from './pack-catalog.js';
import type { KilnService } from './service.js';
import { createBackends } from './backends.js';

type Log = (msg: string, fields?: Record<string, unknown>) => void;

export interface ComposeOptions {
  log?: (msg: string, fields?: Record<string, unknown>) => void;
  /** Skip the leftovers scan (tests that run several services side by side). */
  skipScan?: boolean;
}

export async function composeService(config: KilnConfig, o: ComposeOptions = {}): Promise<KilnService> {
  const log = o.log ?? (() => undefined);
  // The store first: a database this kiln cannot use (schema too new, in use, unreachable) stops
  // the start before any backend scans or starts anything.
  const { store, journal, keys } = await openStoreParts(config, log);
  try {
    return await composeWithStore(config, o, log, store, journal, keys);
  } catch (e) {
    keys?.close();
    await journal?.close();
    await store?.close();
    throw e;
  }
}

async function openStoreParts(config: KilnConfig, log: Log): Promise<{ store?: Store; journal?: Journal; keys?: KeyRing }> {
  const opened = await openStore(config.databaseUrl, config.dataDir);
  if (!opened) return {};
  const { store } = opened;
  log('store open', { engine: store.engine, where: opened.where, migrated: opened.migrated });
  const keys = new KeyRing(store, log);
  try {
    await store.registerNode(config.nodeId, new Date());
    await keys.start();
  } catch (e) {
    keys.close();
    await store.close();
    throw e;
  }
  return { store, journal: new Journal(store, { log }), keys };
}

async function composeWithStore(config: KilnConfig, o: ComposeOptions, log: Log, store: Store | undefined, journal: Journal | undefined, keys: KeyRing | undefined): Promise<KilnService> {
  const backends = await createBackends(config, log);

  if (!o.skipScan) {
    for (const b of backends.values()) {
      const report = await b.scan().catch((e: Error) => ({ removed: [`scan failed: ${e.message}`] }));
      if (report.removed.length) log(`start-up scan (${b.name}) removed leftovers`, { removed: report.removed });
    }
  }

  const packs = await createPackCatalog(config.dataDir, config.packsDir);
  let manager!: SandboxManager;
  const metrics = new Metrics({ queueDepth: () => manager.admission.stats.queued, inUse: () => manager.admission.stats.inUse });
  let pools: WarmPools | undefined;
  // Every name was checked against the registry by createBackends: a pool names a backend we built.
  const targets = config.poolTargets.filter((t) => t.target > 0).map((t) => ({ ...t, backend: t.backend ?? config.defaultBackend }));
  manager = new SandboxManager({ config, backends, packs, metrics, log, journal, node: config.nodeId, get pools() { return pools; } });
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
    config, manager, packs, backends, metrics, pools, store, journal, keys,
    availability: () => (availability ??= Promise.all([...backends.values()].map((b) => b.probe()))),
    async close() {
      await pools?.close();
      await manager.close();
      await Promise.allSettled([...backends.values()].map((b) => b.close()));
      keys?.close();
      await journal?.close();
      await store?.close();
    },
  };
}
