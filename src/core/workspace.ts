/**
 * Workspace sandboxes as the lifecycle sees them: a host project folder mounted copy-on-write at
 * /workspace, whose changes are reviewed and then approved onto the host or rejected
 * (docs/workspaces.md). The lifecycle knows this interface only; src/workspace/ implements it.
 */
import type { AgentClient } from '../protocol/agent-client.js';
import type { SandboxWorkspace } from './backend.js';
import type { Owner } from './quotas.js';

/** How a backend takes a workspace (its capabilities.workspace): host mounts, or drive images for a VM. */
export type WorkspaceKind = 'mount' | 'images';

/** An opened workspace: what the backend mounts, and what the sandbox's info shows. */
export interface OpenedWorkspace {
  spec: SandboxWorkspace;
  path: string;
  gitWritable: boolean;
  sizeMib: number;
}

/** `workspace` in a create request. */
export interface WorkspaceRequest {
  /** A host folder under one of KILN_WORKSPACE_ROOTS. */
  path: string;
  /** `.git` writable in the overlay (its changes are then part of the change set); default read-only. */
  gitWritable?: boolean;
  /** Size of what the sandbox may write over the project (its upper layer); default KILN_WORKSPACE_SIZE_MIB. */
  sizeMib?: number;
}

/** What a workspace remembers about its sandbox, so that a restarted service brings it back. */
export interface WorkspaceSandboxFacts {
  pack: string;
  backend: string;
  cpus: number;
  memoryMib: number;
  diskMib: number;
  ttlSec: number;
  labels: Record<string, string>;
  env: Record<string, string>;
  ownerKeyId: string | null;
}

export interface WorkspaceHooks {
  /**
   * Checks the request (WORKSPACE_FORBIDDEN outside the roots) and creates the workspace of sandbox
   * `id`, or re-opens the one a restarted service left; answers what the backend mounts.
   */
  open(id: string, req: WorkspaceRequest, facts: WorkspaceSandboxFacts, kind: WorkspaceKind, signal?: AbortSignal): Promise<OpenedWorkspace>;
  /** How many changes (not counting gitignored paths) nobody approved or rejected; the live sandbox's agent reads a VM's. */
  pendingCount(id: string, agent: AgentClient): Promise<number>;
  /** Drops the workspace for good: upper layer, mounts, folder. Idempotent. */
  discard(id: string): Promise<void>;
  /** The sandbox stopped with the service: keep the changes for the next start. */
  keep(id: string): Promise<void>;
}

/** Restores at start-up: one entry per workspace a previous run left, for the manager to recreate. */
export interface KeptWorkspace {
  id: string;
  request: WorkspaceRequest;
  facts: WorkspaceSandboxFacts;
  owner?: Owner;
}
