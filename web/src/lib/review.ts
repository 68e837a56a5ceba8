/**
 * The workspace review page's logic, apart from React so the tests can run it under Node: the
 * changes list as rows, what the diff panel shows for a change, the upper layer's fill level, and
 * which file stays selected after a decision. Imports only types (the Node tests load it as is).
 */
import type { Change, ChangeStatus, ChangeType } from '../../../sdk/src/index.ts';

/** Text larger than this is not put into the merge view (the patch still has it). */
export const MERGE_MAX_BYTES = 2 * 1024 * 1024;
/** The upper layer's fill levels: a warning from WARN, "full" from FULL (ENOSPC is near). */
export const USAGE_WARN = 0.8;
export const USAGE_FULL = 0.95;

export interface ReviewRow {
  path: string;
  status: ChangeStatus;
  type: ChangeType;
  /** A, M or D, as git status shows it. */
  letter: 'A' | 'M' | 'D';
  size: number;
  binary: boolean;
  ignored: boolean;
  /** "0644 → 0755" when the permission bits changed, else undefined. */
  modeChange?: string;
  change: Change;
}

export interface ReviewSummary {
  added: number;
  modified: number;
  deleted: number;
  ignored: number;
  total: number;
}

/** Rows in path order (a directory's entries right after it), ignored ones only when shown. */
export function reviewRows(changes: Change[], showIgnored: boolean): ReviewRow[] {
  return changes
    .filter((c) => showIgnored || !c.ignored)
    .sort((a, b) => comparePaths(a.path, b.path))
    .map((c) => ({
      path: c.path,
      status: c.status,
      type: c.type,
      letter: c.status === 'added' ? 'A' : c.status === 'deleted' ? 'D' : 'M',
      size: c.size,
      binary: c.binary,
      ignored: c.ignored,
      modeChange: modeChange(c),
      change: c,
    }));
}

export function summarize(changes: Change[]): ReviewSummary {
  const s: ReviewSummary = { added: 0, modified: 0, deleted: 0, ignored: 0, total: changes.length };
  for (const c of changes) {
    s[c.status]++;
    if (c.ignored) s.ignored++;
  }
  return s;
}

/** Paths compared component by component, so "a/b" sorts right after "a" and before "a.txt". */
export function comparePaths(a: string, b: string): number {
  const ka = a.split('/');
  const kb = b.split('/');
  for (let i = 0; i < Math.min(ka.length, kb.length); i++) {
    if (ka[i] !== kb[i]) return ka[i]! < kb[i]! ? -1 : 1;
  }
  return ka.length - kb.length;
}

export function octal(mode: number): string {
  return `0${(mode & 0o7777).toString(8).padStart(3, '0')}`;
}

function modeChange(c: Change): string | undefined {
  if (c.modeOld === undefined || c.modeNew === undefined || c.modeOld === c.modeNew) return undefined;
  return `${octal(c.modeOld)} → ${octal(c.modeNew)}`;
}

/**
 * What the diff panel shows for a change:
 *  - text: both sides side by side (`old`/`new` say which side to fetch; the other is empty);
 *  - symlink: the targets (the old one is fetched: a link's content is its target);
 *  - binary, directory: a description, no content;
 *  - tooLarge: a text file over MERGE_MAX_BYTES.
 */
export type DiffView =
  | { kind: 'text'; old: boolean; new: boolean }
  | { kind: 'symlink'; old: boolean; newTarget?: string }
  | { kind: 'binary' }
  | { kind: 'directory' }
  | { kind: 'tooLarge'; limitBytes: number };

export function diffViewOf(c: Change): DiffView {
  if (c.type === 'directory') return { kind: 'directory' };
  if (c.type === 'symlink') return { kind: 'symlink', old: c.status !== 'added', newTarget: c.status === 'deleted' ? undefined : c.target };
  if (c.binary) return { kind: 'binary' };
  if (c.size > MERGE_MAX_BYTES) return { kind: 'tooLarge', limitBytes: MERGE_MAX_BYTES };
  return { kind: 'text', old: c.status !== 'added', new: c.status !== 'deleted' };
}

/** One sentence on what happened to a change, for the diff panel's header. */
export function describe(c: Change): string {
  const what = c.type === 'directory' ? 'Directory' : c.type === 'symlink' ? 'Symbolic link' : c.binary ? 'Binary file' : 'File';
  const mode = modeChange(c);
  if (c.status === 'modified' && mode && c.type === 'file') return `${what} modified (mode ${mode})`;
  return `${what} ${c.status}`;
}

/**
 * Text for the merge view, or undefined when the bytes are not UTF-8 (the server said text, but a
 * file can change between the list and the read; the panel then falls back to "binary").
 */
export function decodeText(bytes: Uint8Array): string | undefined {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return undefined;
  }
}

/** A change's identity for the content cache: the same path with other content refetches. */
export function contentKey(c: Change): string {
  return [c.path, c.status, c.type, c.size, c.modeNew ?? '', c.target ?? ''].join('\0');
}

export interface Usage {
  fraction: number;
  percent: number;
  level: 'ok' | 'warn' | 'full';
}

export function usageOf(upperBytes: number, limitBytes: number): Usage {
  const fraction = limitBytes > 0 ? Math.min(1, Math.max(0, upperBytes / limitBytes)) : 0;
  return { fraction, percent: Math.round(fraction * 1000) / 10, level: fraction >= USAGE_FULL ? 'full' : fraction >= USAGE_WARN ? 'warn' : 'ok' };
}

/**
 * The path to keep selected once `decided` left the list: the same one if it is still there, else
 * the row that followed it (or the one before, at the end), else none.
 */
export function selectionAfter(before: ReviewRow[], after: ReviewRow[], selected: string | undefined): string | undefined {
  if (!after.length) return undefined;
  if (selected === undefined) return after[0]!.path;
  if (after.some((r) => r.path === selected)) return selected;
  const at = before.findIndex((r) => r.path === selected);
  if (at < 0) return after[0]!.path;
  const still = new Set(after.map((r) => r.path));
  const next =
    before.slice(at + 1).find((r) => still.has(r.path)) ??
    before
      .slice(0, at)
      .reverse()
      .find((r) => still.has(r.path));
  return next?.path ?? after[0]!.path;
}
