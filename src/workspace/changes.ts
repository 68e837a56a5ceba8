/**
 * The change set of a workspace: what the merged view (upper over lower) holds that the host
 * directory W (the lower layer) does not, path by path.
 */

import { GitignoreRules } from './ignored.js';
import { type EntryType, LowerTree } from './lower.js';
import { ancestorsOf, bytesOf, compareKeys, keyOf, lossyOf, type PathKey, parentKey } from './paths.js';
import type { UpperEntry, UpperSource } from './scan.js';

export type ChangeStatus = 'added' | 'modified' | 'deleted';
export type ChangeType = EntryType;

export interface Change {
  /** UTF-8 (invalid bytes replaced): for display and selection by text. */
  path: string;
  /** The raw bytes of the path. */
  pathBase64: string;
  status: ChangeStatus;
  /** The entry's type now (for a deletion: the type it had). */
  type: ChangeType;
  /** Set when a modification changed the type (a file became a directory, say). */
  typeOld?: ChangeType;
  /** Bytes of the new content (a deletion: of the old one); a symlink's target length; 0 for directories. */
  size: number;
  /** NUL or invalid UTF-8 in the first 8 KiB of either side, git's test. */
  binary: boolean;
  /** Matched by the project's .gitignore files. */
  ignored: boolean;
  modeOld?: number;
  modeNew?: number;
  /** A symlink's target (new one; for a deletion the old one), UTF-8 lossy. */
  target?: string;
}

export interface ComputeChangesOptions {
  /** Include paths the .gitignore files match (default: left out). */
  includeIgnored?: boolean;
  /** How many paths are compared at once (default 32). */
  concurrency?: number;
}

const BINARY_PROBE_BYTES = 8192;

/** git's binary test (NUL in the first 8 KiB), widened to invalid UTF-8 there too. */
export function looksBinary(head: Buffer, truncated = head.length > BINARY_PROBE_BYTES): boolean {
  const probe = head.subarray(0, BINARY_PROBE_BYTES);
  if (probe.includes(0)) return true;
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  try {
    // a multi-byte character cut at the probe's end is not an error: stream and do not flush
    if (truncated || head.length > BINARY_PROBE_BYTES) utf8.decode(probe, { stream: true });
    else utf8.decode(probe);
    return false;
  } catch {
    return true;
  }
}

export const keyOfChange = (c: Change): PathKey => Buffer.from(c.pathBase64, 'base64').toString('latin1');

function makeChange(key: PathKey, status: ChangeStatus, type: ChangeType, extra: Partial<Change> = {}): Change {
  return { path: lossyOf(key), pathBase64: bytesOf(key).toString('base64'), status, type, size: 0, binary: false, ignored: false, ...extra };
}

/** Runs `fn` over `items` with at most `limit` at a time. */
async function forEachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

export async function computeChanges(lowerDir: string, upper: UpperSource, opts: ComputeChangesOptions = {}): Promise<Change[]> {
  const entries = await upper.scan();
  const lower = new LowerTree(lowerDir);
  const byKey = new Map<PathKey, UpperEntry>();
  for (const e of entries) byKey.set(keyOf(e.path), e);
  // A directory hides the lower one's entries it lacks when it, or an upper ancestor, is opaque.
  const hiding = new Set<PathKey>();
  for (const [key, e] of byKey) if (e.kind === 'dir' && (e.opaque || hiding.has(parentKey(key)))) hiding.add(key);

  const changes: Change[] = [];
  const deleteLower = async (key: PathKey): Promise<void> => {
    const st = await lower.stat(key);
    if (!st || st.type === 'other') return;
    if (st.type === 'directory') {
      changes.push(makeChange(key, 'deleted', 'directory', { modeOld: st.mode }));
      for (const child of await lower.children(key)) await deleteLower(child);
    } else if (st.type === 'symlink') {
      changes.push(makeChange(key, 'deleted', 'symlink', { modeOld: st.mode, size: st.size, target: (await lower.readlink(key)).toString('utf8') }));
    } else {
      const head = await lower.head(key, BINARY_PROBE_BYTES + 4);
      changes.push(makeChange(key, 'deleted', 'file', { modeOld: st.mode, size: st.size, binary: looksBinary(head, st.size > head.length) }));
    }
  };
  const deleteLowerChildren = async (key: PathKey, except: (child: PathKey) => boolean): Promise<void> => {
    for (const child of await lower.children(key)) if (!except(child)) await deleteLower(child);
  };

  await forEachLimited([...byKey.keys()], opts.concurrency ?? 32, async (key) => {
    const e = byKey.get(key)!;
    const old = await lower.stat(key);
    const oldType = old && old.type !== 'other' ? old.type : undefined;
    if (e.kind === 'whiteout') return deleteLower(key);
    if (e.kind === 'other') return;
    if (oldType === 'directory' && (e.kind !== 'dir' || hiding.has(key))) {
      await deleteLowerChildren(key, (child) => e.kind === 'dir' && byKey.has(child));
    }
    const modeFields = { modeNew: e.mode, ...(old ? { modeOld: old.mode } : {}) };
    const typeNew: ChangeType = e.kind === 'dir' ? 'directory' : e.kind;
    if (!oldType) return void changes.push(await describeNew(upper, key, e, 'added', modeFields));
    if (oldType !== typeNew) return void changes.push(await describeNew(upper, key, e, 'modified', { ...modeFields, typeOld: oldType }));
    if (typeNew === 'directory') {
      if (old!.mode !== e.mode) changes.push(makeChange(key, 'modified', 'directory', modeFields));
      return;
    }
    if (typeNew === 'symlink') {
      const [a, b] = await Promise.all([lower.readlink(key), upper.readlink(e.path)]);
      if (!a.equals(b)) changes.push(makeChange(key, 'modified', 'symlink', { ...modeFields, size: b.length, target: b.toString('utf8') }));
      return;
    }
    if (old!.size === e.size) {
      const [a, b] = await Promise.all([lower.read(key), upper.read(e.path)]);
      if (a.equals(b) && old!.mode === e.mode) return;
      changes.push(makeChange(key, 'modified', 'file', { ...modeFields, size: b.length, binary: looksBinary(a) || looksBinary(b) }));
      return;
    }
    const [a, b] = await Promise.all([lower.head(key, BINARY_PROBE_BYTES + 4), upper.read(e.path)]);
    changes.push(makeChange(key, 'modified', 'file', { ...modeFields, size: b.length, binary: looksBinary(a, old!.size > a.length) || looksBinary(b) }));
  });

  const rules = new GitignoreRules(lower, upper, byKey);
  for (const c of changes) c.ignored = await rules.ignores(keyOfChange(c), c.type === 'directory');
  const kept = opts.includeIgnored ? changes : changes.filter((c) => !c.ignored);
  const keys = new Map(kept.map((c) => [c, keyOfChange(c)]));
  return kept.sort((a, b) => compareKeys(keys.get(a)!, keys.get(b)!));
}

async function describeNew(upper: UpperSource, key: PathKey, e: UpperEntry, status: ChangeStatus, extra: Partial<Change>): Promise<Change> {
  if (e.kind === 'dir') return makeChange(key, status, 'directory', extra);
  if (e.kind === 'symlink') {
    const target = e.target ?? (await upper.readlink(e.path));
    return makeChange(key, status, 'symlink', { ...extra, size: target.length, target: target.toString('utf8') });
  }
  const data = await upper.read(e.path);
  return makeChange(key, status, 'file', { ...extra, size: data.length, binary: looksBinary(data) });
}

/** The changes `paths` select: a path selects itself and everything under it. */
export function selectChanges(changes: Change[], paths: ReadonlyArray<string | Buffer> | undefined): Change[] {
  if (!paths) return changes;
  const wanted = paths.map((p) => (typeof p === 'string' ? { key: keyOf(Buffer.from(p.replace(/\/+$/, ''), 'utf8')), text: p.replace(/\/+$/, '') } : { key: keyOf(p), text: undefined }));
  const under = (c: Change): boolean => {
    const key = keyOfChange(c);
    const chain = [...ancestorsOf(key), key];
    const texts = chain.map(lossyOf);
    return wanted.some((w) => chain.includes(w.key) || (w.text !== undefined && texts.includes(w.text)));
  };
  return changes.filter(under);
}
