/** The service's record of one sandbox, wrapping what its backend owns. */
import type { BackendName, BackendSandbox } from './backend.js';
import type { LongTimer } from './long-timer.js';

export type SandboxState = 'ready' | 'stopping' | 'stopped' | 'failed';

export interface CreateSandboxOptions {
  pack: string;
  backend?: BackendName;
  cpus?: number;
  memoryMib?: number;
  diskMib?: number;
  ttlSec?: number;
  env?: Record<string, string>;
  backendOptions?: Record<string, unknown>;
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
  exitReason?: string;
}

export class Sandbox {
  state: SandboxState = 'ready';
  execsRunning = 0;
  exitReason: string | undefined;
  readonly createdAt = new Date();
  expiresAt: Date;
  ttlTimer: LongTimer | undefined;
  /** Returns the admission slot; set by the manager, safe to call more than once. */
  release: () => void = () => undefined;

  constructor(
    readonly id: string,
    readonly backendName: BackendName,
    readonly packName: string,
    readonly packEnv: Record<string, string>,
    readonly env: Record<string, string>,
    readonly size: { cpus: number; memoryMib: number; diskMib: number },
    readonly inner: BackendSandbox,
    readonly readyMs: number,
    readonly fromPool: boolean,
    ttlSec: number,
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
      ...(this.exitReason ? { exitReason: this.exitReason } : {}),
    };
  }
}
