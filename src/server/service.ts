/** Everything the HTTP layer may use: the manager and read-only views. No concrete backend here. */
import type { Backend, BackendAvailability, BackendName } from '../core/backend.js';
import type { CodeContexts } from '../core/code-contexts.js';
import type { KilnConfig } from '../core/config.js';
import type { Journal } from '../core/journal.js';
import type { KeyRing } from '../core/keys.js';
import type { SandboxManager } from '../core/manager.js';
import type { Metrics } from '../core/metrics.js';
import type { PackCatalog } from '../core/packs.js';
import type { WarmPools } from '../core/pools.js';
import type { Runners } from '../core/runners.js';
import type { Store } from '../core/store.js';
import type { Workspaces } from '../workspace/service.js';
import type { PackBuilds } from './pack-builds.js';

export interface KilnService {
  config: KilnConfig;
  manager: SandboxManager;
  /** Stateful code contexts (interpreters kept per sandbox): /v1/sandboxes/:id/contexts and E2B's code interpreter. */
  contexts: CodeContexts;
  packs: PackCatalog;
  /** Custom pack builds and removal (POST/DELETE /v1/packs). */
  packBuilds: PackBuilds;
  backends: Map<BackendName, Backend>;
  metrics: Metrics;
  pools?: WarmPools;
  /** Runners of fork runs (core/runners.ts), when KILN_FORK_RUNS is on and the namespace backend is here. */
  runners?: Runners;
  /** Undefined when KILN_DATABASE_URL=off: nothing is kept and there are no API keys. */
  store?: Store;
  journal?: Journal;
  keys?: KeyRing;
  /** Workspace sandboxes' review (KILN_WORKSPACE_ROOTS set); undefined: workspaces are off. */
  workspaces?: Workspaces;
  /** Every backend's probe(), run on first call and kept for the life of the service. */
  availability(): Promise<BackendAvailability[]>;
  /** Deletes every sandbox; `keepSandboxes`: those a restart can reattach run on (SandboxManager.close). */
  close(o?: CloseOptions): Promise<void>;
}

export interface CloseOptions {
  keepSandboxes?: boolean;
}
