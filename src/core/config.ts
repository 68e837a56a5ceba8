/** Service configuration, read once from the environment at start-up (KILN_*). */
import { realpathSync } from 'node:fs';
import os from 'node:os';
import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BackendName } from './backend.js';
import { KilnError } from './errors.js';

export interface KilnConfig {
  host: string;
  port: number;
  /** Optional Unix socket for trusted local clients (no token needed there). */
  socketPath?: string;
  /**
   * KILN_APPS_PORT: a second TCP listener on `host` that serves the port proxy only, so the web apps
   * browser links open (docs/ports.md) run on another origin than the API and its dashboard (whose
   * token they could otherwise read). Unset: a port the system picks (0), logged at start and used
   * in every link; `off`: no such listener, and no browser links (a sandbox's app never gets the
   * dashboard's origin).
   */
  appsPort?: number;
  /** Bearer token; required whenever `host` is not a loopback address. */
  token?: string;
  /**
   * Bearer token for managing packs (POST/DELETE /v1/packs) over TCP; it is accepted wherever `token`
   * is. Unset: pack management only over the trusted Unix socket (KILN_SOCKET).
   */
  adminToken?: string;
  /**
   * Host header names accepted besides loopback names and `host` (KILN_ALLOWED_HOSTS; "*": any).
   * Refusing other names stops DNS rebinding: a page whose name resolves to this host sends its own.
   */
  allowedHosts: string[];
  /** Browser origins allowed besides the service's own (KILN_ALLOWED_ORIGINS), normalised. */
  allowedOrigins: string[];
  /** Images, VM kernels, caches: survives restarts. */
  dataDir: string;
  /** Per-sandbox state: sockets, mounts, pid files. Scanned and cleaned at start-up. */
  runDir: string;
  /** The static kiln-agent binary. */
  agentPath: string;
  /** The folder with the pack definitions. */
  packsDir: string;
  /** The operator's folder of custom pack definitions (POST /v1/packs stores them here). */
  customPacksDir: string;
  /** KILN_BACKEND; checked against the registered backends by checkBackendNames. */
  defaultBackend: BackendName;
  limits: SandboxLimits;
  /** Host capacity: beyond it, creates queue (then 429/503). */
  maxSandboxes: number;
  createQueueLength: number;
  createQueueTimeoutMs: number;
  /** Warm pools, KILN_POOL "[backend/]pack=count,…" (no backend named: the default backend). */
  poolTargets: PoolTarget[];
  qemuAccel: 'auto' | 'kvm' | 'tcg';
  /** Firecracker binary (default: looked up on PATH) and whether to skip the vmx/svm check. */
  firecrackerPath?: string;
  firecrackerKvm: 'auto' | 'force';
  /**
   * KILN_DATABASE_URL: unset, an embedded PGlite under dataDir; postgres://… a server; memory://
   * or off (see src/store/index.ts).
   */
  databaseUrl?: string;
  /** KILN_NODE_ID: this service's name among nodes sharing one database (default: the host name). */
  nodeId: string;
  workspaces: WorkspaceConfig;
  /**
   * KILN_STOP_SANDBOXES_ON_EXIT=1: a graceful stop deletes every sandbox (the behaviour before
   * sandboxes survived restarts). Default: they keep running and the next start reattaches them.
   */
  stopSandboxesOnExit: boolean;
  /**
   * Namespace sandboxes start through the long-lived spawner helper (KILN_NS_SPAWNER, default on;
   * backends/namespace/spawner.ts) instead of a fork of the service per sandbox.
   */
  namespaceSpawner: boolean;
  /**
   * One-shot runs on the namespace backend are made by a runner's zygote: python's own runs in
   * its warm interpreter, others executed afresh (KILN_FORK_RUNS, default on; core/runners.ts,
   * agent/zygote_linux.go); `idle`: runners kept
   * per shape between runs (KILN_FORK_RUNNERS_IDLE, default 8; 0 turns fork runs off).
   */
  forkRuns: { enabled: boolean; idle: number };
  /**
   * Switch on the cgroup2 mount option favordynmods at start (KILN_CGROUP_FAVOR_DYNMODS, default
   * on): a sandbox's first process joins its cgroup at once instead of after an RCU grace period
   * (cgroups.ts, favorDynamicModifications).
   */
  cgroupFavorDynmods: boolean;
  /** Paused sandboxes and named snapshots (src/core/snapshots.ts). */
  snapshots: SnapshotConfig;
  /** Sandbox networking (src/net, docs/networking.md). */
  network: NetworkConfig;
}

export interface NetworkConfig {
  /** KILN_NET_NAME (default kiln): names the bridge (<name>0), the nftables table, log prefixes. */
  name: string;
  /** KILN_NET_SUBNET (default 10.89.0.0/16): sandbox addresses; the first is the bridge's (gateway). */
  subnet: string;
  /** KILN_NET_UPLINK: the only interface sandbox traffic may leave by (default: the main table's default route). */
  uplink?: string;
  /** KILN_NET_UPLINK_GATEWAY: next hop on the uplink (default: the default route's). */
  uplinkGateway?: string;
  /** KILN_NET_DNS: upstream resolvers (default: /etc/resolv.conf's nameservers). */
  upstreamDns: string[];
  /** KILN_NET_ALLOW_OPEN (default 1): whether `open` and learn mode may be asked for. */
  allowOpen: boolean;
  /** KILN_NET_DENY: CIDRs no sandbox may reach, added to the built-in ones. */
  deny: string[];
  /** KILN_NET_DEFAULT_POLICY (default none): a create without `network` gets it. */
  defaultPolicy: 'none' | 'open';
  /** KILN_NET_BANDWIDTH_MBIT (default 0: unlimited) and KILN_NET_MAX_BANDWIDTH_MBIT. */
  defaultBandwidthMbit: number;
  maxBandwidthMbit: number;
  /** KILN_NET_ROUTE_TABLE (default 27491, 1000..32000): kiln's routing table number and its rule's priority (before the main table's 32766). */
  routeTable: number;
  /** Ports on the gateway address: the resolver and the TLS/HTTP gate (KILN_NET_PORTS, default 10053,10443,10080). */
  dnsPort: number;
  tlsPort: number;
  httpPort: number;
}

export interface SnapshotConfig {
  /** KILN_SNAPSHOTS_DIR (default <dataDir>/snapshots): paused sandboxes' state and named snapshots; kept across restarts. */
  dir: string;
  /** KILN_SNAPSHOT_RETENTION_SEC: a named snapshot older than this is removed (default 7 days; 0 keeps them). */
  retentionSec: number;
}

/** Workspace sandboxes (docs/workspaces.md). */
export interface WorkspaceConfig {
  /** KILN_WORKSPACES_DIR (default <dataDir>/workspaces): each workspace's upper layer and state; kept across restarts. */
  dir: string;
  /**
   * KILN_WORKSPACE_ROOTS: the host folders (':'-separated, absolute, symlinks resolved at start)
   * under which a workspace may be opened. Empty: workspaces are refused.
   */
  roots: string[];
  /** Size of a workspace's upper layer (what the sandbox may write), default and maximum. */
  defaultSizeMib: number;
  maxSizeMib: number;
  /** A workspace sandbox with no activity (exec, files, review) for this long is deleted. */
  idleTtlSec: number;
  /** Upper layer use, in percent of its size, above which changes answers carry a warning. */
  warnPercent: number;
  /** Host uids of workspace sandboxes (one per kept workspace; outside every other uid range of kiln). */
  uidBase: number;
  uidCount: number;
}

export interface SandboxLimits {
  defaultCpus: number;
  maxCpus: number;
  defaultMemoryMib: number;
  maxMemoryMib: number;
  defaultDiskMib: number;
  maxDiskMib: number;
  defaultTtlSec: number;
  maxTtlSec: number;
  defaultExecTimeoutMs: number;
  maxExecTimeoutMs: number;
  /** Per stream (stdout, stderr): the cap when a request names none, and the most it may ask for. */
  defaultOutputBytes: number;
  maxOutputBytes: number;
  maxFileBytes: number;
  maxPids: number;
}

/**
 * The repository: two folders above src/core/, or three above the compiled dist/src/core/ (the host
 * build keeps the repo's layout under dist/ so that the CLI's import of ../../sdk/src resolves alike).
 */
const CORE_DIR = fileURLToPath(new URL('.', import.meta.url));
export const REPO_ROOT = resolve(CORE_DIR, /[\\/]dist[\\/]src[\\/]core[\\/]$/.test(CORE_DIR) ? '../../..' : '../..');

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

export function isLoopback(host: string): boolean {
  return LOOPBACK.has(host) || host.startsWith('127.');
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<KilnConfig> = {}): KilnConfig {
  const cfg: KilnConfig = {
    host: env.KILN_HOST ?? '127.0.0.1',
    port: int(env, 'KILN_PORT', 8400, 0, 65535),
    socketPath: env.KILN_SOCKET || undefined,
    appsPort: env.KILN_APPS_PORT === 'off' ? undefined : int(env, 'KILN_APPS_PORT', 0, 0, 65535),
    token: env.KILN_TOKEN || undefined,
    adminToken: env.KILN_ADMIN_TOKEN || undefined,
    allowedHosts: list(env.KILN_ALLOWED_HOSTS).map(hostName),
    allowedOrigins: list(env.KILN_ALLOWED_ORIGINS).map(origin),
    dataDir: path(env.KILN_DATA_DIR ?? '/var/lib/kiln'),
    runDir: path(env.KILN_RUN_DIR ?? '/run/kiln'),
    agentPath: path(env.KILN_AGENT ?? resolve(REPO_ROOT, 'build/kiln-agent')),
    packsDir: path(env.KILN_PACKS_DIR ?? resolve(REPO_ROOT, 'images/packs')),
    customPacksDir: path(env.KILN_CUSTOM_PACKS_DIR || resolve(path(env.KILN_DATA_DIR ?? '/var/lib/kiln'), 'packs')),
    defaultBackend: backendName(env.KILN_BACKEND ?? 'namespace'),
    limits: {
      defaultCpus: 1,
      maxCpus: int(env, 'KILN_MAX_CPUS', 2, 1, 64),
      defaultMemoryMib: int(env, 'KILN_DEFAULT_MEMORY_MIB', 512, 16, 1 << 20),
      maxMemoryMib: int(env, 'KILN_MAX_MEMORY_MIB', 4096, 16, 1 << 20),
      defaultDiskMib: int(env, 'KILN_DEFAULT_DISK_MIB', 256, 1, 1 << 20),
      maxDiskMib: int(env, 'KILN_MAX_DISK_MIB', 4096, 1, 1 << 20),
      defaultTtlSec: int(env, 'KILN_DEFAULT_TTL_SEC', 900, 1, 7 * 86400),
      maxTtlSec: int(env, 'KILN_MAX_TTL_SEC', 86400, 1, 30 * 86400),
      defaultExecTimeoutMs: int(env, 'KILN_DEFAULT_EXEC_TIMEOUT_MS', 30_000, 1, 86_400_000),
      maxExecTimeoutMs: int(env, 'KILN_MAX_EXEC_TIMEOUT_MS', 3_600_000, 1, 86_400_000),
      defaultOutputBytes: int(env, 'KILN_DEFAULT_OUTPUT_BYTES', 1 << 20, 1024, 1 << 30),
      maxOutputBytes: int(env, 'KILN_MAX_OUTPUT_BYTES', 16 << 20, 1024, 1 << 30),
      maxFileBytes: int(env, 'KILN_MAX_FILE_BYTES', 100 << 20, 1024, 2 ** 34),
      maxPids: int(env, 'KILN_MAX_PIDS', 256, 8, 1 << 22),
    },
    maxSandboxes: int(env, 'KILN_MAX_SANDBOXES', 64, 1, 100_000),
    createQueueLength: int(env, 'KILN_CREATE_QUEUE', 256, 0, 1_000_000),
    createQueueTimeoutMs: int(env, 'KILN_CREATE_QUEUE_TIMEOUT_MS', 10_000, 0, 600_000),
    // A small warm pool per pack by default: one-shot runs start in ~0.1 ms instead of ~20 ms.
    poolTargets: poolTargets(env.KILN_POOL ?? 'python=2,node=1,go=1,shell=1'),
    qemuAccel: accel(env.KILN_QEMU_ACCEL ?? 'auto'),
    firecrackerPath: env.KILN_FIRECRACKER || undefined,
    firecrackerKvm: env.KILN_FIRECRACKER_KVM === 'force' ? 'force' : 'auto',
    databaseUrl: env.KILN_DATABASE_URL || undefined,
    nodeId: env.KILN_NODE_ID || os.hostname(),
    stopSandboxesOnExit: env.KILN_STOP_SANDBOXES_ON_EXIT === '1' || env.KILN_STOP_SANDBOXES_ON_EXIT === 'true',
    cgroupFavorDynmods: !['0', 'false', 'off'].includes(env.KILN_CGROUP_FAVOR_DYNMODS ?? ''),
    namespaceSpawner: !['0', 'false', 'off'].includes(env.KILN_NS_SPAWNER ?? ''),
    forkRuns: {
      enabled: !['0', 'false', 'off'].includes(env.KILN_FORK_RUNS ?? ''),
      idle: int(env, 'KILN_FORK_RUNNERS_IDLE', 8, 0, 1024),
    },
    snapshots: {
      dir: path(env.KILN_SNAPSHOTS_DIR || resolve(path(env.KILN_DATA_DIR ?? '/var/lib/kiln'), 'snapshots')),
      retentionSec: int(env, 'KILN_SNAPSHOT_RETENTION_SEC', 7 * 86400, 0, 365 * 86400),
    },
    network: networkConfig(env),
    workspaces: {
      dir: path(env.KILN_WORKSPACES_DIR || resolve(path(env.KILN_DATA_DIR ?? '/var/lib/kiln'), 'workspaces')),
      roots: workspaceRoots(env.KILN_WORKSPACE_ROOTS),
      defaultSizeMib: int(env, 'KILN_WORKSPACE_SIZE_MIB', 1024, 16, 1 << 20),
      maxSizeMib: int(env, 'KILN_WORKSPACE_MAX_SIZE_MIB', 16 << 10, 16, 1 << 20),
      idleTtlSec: int(env, 'KILN_WORKSPACE_IDLE_TTL_SEC', 86_400, 1, 30 * 86400),
      warnPercent: int(env, 'KILN_WORKSPACE_WARN_PERCENT', 80, 1, 100),
      uidBase: int(env, 'KILN_WORKSPACE_UID_BASE', 600_000, 1000, 2 ** 31),
      uidCount: int(env, 'KILN_WORKSPACE_UID_COUNT', 65_536, 1, 1 << 20),
    },
    ...overrides,
  };
  const { defaultOutputBytes, maxOutputBytes } = cfg.limits;
  if (defaultOutputBytes > maxOutputBytes) {
    // An operator who only lowered the maximum gets a default that fits it.
    if (env.KILN_DEFAULT_OUTPUT_BYTES)
      throw new KilnError('INVALID_REQUEST', `KILN_DEFAULT_OUTPUT_BYTES=${defaultOutputBytes} is above KILN_MAX_OUTPUT_BYTES=${maxOutputBytes}: lower the default or raise the maximum`);
    cfg.limits = { ...cfg.limits, defaultOutputBytes: maxOutputBytes };
  }
  if (!isLoopback(cfg.host) && !cfg.token) {
    throw new KilnError('INVALID_REQUEST', `KILN_HOST=${cfg.host} is not a loopback address: set KILN_TOKEN so the API is not open to the network`);
  }
  return cfg;
}

function int(env: NodeJS.ProcessEnv, name: string, dflt: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) throw new KilnError('INVALID_REQUEST', `${name}=${raw} must be an integer from ${min} to ${max}`);
  return n;
}

/** Normalises an origin ("https://app.example.com:8443"); throws on anything else. */
export function normaliseOrigin(origin: string): string {
  const u = new URL(origin);
  if (!/^https?:$/.test(u.protocol) || u.pathname !== '/' || u.search || u.hash || u.username || origin.endsWith('/')) throw new Error(`"${origin}" is not an origin (scheme://host[:port])`);
  return u.origin;
}

function list(v: string | undefined): string[] {
  return (v ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** A host name or IP address as a Host header carries it (no port), lower-cased; "*" passes. */
function hostName(v: string): string {
  if (v === '*') return v;
  const bare = v.startsWith('[') && v.endsWith(']') ? v.slice(1, -1) : v;
  if (/^[0-9a-f:]+$/i.test(bare) && bare.includes(':')) return `[${bare.toLowerCase()}]`;
  if (/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(v)) return new URL(`http://${v}`).hostname;
  throw new KilnError('INVALID_REQUEST', `KILN_ALLOWED_HOSTS entry "${v}": use host names or IP addresses without a port, e.g. kiln.example.com,10.0.0.5`);
}

function origin(v: string): string {
  try {
    return normaliseOrigin(v);
  } catch {
    throw new KilnError('INVALID_REQUEST', `KILN_ALLOWED_ORIGINS entry "${v}": use scheme://host[:port] with no path, e.g. https://app.example.com`);
  }
}

/** ':'-separated absolute folders; each must exist (its real path is kept, so symlinks cannot widen it). */
function workspaceRoots(v: string | undefined): string[] {
  const out: string[] = [];
  for (const raw of (v ?? '').split(':').filter(Boolean)) {
    if (!isAbsolute(raw)) throw new KilnError('INVALID_REQUEST', `KILN_WORKSPACE_ROOTS entry "${raw}" is not an absolute path`);
    let real: string;
    try {
      real = realpathSync(raw);
    } catch {
      throw new KilnError('INVALID_REQUEST', `KILN_WORKSPACE_ROOTS entry "${raw}" does not exist`);
    }
    if (real === '/') throw new KilnError('INVALID_REQUEST', 'KILN_WORKSPACE_ROOTS may not contain / (the whole host): name the folders that hold projects');
    out.push(real);
  }
  return out;
}

function path(p: string): string {
  return isAbsolute(p) ? p : resolve(p);
}

const NAME = /^[a-z][a-z0-9-]{0,31}$/;

function backendName(v: string): BackendName {
  if (NAME.test(v)) return v;
  throw new KilnError('INVALID_REQUEST', `KILN_BACKEND=${JSON.stringify(v)}: a backend name is lower-case letters, digits and "-", e.g. namespace`);
}

/**
 * Refuses backend names (KILN_BACKEND, KILN_POOL) that are not registered. The config is parsed
 * without knowing the registry (the core sits below it); the composition root calls this with the
 * registry's names (src/server/backends.ts).
 */
export function checkBackendNames(config: KilnConfig, registered: readonly BackendName[]): void {
  const list = registered.join(', ');
  if (!registered.includes(config.defaultBackend)) throw new KilnError('INVALID_REQUEST', `KILN_BACKEND=${config.defaultBackend}: no such backend; use one of ${list}`);
  for (const t of config.poolTargets) {
    if (t.backend !== undefined && !registered.includes(t.backend))
      throw new KilnError('INVALID_REQUEST', `KILN_POOL entry "${t.backend}/${t.pack}=${t.target}": no backend "${t.backend}"; use one of ${list}`);
  }
}

function accel(v: string): KilnConfig['qemuAccel'] {
  if (v === 'auto' || v === 'kvm' || v === 'tcg') return v;
  throw new KilnError('INVALID_REQUEST', `KILN_QEMU_ACCEL=${v}: use auto, kvm or tcg`);
}

export interface PoolTarget {
  /** Undefined: the default backend (KILN_BACKEND). */
  backend?: BackendName;
  pack: string;
  target: number;
}

/** `[backend/]pack=count`, comma-separated: `python=2,node=1,qemu/python=1`. */
function poolTargets(spec: string): PoolTarget[] {
  const out = new Map<string, PoolTarget>();
  for (const part of spec
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const m = /^(?:([a-z][a-z0-9-]{0,31})\/)?([A-Za-z0-9][A-Za-z0-9_-]*)=(\d+)$/.exec(part);
    const n = Number(m?.[3]);
    if (!m || n > 1000) throw new KilnError('INVALID_REQUEST', `KILN_POOL entry "${part}": use [backend/]pack=count with a count up to 1000, e.g. python=2,node=1,qemu/python=1`);
    out.set(`${m[1] ?? ''}/${m[2]}`, { backend: m[1] as BackendName | undefined, pack: m[2]!, target: n });
  }
  return [...out.values()];
}

function networkConfig(env: NodeJS.ProcessEnv): NetworkConfig {
  const name = env.KILN_NET_NAME || 'kiln';
  if (!/^[a-z][a-z0-9]{0,10}$/.test(name))
    throw new KilnError('INVALID_REQUEST', `KILN_NET_NAME "${name}" must be 1 to 11 lower-case letters and digits, starting with a letter (it names the bridge and the nftables table)`);
  const ports = list(env.KILN_NET_PORTS ?? '10053,10443,10080').map(Number);
  if (ports.length !== 3 || ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65535))
    throw new KilnError('INVALID_REQUEST', 'KILN_NET_PORTS must be three ports: resolver,tls,http (e.g. 10053,10443,10080)');
  const policy = env.KILN_NET_DEFAULT_POLICY || 'none';
  if (policy !== 'none' && policy !== 'open') throw new KilnError('INVALID_REQUEST', `KILN_NET_DEFAULT_POLICY must be none or open (got "${policy}"); an allowlist is asked for per sandbox`);
  const uplink = env.KILN_NET_UPLINK || undefined;
  if (uplink && !/^[A-Za-z0-9_.-]{1,15}$/.test(uplink)) throw new KilnError('INVALID_REQUEST', `KILN_NET_UPLINK "${uplink}" is not an interface name`);
  return {
    name,
    subnet: env.KILN_NET_SUBNET || '10.89.0.0/16',
    uplink,
    uplinkGateway: env.KILN_NET_UPLINK_GATEWAY || undefined,
    upstreamDns: list(env.KILN_NET_DNS),
    allowOpen: env.KILN_NET_ALLOW_OPEN !== '0' && env.KILN_NET_ALLOW_OPEN !== 'false',
    deny: list(env.KILN_NET_DENY),
    defaultPolicy: policy,
    defaultBandwidthMbit: int(env, 'KILN_NET_BANDWIDTH_MBIT', 0, 0, 100_000),
    maxBandwidthMbit: int(env, 'KILN_NET_MAX_BANDWIDTH_MBIT', 10_000, 1, 100_000),
    // Also the priority of its rule: below 32766 (main), so sandbox traffic never reaches the main table.
    routeTable: int(env, 'KILN_NET_ROUTE_TABLE', 27491, 1000, 32000),
    dnsPort: ports[0]!,
    tlsPort: ports[1]!,
    httpPort: ports[2]!,
  };
}
