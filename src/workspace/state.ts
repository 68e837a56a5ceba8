/**
 * What a workspace remembers about the host directory, in `<workspaceDir>/state.json`: when it
 * was made (as the kernel's clock saw it, the clock file ctimes come from) and what kiln itself
 * last wrote or removed there, so a later approve tells the host's own edits from kiln's.
 */
import { randomBytes } from 'node:crypto';
import type { BigIntStats } from 'node:fs';
import { lstat, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** A host path as kiln left it: its inode and ctime (any later write or chmod moves the ctime), or gone. */
export type Fingerprint = { ino: string; ctimeNs: string } | { absent: true };

export interface WorkspaceState {
  version: 1;
  /** The workspace's creation, in ns since the epoch, read back from the state file's own mtime. */
  createdAtNs: string;
  /** By pathBase64: what kiln last wrote at that host path. */
  written: Record<string, Fingerprint>;
}

const stateFile = (workspaceDir: string): string => join(workspaceDir, 'state.json');

export const fingerprintOf = (st: BigIntStats | undefined): Fingerprint => (st ? { ino: String(st.ino), ctimeNs: String(st.ctimeNs) } : { absent: true });

export function sameFingerprint(a: Fingerprint, b: Fingerprint): boolean {
  if ('absent' in a || 'absent' in b) return 'absent' in a && 'absent' in b;
  return a.ino === b.ino && a.ctimeNs === b.ctimeNs;
}

export async function writeWorkspaceState(workspaceDir: string, state: WorkspaceState): Promise<void> {
  const tmp = join(workspaceDir, `.state.json.${randomBytes(6).toString('hex')}`);
  await writeFile(tmp, `${JSON.stringify(state)}\n`);
  await rename(tmp, stateFile(workspaceDir));
}

/** Starts a workspace's record; call when the workspace is made, before the sandbox can write. */
export async function initWorkspaceState(workspaceDir: string): Promise<WorkspaceState> {
  await writeFile(stateFile(workspaceDir), '{}\n');
  const st = await stat(stateFile(workspaceDir), { bigint: true });
  const state: WorkspaceState = { version: 1, createdAtNs: String(st.mtimeNs), written: {} };
  await writeWorkspaceState(workspaceDir, state);
  return state;
}

export async function readWorkspaceState(workspaceDir: string): Promise<WorkspaceState> {
  const raw = JSON.parse(await readFile(stateFile(workspaceDir), 'utf8')) as Partial<WorkspaceState>;
  if (raw.version !== 1 || typeof raw.createdAtNs !== 'string') throw new Error(`${stateFile(workspaceDir)} is not a workspace state (version 1)`);
  return { version: 1, createdAtNs: raw.createdAtNs, written: raw.written ?? {} };
}

export async function lstatOrUndefined(path: Buffer | string): Promise<BigIntStats | undefined> {
  try {
    return await lstat(path, { bigint: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw e;
  }
}
