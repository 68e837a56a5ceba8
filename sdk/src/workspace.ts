/**
 * Workspace sandboxes (issue #18): a sandbox whose /workspace is a copy-on-write view of a host
 * directory, and the review of its changes (list, diff, approve, reject).
 *
 * Hand-written from the design (WORKSPACE-DESIGN.md, "API") until the server's schemas exist: the
 * lead replaces these with the generated ones (src/server/routes/schemas.ts → generated.ts) and
 * keeps the names, so the client and the dashboard do not change.
 */
import { KilnError } from './errors.js';
import type { SandboxInfo } from './generated.js';

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

/** One changed path of a workspace, relative to its root. */
export interface Change {
  /** UTF-8 (invalid bytes replaced); `pathBase64` has the exact bytes. */
  path: string;
  pathBase64: string;
  status: ChangeStatus;
  type: ChangeType;
  /** Bytes of the new version (of the old one for a deletion). */
  size: number;
  binary: boolean;
  /** Matched by the project's .gitignore files (listed only when asked for). */
  ignored: boolean;
  /** Permission bits before and after (st_mode & 07777). */
  modeOld?: number;
  modeNew?: number;
  /** Symlinks: the new target (the old one for a deletion). */
  target?: string;
}

/** Answer of GET /v1/sandboxes/{id}/changes. */
export interface ChangesResult {
  changes: Change[];
  /** Bytes used by the upper layer, and its size limit. */
  upperBytes: number;
  limitBytes: number;
}

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
