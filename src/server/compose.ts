/**
 * The composition root: builds the service from a config: the registered backends
 * (./backends.ts), packs, metrics, manager, warm pools, and the start-up scan of leftovers.
 */

import { availableParallelism } from 'node:os';
import type { BackendAvailability } from '../core/backend.js';
import { favorDynamicModifications } from '../core/cgroups.js';
import { CodeContexts } from '../core/code-contexts.js';
import type { KilnConfig } from '../core/config.js';
import { InstanceLock } from '../core/instance-lock.js';
import { Journal } from '../core/journal.js';
import { KeyRing } from '../core/keys.js';
import { SandboxManager } from '../core/manager.js';
import { Metrics } from '../core/metrics.js';
import type { NetworkEventLog } from '../core/network.js';
import { zygoteOf } from '../core/packs.js';
import { WarmPools } from '../core/pools.js';
import { type RunnerKey, Runners } from '../core/runners.js';
import type { Store } from '../core/store.js';
import { NetworkManager } from '../net/manager.js';
import { openStore } from '../store/index.js';
import { Workspaces } from '../workspace/service.js';
import { createBackends } from './backends.js';
import { PackBuilds } from './pack-builds.js';
import { createPackCatalog } from './pack-catalog.js';
import type { CloseOptions, KilnService } from './service.js';

type Log = (msg: string, fields?: Record<string, unknown>) => void;

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
  let parts: StoreParts = {};
  try {
    // The store next: a database this kiln cannot use (schema too new, in use, unreachable) stops
    // the start before any backend scans or starts anything.
    parts = await openStoreParts(config, log);
    return await composeWithStore(config, o, log, parts, lock);
  } catch (e) {
    await closeStoreParts(parts);
    await lock.release();
    throw e;
  }
}

interface StoreParts {
  store?: Store;
  journal?: Journal;
  keys?: KeyRing;
}

async function closeStoreParts({ store, journal, keys }: StoreParts): Promise<void> {
  keys?.close();
  await journal?.close();
  await store?.close();
}

async function openStoreParts(config: KilnConfig, log: Log): Promise<StoreParts> {
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

async function composeWithStore(config: KilnConfig, o: ComposeOptions, log: Log, parts: StoreParts, lock: InstanceLock): Promise<KilnService> {
  const { store, journal, keys } = parts;
  if (config.cgroupFavorDynmods && process.getuid?.() === 0) {
    const r = await favorDynamicModifications();
    if (r.state === 'set') log('cgroup2 remounted with favordynmods: sandbox processes join their cgroups without waiting for an RCU grace period', { mount: r.mount });
    if (r.state === 'failed') log('favordynmods not set: each sandbox start waits for an RCU grace period when it joins its cgroup (KILN_CGROUP_FAVOR_DYNMODS=0 to not try)', { error: r.error });
  }
  const backends = await createBackends(config, log);

  const sources = { builtinDir: config.packsDir, customDir: config.customPacksDir };
  const packs = await createPackCatalog(config.dataDir, sources, log);
  const packBuilds = new PackBuilds({ dataDir: config.dataDir, sources, catalog: packs, log });
  let manager!: SandboxManager;
  const workspaces = config.workspaces.roots.length ? new Workspaces({ config: config.workspaces, agentPath: config.agentPath, maxFileBytes: config.limits.maxFileBytes, log }) : undefined;
  const metrics = new Metrics({ queueDepth: () => manager.admission.stats.queued, inUse: () => manager.admission.stats.inUse });
  let pools: WarmPools | undefined;
  let runners: Runners | undefined;
  // Every name was checked against the registry by createBackends: a pool names a backend we built.
  const targets = config.poolTargets.filter((t) => t.target > 0).map((t) => ({ ...t, backend: t.backend ?? config.defaultBackend }));
  // With a store, each sandbox's network events are kept there too: through a restart and after its delete.
  const eventLog: NetworkEventLog | undefined =
    store && journal
      ? {
          record: (sandboxId, event) => journal.record({ type: 'network.event', sandboxId, event }),
          load: async (sandboxId, after, limit) => {
            await journal.flush().catch(() => undefined);
            return store.networkEvents(sandboxId, after, limit);
          },
        }
      : undefined;
  const network = new NetworkManager(config.network, config.runDir, log, eventLog);
  metrics.networkGauges(() => network.counters());
  manager = new SandboxManager({
    config,
    backends,
    packs,
    metrics,
    log,
    journal,
    node: config.nodeId,
    workspaces,
    network,
    get pools() {
      return pools;
    },
    get runners() {
      return runners;
    },
  });
  // The sandboxes an earlier run left running first: the scan then removes only true orphans.
  const ownerOf = (keyId: string) => {
    if (!keys) return 'unknown' as const;
    const k = keys.get(keyId);
    return k && !k.revokedAt ? { keyId: k.id, limits: k.limits } : ('revoked' as const);
  };
  const back = await manager.reattach(ownerOf);
  if (back.reattached.length || back.lost.length) log('start-up: reattached sandboxes', { reattached: back.reattached.length, lost: back.lost, ms: back.ms });
  await manager.restoreNetworks().catch((e: Error) => log('start-up: sandbox networks not restored', { error: e.message }));
  if (!o.skipScan) {
    for (const b of backends.values()) {
      const report = await b.scan().catch((e: Error) => ({ removed: [`scan failed: ${e.message}`] }));
      if (report.removed.length) log(`start-up scan (${b.name}) removed leftovers`, { removed: report.removed });
    }
  }
  manager.startHealthChecks();
  if (targets.length) {
    const l = config.limits;
    pools = new WarmPools({
      targets: targets.map(({ backend, pack, target }) => ({ key: { backend, pack, cpus: l.defaultCpus, memoryMib: l.defaultMemoryMib, diskMib: l.defaultDiskMib }, target })),
      start: (k) => manager.startPoolMember(k),
      maxAgeMs: 10 * 60_000,
      refillConcurrency: 1,
      maxRefillConcurrency: Math.max(2, availableParallelism()),
      metrics,
      log,
    });
    pools.start();
  }
  if (config.forkRuns.enabled && config.forkRuns.idle > 0 && backends.has('namespace')) {
    const l = config.limits;
    const size = { cpus: l.defaultCpus, memoryMib: l.defaultMemoryMib, diskMib: l.defaultDiskMib };
    // The pools' targets of packs with a zygote start as runners too: the first runs are warm.
    const prestart: Array<{ key: RunnerKey; count: number }> = [];
    for (const t of targets) {
      const pack = t.backend === 'namespace' ? await packs.get(t.pack).catch(() => undefined) : undefined;
      const image = pack && (await packs.image(t.pack).catch(() => undefined));
      if (pack && image && zygoteOf(pack, image)) prestart.push({ key: { pack: t.pack, ...size }, count: t.target });
    }
    runners = new Runners({
      start: (k, signal) => manager.startRunner(k, signal),
      maxIdle: config.forkRuns.idle,
      maxRuns: 1000,
      maxAgeMs: 10 * 60_000,
      prestart,
      log,
    });
    runners.start();
  }

  if (workspaces) {
    metrics.workspaceGauges(() =>
      workspaces.sizes(
        manager
          .list({ limit: 1000 })
          .sandboxes.filter((s) => s.workspace)
          .map((s) => s.id),
      ),
    );
    // The workspace sandboxes a previous run kept (a stop, a crash): back under their ids, over
    // their changes; what cannot be restored now stays on disk for the next start.
    const found = await workspaces.kept(ownerOf);
    if (found.removed.length) log('start-up: removed workspaces without a usable record', { removed: found.removed });
    // Those reattached above run on with their processes; the others start again over their changes.
    const kept = found.kept.filter((k) => !manager.peek(k.id));
    if (kept.length) {
      const r = await manager.restore(kept);
      log('start-up: restored workspace sandboxes', { restored: r.restored, failed: r.failed });
    }
  }

  // Sandboxes a previous run paused: listed again (state paused), resumable under their ids.
  const paused = await manager.pauses.adoptPaused((keyId) => {
    if (!keys) return 'unknown';
    const k = keys.get(keyId);
    return k && !k.revokedAt ? { keyId: k.id, limits: k.limits } : 'revoked';
  });
  if (paused.adopted.length || paused.removed.length) log('start-up: paused sandboxes', paused);
  const sweep = setInterval(
    () => void manager.pauses.sweepSnapshots().catch((e: Error) => log('snapshot retention sweep failed', { error: e.message })),
    Math.min(60_000, Math.max(1000, config.snapshots.retentionSec * 100)),
  );
  sweep.unref();
  void manager.pauses.sweepSnapshots().catch(() => undefined);

  let availability: Promise<BackendAvailability[]> | undefined;
  return {
    config,
    manager,
    contexts: new CodeContexts(manager),
    packs,
    packBuilds,
    backends,
    metrics,
    pools,
    runners,
    store,
    journal,
    keys,
    workspaces,
    availability: () => (availability ??= Promise.all([...backends.values()].map((b) => b.probe()))),
    async close(co: CloseOptions = {}) {
      clearInterval(sweep);
      await packBuilds.close();
      await pools?.close();
      await runners?.close();
      await manager.close(co.keepSandboxes);
      await Promise.allSettled([...backends.values()].map((b) => b.close()));
      await closeStoreParts(parts);
      await lock.release();
    },
  };
}
