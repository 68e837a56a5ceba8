/**
 * The contract every sandbox backend implements. The backends are listed once, in the registry
 * (src/server/backends.ts), the only module that imports them; everything else sees this
 * (.dependency-cruiser.cjs checks it).
 */
import type { AgentClient } from '../protocol/agent-client.js';
import type { PackImage, ZygoteSpec } from './packs.js';

// PackImage lives with the other pack types; re-exported here, where backends have always found it.
export type { PackImage } from './packs.js';

/**
 * A backend's name as registered in src/server/backends.ts (namespace, qemu, firecracker, …). The
 * core takes any name; the registry is what knows which exist, and names outside it are refused
 * where they enter (config, request schemas).
 */
export type BackendName = string;

/** One fact about the host that a backend needs, with what to do when it fails. */
export interface HostCheck {
  name: string;
  ok: boolean;
  /** What was found, or what is missing and how to fix it. */
  detail: string;
}

export interface BackendCapabilities {
  /** Snapshot/template clones for fast starts. */
  snapshots: boolean;
  /** Hardware-virtualised isolation (a separate guest kernel). */
  separateKernel: boolean;
  /** exec can switch to other uids than the sandbox's one identity. */
  multipleUids: boolean;
  maxCpus: number;
  maxMemoryMib: number;
  /**
   * Runs a sandbox over a workspace (SandboxSpec.workspace: /workspace as an overlay of a host
   * project), and which kind it takes: 'mount' (host mounts, src/workspace/mounts.ts) or 'images'
   * (a squashfs snapshot and the upper image as drives, src/workspace/images.ts); false: none.
   */
  workspace: false | 'mount' | 'images';
}

export interface BackendAvailability {
  name: BackendName;
  available: boolean;
  /** Why not, and what to do about it (empty when available). */
  reason?: string;
  capabilities: BackendCapabilities;
  /** Facts worth showing (versions, accel, …). */
  info?: Record<string, unknown>;
  /** Every host check behind `available` (kiln doctor prints these; nobody repeats them). */
  checks: HostCheck[];
}

export interface ProbeOptions {
  /**
   * Also try what only an administrator's check should (kiln doctor): e.g. create and remove a
   * real sandbox cgroup, instead of looking at the mounts.
   */
  thorough?: boolean;
}

/** Availability from checks: available when every check passed; the reason lists the failed ones. */
export function availabilityFrom(name: BackendName, checks: HostCheck[], capabilities: BackendCapabilities, info?: Record<string, unknown>): BackendAvailability {
  const failed = checks.filter((c) => !c.ok);
  return {
    name,
    available: failed.length === 0,
    capabilities,
    info,
    checks,
    reason: failed.length ? failed.map((c) => `${c.name}: ${c.detail}`).join('; ') : undefined,
  };
}

export interface SandboxSpec {
  id: string;
  pack: PackImage;
  cpus: number;
  memoryMib: number;
  diskMib: number;
  /** A workspace sandbox: /workspace is an overlay of a host project (see SandboxWorkspace). */
  workspace?: SandboxWorkspace;
  /** Backend-specific overrides (qemu: kernel, bootArgs; firecracker: rate limiters …). */
  backendOptions?: Record<string, unknown>;
  /**
   * A runner for fork runs (src/core/runners.ts; the namespace backend only):
   * the interpreter its agent starts as the zygote, and the environment of the runs.
   */
  zygote?: ZygoteSpec;
}

/**
 * Where a workspace sandbox's /workspace comes from; `.git` is read-only unless `gitWritable`.
 * - 'mount' (namespace; src/workspace/mounts.ts prepared it): an overlay of `lowerDir` (the
 *   idmapped project bind) with `<mntDir>/upper` and `<mntDir>/work`. The sandbox runs as
 *   `hostUid`, the uid the workspace was prepared for (owner of its upper layer), not one the
 *   backend allocates.
 * - 'images' (microVMs; src/workspace/images.ts): `lowerImage` (squashfs snapshot of the project)
 *   and `upperImage` (the ext4 upper image, not mounted on the host meanwhile) as extra drives;
 *   the guest agent mounts the overlay. Always a cold boot (a template has no such drives).
 */
export type SandboxWorkspace =
  | { kind: 'mount'; lowerDir: string; mntDir: string; hostUid: number; gitWritable: boolean }
  | { kind: 'images'; lowerImage: string; upperImage: string; gitWritable: boolean };

export interface CreateOptions {
  signal?: AbortSignal;
  /** Budget for boot + agent handshake. */
  readyTimeoutMs: number;
}

export interface SandboxUsage {
  memoryBytes?: number;
  /** Count of OOM kills inside the sandbox so far (monotonic). */
  oomKills?: number;
  pids?: number;
}

/** A running sandbox as a backend owns it. */
export interface BackendSandbox {
  readonly id: string;
  readonly agent: AgentClient;
  /** Shown by GET /v1/sandboxes/:id: pid, accel, bootMs / restoreMs, cloneOf, … */
  readonly details: Record<string, unknown>;
  /** Host-side accounting (cgroup counters); may be cheap to call after each exec. */
  usage(): Promise<SandboxUsage>;
  /** Registers a listener for the sandbox dying on its own (crash, OOM of the agent, VM exit). */
  onExit(listener: (reason: string) => void): void;
  /** Releases every resource of the sandbox. Idempotent; never throws for an already-dead sandbox. */
  destroy(): Promise<void>;
  /**
   * Lets go of a sandbox that outlives the service (a stop that keeps sandboxes): its connection
   * closes, its processes keep running, and the next start's Backend.reattach() finds it.
   * Absent: the backend cannot keep sandboxes across a restart.
   */
  detach?(): Promise<void>;
  /**
   * Saves the whole machine (memory, devices, disk) into `dir`, so that Backend.restoreMachine
   * brings it back with its processes running. `keepRunning` false: the sandbox stops for good
   * once saved (a pause; destroy() still follows). Absent: the backend keeps files only (the core
   * archives the writable paths through the agent).
   */
  /**
   * Gives the sandbox its network link (before any user code runs): the host end is named
   * `plan.hostIf`, is up, and is a port of `plan.bridge` (when set) as bridgePortCommands makes it.
   * Absent: the backend has no network.
   */
  connectNetwork?(plan: SandboxNetworkPlan): Promise<void>;
  saveMachine?(dir: string, o: { keepRunning: boolean; signal?: AbortSignal }): Promise<{ machine: Record<string, unknown> }>;
}

/**
 * The network kiln gives one sandbox (src/net). The backend makes the host end of the sandbox's
 * link (on the bridge) and the sandbox's own end (named eth0 inside, with `mac`,
 * `address`/`prefix`, a default route through `gateway`, and /etc/resolv.conf naming `dns`); the
 * network manager puts the firewall in front of it.
 */
export interface SandboxNetworkPlan {
  /** Host interface name to create (at most 15 bytes; kiln's prefix, so the start-up scan finds leftovers). */
  hostIf: string;
  /** The bridge the host end joins (src/net/link.ts bridgePortCommands: isolated from the other ports, up); absent: on none (tests). */
  bridge?: string;
  mac: string;
  address: string;
  prefix: number;
  gateway: string;
  dns: string[];
  /**
   * Limit on what the sandbox sends, Mbit/s (absent: none). The network manager polices it in its
   * nftables table for every backend, and limits what the sandbox receives on the host end; a
   * backend may shape it too, out of the sandbox's reach (namespace: a token bucket on eth0 set
   * from the host; Firecracker: the VMM's rate limiter; QEMU has none).
   */
  sendMbit?: number;
}

/** What a start found of the sandboxes an earlier run of the service left running. */
export interface ReattachReport {
  alive: BackendSandbox[];
  /** Recorded sandboxes that died meanwhile (their leftovers are removed), with the reason. */
  lost: { id: string; reason: string }[];
}

export interface ScanReport {
  /** Human-readable lines of what was found and removed. */
  removed: string[];
}

export interface Backend {
  readonly name: BackendName;
  probe(options?: ProbeOptions): Promise<BackendAvailability>;
  create(spec: SandboxSpec, options: CreateOptions): Promise<BackendSandbox>;
  /**
   * At start, before scan(): takes over every sandbox of an earlier run still alive (same id).
   * Absent: the backend keeps nothing across a restart.
   */
  reattach?(): Promise<ReattachReport>;
  /**
   * Starts `spec` from what one of its sandboxes' saveMachine wrote into `dir` (`machine`: the facts
   * it answered). The spec's pack and shape are the saved sandbox's.
   */
  restoreMachine?(spec: SandboxSpec, dir: string, machine: Record<string, unknown>, options: CreateOptions): Promise<BackendSandbox>;
  /** Start-up scan: remove everything a previous (crashed) service instance left behind, except what reattach() took over. */
  scan(): Promise<ScanReport>;
  /** Stops every sandbox this backend still owns and frees shared resources (templates, mounts). */
  close(): Promise<void>;
}
