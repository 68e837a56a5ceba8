/**
 * What the sandbox manager asks of sandbox networking (src/net implements it): a policy checked at
 * create, a sandbox's network given and taken back, its description and audit trail.
 */
import type { BackendSandbox } from './backend.js';

export type NetworkPolicyName = 'none' | 'allowlist' | 'open';

export interface NetworkRequest {
  policy: NetworkPolicyName;
  allow?: string[];
  /** allowlist only: what the list does not allow still goes through, recorded as `learned`; the proposal lists it. */
  learn?: boolean;
  /** Per-direction rate limit, megabits per second (0 or absent: the operator's default). */
  bandwidthMbit?: number;
}

/** Network events kept per sandbox: in memory while it runs, and in the store (newest first kept). */
export const NETWORK_EVENTS_KEPT = 2000;

export interface NetworkEvent {
  seq: number;
  at: string;
  kind: 'dns' | 'connection';
  verdict: 'allowed' | 'refused' | 'learned';
  /** The name asked for (DNS), or carried by the connection (TLS SNI, HTTP Host). */
  name?: string;
  address?: string;
  port?: number;
  protocol?: string;
  /** Why refused (or how allowed): "not in the allowlist", "the operator's deny list", "the host itself", … */
  reason?: string;
}

/** What GET /v1/sandboxes/:id shows of a networked sandbox. */
export interface SandboxNetworkInfo {
  policy: NetworkPolicyName;
  allow: string[];
  learn: boolean;
  address: string;
  gateway: string;
  hostInterface: string;
  bandwidthMbit: number;
  /** How long giving it its network took at create (firewall chain, link, bridge), ms. */
  attachMs: number;
}

export interface NetworkEventsAnswer {
  policy: NetworkPolicyName;
  events: NetworkEvent[];
  counters: { bytesOut: number; bytesIn: number; refused: number };
  proposal: { policy: 'allowlist'; allow: string[] };
}

/** Where each sandbox's network events are kept beyond memory (the store, through the journal). */
export interface NetworkEventLog {
  /** Queues one event (off the packet's path). */
  record(sandboxId: string, event: NetworkEvent): void;
  /** The kept events after seq `after`, oldest first, at most `limit` (queued ones included). */
  load(sandboxId: string, after: number, limit: number): Promise<NetworkEvent[]>;
}

/** An opaque checked policy (src/net's CompiledPolicy). */
export type CheckedNetworkPolicy = { readonly policy: NetworkPolicyName };

export interface NetworkHooks {
  readonly gateway: string;
  /** Checks a create's `network` (and the operator default); undefined: no network (policy none). */
  check(req: NetworkRequest | undefined): CheckedNetworkPolicy | undefined;
  attach(id: string, inner: BackendSandbox, policy: CheckedNetworkPolicy, request: NetworkRequest): Promise<SandboxNetworkInfo>;
  detach(id: string): Promise<void>;
  describe(id: string): SandboxNetworkInfo | undefined;
  events(id: string, after?: number, limit?: number): Promise<NetworkEventsAnswer | undefined>;
  restore(alive: Set<string>): Promise<{ restored: string[]; removed: string[] }>;
  /** The audit trail of a sandbox that is gone, from the store (what it had: policy and allow list). */
  pastEvents(id: string, had: { policy: NetworkPolicyName; allow: string[] }, after?: number, limit?: number): Promise<NetworkEventsAnswer>;
  close(kept: Set<string>): Promise<void>;
}
