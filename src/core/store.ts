/**
 * What kiln keeps beyond the running process, seen from the lifecycle: sandboxes, their event
 * trail, API keys (hashes only) with their limits, and usage. The lifecycle knows this interface
 * only; which engine sits behind it (embedded PGlite or a PostgreSQL server) is decided by the
 * composition root (src/store/). Writes reach it through the Journal (./journal.ts), in batches,
 * off the request path; the in-memory state stays authoritative for the running process.
 */
import type { BackendName } from './backend.js';
import type { NetworkEvent } from './network.js';

export interface SandboxRecord {
  id: string;
  /** The kiln node that runs it (KILN_NODE_ID): several nodes may share one PostgreSQL. */
  node: string;
  /** The API key that created it; null for the admin (KILN_TOKEN, the trusted socket, an open service). */
  ownerKeyId: string | null;
  backend: BackendName;
  pack: string;
  cpus: number;
  memoryMib: number;
  diskMib: number;
  labels: Record<string, string>;
  /** Facts that are not worth a column: fromPool, readyMs. */
  metadata: Record<string, unknown>;
  state: string;
  createdAt: Date;
  expiresAt: Date;
  endedAt?: Date;
  endReason?: string;
}

export type SandboxEventKind =
  | 'created'
  | 'exec.started'
  | 'exec.ended'
  | 'file.written'
  | 'deleted'
  | 'restored'
  | 'workspace.approved'
  | 'workspace.rejected'
  | 'paused'
  | 'resumed'
  | 'snapshot.created';

export interface SandboxEvent {
  sandboxId: string;
  at: Date;
  kind: SandboxEventKind;
  /** exec.started: {argv0}; exec.ended: {exitCode, signal, durationMs, timedOut, oomKilled}; file.written: {path, bytes}; deleted: {reason}; restored: {reason}; workspace.approved/rejected: {paths, count, forced}. */
  data: Record<string, unknown>;
}

/** Per-key limits; an absent field is not limited (beyond the host's own limits). */
export interface KeyLimits {
  maxSandboxes?: number;
  maxMemoryMib?: number;
  maxTtlSec?: number;
  maxExecTimeoutMs?: number;
  /** Total size of the key's named snapshots (src/core/snapshots.ts). */
  maxSnapshotMib?: number;
}

export interface ApiKeyRecord {
  id: string;
  name: string;
  /** The first characters of the key, to tell keys apart in listings (not enough to guess it). */
  prefix: string;
  createdAt: Date;
  revokedAt?: Date;
  limits: KeyLimits;
}

/** A key as stored: the sha256 of the secret, never the secret. */
export interface StoredApiKey extends ApiKeyRecord {
  hash: Buffer;
}

export interface KeyUsage {
  sandboxesCreated: number;
  execs: number;
  execMs: number;
}

/** A named snapshot as the store keeps it (its state is in KILN_SNAPSHOTS_DIR, src/core/snapshots.ts). */
export interface SnapshotRow {
  name: string;
  node: string;
  ownerKeyId: string | null;
  kind: string;
  backend: BackendName;
  pack: string;
  sourceSandboxId: string;
  sizeBytes: number;
  createdAt: Date;
}

/** One write, queued by the Journal and applied with others in one transaction. */
export type StoreWrite =
  | { type: 'sandbox.created'; record: SandboxRecord }
  | { type: 'sandbox.state'; id: string; state: string; at: Date }
  | { type: 'sandbox.ended'; id: string; state: string; at: Date; reason: string }
  | { type: 'snapshot.saved'; record: SnapshotRow }
  | { type: 'snapshot.deleted'; name: string; at: Date }
  | { type: 'event'; event: SandboxEvent }
  | { type: 'network.event'; sandboxId: string; event: NetworkEvent }
  | { type: 'usage'; keyId: string; usage: KeyUsage };

export interface SandboxQuery {
  /** undefined: every owner; null: the admin's only. */
  ownerKeyId?: string | null;
  node?: string;
  labels?: Record<string, string>;
  limit: number;
  /** Records created after this one (by created_at, id): the last id of the previous page. */
  afterId?: string;
}

export interface Store {
  /** 'pglite' or 'postgres': for logs and /v1/store only; nothing branches on it. */
  readonly engine: string;
  /** Applies writes in order, in one transaction. */
  apply(writes: StoreWrite[]): Promise<void>;
  /** Records this node as alive (nodes table). */
  registerNode(node: string, at: Date): Promise<void>;
  insertKey(key: StoredApiKey): Promise<void>;
  listKeys(): Promise<StoredApiKey[]>;
  /** False when no live key has that id. */
  revokeKey(id: string, at: Date): Promise<boolean>;
  sandbox(id: string): Promise<SandboxRecord | undefined>;
  sandboxes(q: SandboxQuery): Promise<SandboxRecord[]>;
  events(sandboxId: string): Promise<SandboxEvent[]>;
  /** A sandbox's network audit trail (the newest NETWORK_EVENTS_KEPT are kept): after seq `after`, oldest first. */
  networkEvents(sandboxId: string, after: number, limit: number): Promise<NetworkEvent[]>;
  usage(keyId: string): Promise<KeyUsage>;
  close(): Promise<void>;
}
