/**
 * Approve (write the selected changes into the host directory W) and reject (drop them from the
 * upper layer). Approve is per path atomic (temp file in the same directory, then rename), keeps
 * modes (without set-id bits) and symlinks, gives new entries W's owner and an existing file's
 * owner to its new version, and refuses host paths changed behind its back unless forced.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, chown, lchown, mkdir, open, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { KilnError } from '../core/errors.js';
import { type Change, computeChanges, keyOfChange, selectChanges } from './changes.js';
import { HostDir } from './hostfs.js';
import { LowerTree } from './lower.js';
import { absPath, ancestorsOf, bytesOf, childKey, compareKeys, isUnder, keyOf, lossyOf, type PathKey, parentKey } from './paths.js';
import type { UpperSource } from './scan.js';
import { fingerprintOf, lstatOrUndefined, readWorkspaceState, sameFingerprint, type WorkspaceState, writeWorkspaceState } from './state.js';

export interface Workspace {
  /** W, the host directory approve writes into. */
  hostDir: string;
  /** What the changes are computed against: W itself (default) or a read-only mount of it. */
  lowerDir?: string;
  /** The upper layer on the host (reject edits it while no sandbox runs). */
  upperDir: string;
  upper: UpperSource;
  /** `<dataDir>/workspaces/<id>`, home of state.json (initWorkspaceState at creation). */
  workspaceDir: string;
}

export interface ApproveOptions {
  /** Write even over host paths changed since the workspace was made. */
  force?: boolean;
  /** Include paths the .gitignore files match (default: left alone). */
  ignored?: boolean;
}

export interface ApproveResult {
  /** The paths written, created or removed in W (UTF-8, lossy), in path order. */
  applied: string[];
  appliedBase64: string[];
}

export interface RejectResult {
  /** The paths made equal to W again, in path order. */
  rejected: string[];
  rejectedBase64: string[];
}

const FILE_MODE_MASK = 0o777;
const DIR_MODE_MASK = 0o3777;

/** The selected changes plus the created directories they need above them. */
function withCreatedParents(all: Change[], chosen: Change[]): Change[] {
  const byKey = new Map(all.map((c) => [keyOfChange(c), c]));
  const out = new Map(chosen.map((c) => [keyOfChange(c), c]));
  for (const c of chosen) {
    for (const a of ancestorsOf(keyOfChange(c))) {
      const p = byKey.get(a);
      if (p && p.type === 'directory' && (p.status === 'added' || p.typeOld) && c.status !== 'deleted') out.set(a, p);
    }
  }
  return [...out.entries()].sort(([a], [b]) => compareKeys(a, b)).map(([, c]) => c);
}

/** Whether the host path no longer is what the workspace started from (or what kiln left there). */
async function isConflict(hostTree: LowerTree, host: HostDir, state: WorkspaceState, c: Change): Promise<boolean> {
  const key = keyOfChange(c);
  const parentOk = key.indexOf('/') < 0 || (await hostTree.stat(parentKey(key)))?.type === 'directory';
  const st = parentOk ? await lstatOrUndefined(host.abs(key)) : undefined;
  const expected = c.status === 'added' ? undefined : (c.typeOld ?? c.type);
  // a directory's ctime moves with every entry made in it (kiln's own too): only its type counts
  if (expected === 'directory') return !st?.isDirectory();
  const rec = state.written[c.pathBase64];
  if (rec) return !sameFingerprint(rec, fingerprintOf(st));
  if (expected === undefined) return st !== undefined && !(c.type === 'directory' && st.isDirectory());
  if (!st || (expected === 'file' ? !st.isFile() : !st.isSymbolicLink())) return true;
  return st.ctimeNs > BigInt(state.createdAtNs);
}

/** Removal first: a deletion, or the old entry of a type change that a rename cannot replace. */
const needsRemoval = (c: Change): boolean => c.status === 'deleted' || c.typeOld === 'directory' || (c.typeOld !== undefined && c.type === 'directory');

export async function approve(ws: Workspace, paths?: ReadonlyArray<string | Buffer>, opts: ApproveOptions = {}): Promise<ApproveResult> {
  const all = await computeChanges(ws.lowerDir ?? ws.hostDir, ws.upper, { includeIgnored: opts.ignored });
  const chosen = withCreatedParents(all, selectChanges(all, paths));
  const state = await readWorkspaceState(ws.workspaceDir);
  const host = await HostDir.open(ws.hostDir);
  const done: Change[] = [];
  try {
    if (!opts.force) {
      const hostTree = new LowerTree(host.root);
      const conflicts: string[] = [];
      for (const c of chosen) if (await isConflict(hostTree, host, state, c)) conflicts.push(c.path);
      if (conflicts.length) {
        throw new KilnError(
          'WORKSPACE_CONFLICT',
          `${conflicts.length} host path(s) changed since the workspace was made: ${conflicts.slice(0, 5).join(', ')}${conflicts.length > 5 ? ', …' : ''}; review them, then approve with force to overwrite`,
          {
            details: { conflicts },
          },
        );
      }
    }
    const record = async (c: Change): Promise<void> => {
      state.written[c.pathBase64] = fingerprintOf(await lstatOrUndefined(await host.at(keyOfChange(c))));
      done.push(c);
    };
    const removed: PathKey[] = [];
    for (const c of chosen.filter(needsRemoval)) {
      const key = keyOfChange(c);
      if (removed.some((r) => isUnder(key, r))) {
        state.written[c.pathBase64] = { absent: true };
        if (c.status === 'deleted') done.push(c);
        continue;
      }
      await rm(await host.at(key), { recursive: true, force: true });
      await host.forget(key);
      removed.push(key);
      if (c.status === 'deleted') await record(c);
    }
    for (const c of chosen) {
      if (c.status === 'deleted') continue;
      await writeOne(ws.upper, host, c);
      await record(c);
    }
  } finally {
    await writeWorkspaceState(ws.workspaceDir, state);
    await host.close();
  }
  done.sort((a, b) => compareKeys(keyOfChange(a), keyOfChange(b)));
  return { applied: done.map((c) => c.path), appliedBase64: done.map((c) => c.pathBase64) };
}

/** Writes one added or modified entry into W. */
async function writeOne(upper: UpperSource, host: HostDir, c: Change): Promise<void> {
  const key = keyOfChange(c);
  const target = await host.at(key);
  const modeNew = c.modeNew ?? 0o644;
  if (c.type === 'directory') {
    const existing = await lstatOrUndefined(target);
    if (!existing) {
      await mkdir(target);
      await chown(target, host.uid, host.gid);
    }
    await chmod(target, modeNew & DIR_MODE_MASK);
    return;
  }
  const existing = await lstatOrUndefined(target);
  const uid = existing ? Number(existing.uid) : host.uid;
  const gid = existing ? Number(existing.gid) : host.gid;
  const tmp = await host.at(childKey(parentKey(key), `.kiln-approve-${randomBytes(6).toString('hex')}`));
  try {
    if (c.type === 'symlink') {
      await symlink(await upper.readlink(bytesOf(key)), tmp);
      await lchown(tmp, uid, gid);
    } else {
      const data = await upper.read(bytesOf(key));
      const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
      try {
        await fh.writeFile(data);
        await fh.chown(uid, gid);
        await fh.chmod(modeNew & FILE_MODE_MASK); // after chown, which clears set-id bits anyway
        await fh.datasync();
      } finally {
        await fh.close();
      }
    }
    await rename(tmp, target);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/**
 * Reject while NO sandbox runs on the workspace: edits the upper layer itself, so the merged view
 * shows W again at the selected paths. An entry is removed from the upper (a whiteout too, which
 * brings the lower entry back); under an opaque directory, where the lower stays hidden, the
 * lower entry is copied into the upper instead. With a sandbox running, go through the agent.
 */
export async function reject(ws: Workspace, paths?: ReadonlyArray<string | Buffer>): Promise<RejectResult> {
  const lowerDir = ws.lowerDir ?? ws.hostDir;
  const entries = await ws.upper.scan();
  const byKey = new Map(entries.map((e) => [keyOf(e.path), e]));
  const hiding = new Set<PathKey>();
  for (const [key, e] of byKey) if (e.kind === 'dir' && (e.opaque || hiding.has(parentKey(key)))) hiding.add(key);
  const chosen = selectChanges(await computeChanges(lowerDir, ws.upper, { includeIgnored: true }), paths);
  const lower = new LowerTree(lowerDir);
  const owner = await stat(ws.upperDir);
  const handled: PathKey[] = [];
  const done: Change[] = [];
  for (const c of chosen) {
    const key = keyOfChange(c);
    if (!handled.some((h) => isUnder(key, h))) {
      const blocker = ancestorsOf(key).find((a) => byKey.has(a) && byKey.get(a)!.kind !== 'dir');
      if (blocker !== undefined) {
        throw new KilnError('INVALID_REQUEST', `${c.path} lies under ${lossyOf(blocker)}, which the sandbox deleted or replaced: reject ${lossyOf(blocker)} as a whole`, {
          details: { path: c.path, with: lossyOf(blocker) },
        });
      }
      await rm(absPath(ws.upperDir, key), { recursive: true, force: true });
      if (ancestorsOf(key).some((a) => hiding.has(a))) await copyLower(lower, key, ws.upperDir, owner.uid, owner.gid);
      handled.push(key);
    }
    done.push(c);
  }
  return { rejected: done.map((c) => c.path), rejectedBase64: done.map((c) => c.pathBase64) };
}

/** Copies the lower entry at `key` (recursively) into the upper, as the upper's owner. */
async function copyLower(lower: LowerTree, key: PathKey, upperDir: string, uid: number, gid: number): Promise<void> {
  const st = await lower.stat(key);
  if (!st || st.type === 'other') return;
  const dest = absPath(upperDir, key);
  if (st.type === 'symlink') {
    await symlink(await lower.readlink(key), dest);
    await lchown(dest, uid, gid);
    return;
  }
  if (st.type === 'directory') await mkdir(dest);
  else await writeFile(dest, await lower.read(key), { flag: 'wx' }); // read without following symlinks
  await chown(dest, uid, gid);
  await chmod(dest, st.mode);
  if (st.type === 'directory') for (const child of await lower.children(key)) await copyLower(lower, child, upperDir, uid, gid);
}
