/** The service's record of one sandbox, wrapping what its backend owns. */
import type { BackendName, BackendSandbox } from './backend.js';
import type { LongTimer } from './long-timer.js';
import type { NetworkRequest, SandboxNetworkInfo } from './network.js';
import type { Owner } from './quotas.js';
import type { WorkspaceRequest } from './workspace.js';

/** paused: its state is on disk (src/core/snapshots.ts) and it holds no compute until resumed. */
export type SandboxState = 'ready' | 'paused' | 'stopping' | 'stopped' | 'failed';

export interface CreateSandboxOptions {
  pack: string;
  backend?: BackendName;
  cpus?: number;
  memoryMib?: number;
  diskMib?: number;
  ttlSec?: number;
  env?: Record<string, string>;
  /** Free-form tags to find sandboxes by (GET /v1/sandboxes?label=k=v). */
  labels?: Record<string, string>;
  backendOptions?: Record<string, unknown>;
  /** Deleted after this many seconds without an exec, file transfer or review (beside ttlSec). */
  idleTimeoutSec?: number;
  /** A host project folder at /workspace, copy-on-write, reviewed before it reaches the host. */
  workspace?: WorkspaceRequest;
  /** The sandbox's network (default: the operator's KILN_NET_DEFAULT_POLICY, none unless set). */
  network?: NetworkRequest;
  /** A named snapshot to start from (its pack, backend and shape; its files or, on a microVM, its memory). */
  fromSnapshot?: string;
}

/** The smallest sandbox sizes: the API schema's bounds and the manager's checks, from one place. */
export const SIZE_MINIMUMS = {
  cpus: { min: 0, exclusive: true, unit: ' cpus' },
  memoryMib: { min: 16, exclusive: false, unit: ' MiB' },
  diskMib: { min: 1, exclusive: false, unit: ' MiB' },
  ttlSec: { min: 1, exclusive: false, unit: ' s' },
} as const;

export interface SandboxInfo {
  id: string;
  pack: string;
  backend: BackendName;
  state: SandboxState;
  createdAt: string;
  expiresAt: string;
  readyMs: number;
  cpus: number;
  memoryMib: number;
  diskMib: number;
  execsRunning: number;
  fromPool: boolean;
  details: Record<string, unknown>;
  labels: Record<string, string>;
  /** The API key that created it (absent: the admin's). */
  ownerKeyId?: string;
  exitReason?: string;
  idleTimeoutSec?: number;
  /** The host folder a workspace sandbox works on, and whether it was brought back by a restarted service. */
  workspace?: { path: string; gitWritable: boolean; sizeMib: number; restored: boolean };
  /** When it was paused (state paused only). */
  pausedAt?: string;
  /** A networked sandbox's policy and address (absent: no network, loopback only). */
  network?: SandboxNetworkInfo;
}

export class Sandbox {
  state: SandboxState = 'ready';
  execsRunning = 0;
  exitReason: string | undefined;
  expiresAt: Date;
  ttlTimer: LongTimer | undefined;
  /** Returns the admission slot; set by the manager, safe to call more than once. */
  release: () => void = () => undefined;
  /** The API key it belongs to and that key's limits; undefined: the admin's. */
  owner: Owner | undefined;
  labels: Record<string, string> = {};
  /** Numbers this sandbox's execs in its event trail (exec.started and exec.ended share it). */
  execSeq = 0;
  /** Last exec, file transfer or review (for idleTimeoutSec). */
  lastActiveAt = Date.now();
  idleTimeoutSec: number | undefined;
  idleTimer: LongTimer | undefined;
  workspace: SandboxInfo['workspace'];
  network: SandboxNetworkInfo | undefined;
  /** What the create asked for (absent: the operator's default), given again at a resume. */
  networkRequest: NetworkRequest | undefined;
  pausedAt: Date | undefined;
  /** Bytes through its port proxy and tunnels (docs/ports.md): `in` to the sandbox's servers, `out` back. */
  readonly portBytes = { in: 0, out: 0 };

  constructor(
    readonly id: string,
    readonly backendName: BackendName,
    readonly packName: string,
    readonly packEnv: Record<string, string>,
    readonly env: Record<string, string>,
    readonly size: { cpus: number; memoryMib: number; diskMib: number },
    /** Replaced while paused (a stand-in without compute) and on resume. */
    public inner: BackendSandbox,
    readonly readyMs: number,
    readonly fromPool: boolean,
    ttlSec: number,
    /** A resumed sandbox keeps its first start; a reattached one gets it from its record. */
    public createdAt = new Date(),
  ) {
    this.expiresAt = new Date(Date.now() + ttlSec * 1000);
  }

  private oomKillsSeen = 0;
  /** Consecutive liveness pings without an answer. */
  missedPings = 0;

  /**
   * Whether the backend counted an OOM kill since the last time we looked. Read only after a
   * SIGKILLed exec, so ordinary execs pay no host-side accounting cost.
   */
  async sawNewOomKill(): Promise<boolean> {
    const { oomKills } = await this.inner.usage().catch(() => ({ oomKills: undefined }));
    if (oomKills === undefined || oomKills <= this.oomKillsSeen) return false;
    this.oomKillsSeen = oomKills;
    return true;
  }

  info(): SandboxInfo {
    return {
      id: this.id,
      pack: this.packName,
      backend: this.backendName,
      state: this.state,
      createdAt: this.createdAt.toISOString(),
      expiresAt: this.expiresAt.toISOString(),
      readyMs: this.readyMs,
      ...this.size,
      execsRunning: this.execsRunning,
      fromPool: this.fromPool,
      details: this.inner.details,
      labels: this.labels,
      ...(this.owner ? { ownerKeyId: this.owner.keyId } : {}),
      ...(this.exitReason ? { exitReason: this.exitReason } : {}),
      ...(this.idleTimeoutSec ? { idleTimeoutSec: this.idleTimeoutSec } : {}),
      ...(this.workspace ? { workspace: this.workspace } : {}),
      ...(this.pausedAt ? { pausedAt: this.pausedAt.toISOString() } : {}),
      ...(this.network ? { network: this.network } : {}),
    };
  }
}
