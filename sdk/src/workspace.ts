/**
 * Workspace sandboxes (issue #18): a sandbox whose /workspace is a copy-on-write view of a host
 * directory, and the review of its changes (list, diff, approve, reject).
 *
 * The change list's types are generated from the server's schemas (generated.ts); the option and
 * result types of the other calls are small enough to state here.
 */
import { KilnError } from './errors.js';
import type { SandboxInfo, WorkspaceChange, WorkspaceChanges } from './generated.js';

/** `workspace` of POST /v1/sandboxes: the host directory (under a root of KILN_WORKSPACE_ROOTS). */
export interface WorkspaceOptions {
  path: string;
  /** Let the sandbox write `.git` (its changes are then part of the change set); read-only by default. */
  gitWritable?: boolean;
  /** Size limit of the upper layer (default 1024). */
  sizeMib?: number;
}

/** How a workspace sandbox shows in GET /v1/sandboxes and GET /v1/sandboxes/{id}. */
export interface SandboxWorkspace {
  path: string;
  /** Number of pending changes, when the server counted them. */
  changes?: number;
}

export type WorkspaceSandboxInfo = SandboxInfo & { workspace?: SandboxWorkspace };

/** The workspace of a sandbox, or undefined for an ordinary sandbox. */
export function workspaceOf(sb: SandboxInfo): SandboxWorkspace | undefined {
  return (sb as WorkspaceSandboxInfo).workspace;
}

export type ChangeStatus = 'added' | 'modified' | 'deleted';
export type ChangeType = 'file' | 'directory' | 'symlink';

/** One changed path of a workspace, relative to its root (generated from the server's schema). */
export type Change = WorkspaceChange;

/** Answer of GET /v1/sandboxes/{id}/changes: the changes, the upper layer's use and limit, a warning when nearly full. */
export type ChangesResult = WorkspaceChanges;

export interface ChangesOptions {
  /** Include paths the project's .gitignore ignores. */
  ignored?: boolean;
}

export interface DiffOptions extends ChangesOptions {
  /** Only this path (as Change.path). */
  path?: string;
}

export interface ApproveOptions extends ChangesOptions {
  /** Only these paths (as Change.path); all changes when left out. */
  paths?: string[];
  /** Apply paths whose host file changed since the sandbox started (a conflict otherwise). */
  force?: boolean;
}

export interface ApproveResult {
  applied: string[];
}

export interface RejectOptions {
  paths?: string[];
}

export interface RejectResult {
  rejected: string[];
}

/** Which version a change's content is read from: the host directory's or the sandbox's. */
export type ChangeSide = 'old' | 'new';

/** The code of a refused approve (409); its paths are workspaceConflicts(e). */
export const WORKSPACE_CONFLICT = 'WORKSPACE_CONFLICT';

/**
 * The conflicting paths of an approve refused with 409 WORKSPACE_CONFLICT (host files changed
 * since the sandbox started; approve again with `force` to overwrite them), or undefined for any
 * other error.
 */
export function workspaceConflicts(e: unknown): string[] | undefined {
  if (!(e instanceof KilnError) || (e.code as string) !== WORKSPACE_CONFLICT) return undefined;
  const c = e.details?.conflicts;
  return Array.isArray(c) ? c.filter((p): p is string => typeof p === 'string') : [];
}
