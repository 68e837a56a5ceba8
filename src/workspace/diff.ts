/**
 * A git-style patch of a change set: `git apply` on a copy of the host directory reproduces the
 * merged view's files and symlinks (git has no empty directories and only the modes 644, 755
 * and symlinks: a directory added empty or a mode change git cannot express is not in the patch).
 * Binary files go as GIT binary patch literals, so they apply too.
 */
import { createHash } from 'node:crypto';
import { deflateSync } from 'node:zlib';
import { structuredPatch } from 'diff';
import { type Change, keyOfChange } from './changes.js';
import { LowerTree } from './lower.js';
import { bytesOf, type PathKey } from './paths.js';
import type { UpperSource } from './scan.js';

interface Side {
  /** git's mode: 100644, 100755 or 120000. */
  gitMode: number;
  data: Buffer;
}

const NULL_OID = '0'.repeat(40);

export function gitBlobId(data: Buffer): string {
  return createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
}

const C_ESCAPES: Record<number, string> = { 7: '\\a', 8: '\\b', 9: '\\t', 10: '\\n', 11: '\\v', 12: '\\f', 13: '\\r', 34: '\\"', 92: '\\\\' };

/** git's C-style quoting (quote_c_style with core.quotePath): the path as is, or "…" with escapes. */
export function quoteGitPath(raw: Buffer): string {
  const needs = raw.some((b) => b < 0x20 || b === 0x22 || b === 0x5c || b >= 0x7f);
  if (!needs) return raw.toString('latin1');
  let out = '"';
  for (const b of raw) {
    if (C_ESCAPES[b]) out += C_ESCAPES[b];
    else if (b < 0x20 || b >= 0x7f) out += `\\${b.toString(8).padStart(3, '0')}`;
    else out += String.fromCharCode(b);
  }
  return `${out}"`;
}

const B85 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~';

/** git's base85 (encode_85): each 4 bytes (zero padded) become 5 characters, big-endian. */
export function encodeBase85(data: Buffer): string {
  let out = '';
  for (let i = 0; i < data.length; i += 4) {
    let acc = ((data[i] ?? 0) * 0x1000000 + ((data[i + 1] ?? 0) << 16) + ((data[i + 2] ?? 0) << 8) + (data[i + 3] ?? 0)) >>> 0;
    const chunk = new Array<string>(5);
    for (let c = 4; c >= 0; c--) {
      chunk[c] = B85[acc % 85]!;
      acc = Math.floor(acc / 85);
    }
    out += chunk.join('');
  }
  return out;
}

/** One `literal` hunk of a GIT binary patch: zlib deflate, 52 bytes a line, length letter first. */
function binaryLiteral(data: Buffer): string {
  const z = deflateSync(data);
  let out = `literal ${data.length}\n`;
  for (let i = 0; i < z.length; i += 52) {
    const line = z.subarray(i, i + 52);
    const n = line.length;
    out += `${n <= 26 ? String.fromCharCode(64 + n) : String.fromCharCode(96 + n - 26)}${encodeBase85(line)}\n`;
  }
  return `${out}\n`;
}

function isText(data: Buffer): boolean {
  if (data.includes(0)) return false;
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(data);
    return true;
  } catch {
    return false;
  }
}

// an empty side starts at the line before it (git and patch(1)): -0,0
const range = (start: number, lines: number): string => (lines === 1 ? `${start}` : `${lines === 0 ? start - 1 : start},${lines}`);
const NO_EOL = '\\ No newline at end of file';

function textHunks(a: Buffer, b: Buffer, maxEditLength: number): string {
  const oldText = a.toString('utf8');
  const newText = b.toString('utf8');
  const p = structuredPatch('a', 'b', oldText, newText, undefined, undefined, { context: 3, maxEditLength });
  if (!p) return rewriteHunk(oldText, newText);
  let out = '';
  for (const h of p.hunks) {
    out += `@@ -${range(h.oldStart, h.oldLines)} +${range(h.newStart, h.newLines)} @@\n`;
    for (const line of h.lines) out += `${line}\n`;
  }
  return out;
}

/** Too far apart to diff line by line in bounded time: one hunk that replaces every line. */
function rewriteHunk(oldText: string, newText: string): string {
  const side = (text: string, sign: string): { count: number; body: string } => {
    if (text === '') return { count: 0, body: '' };
    const lines = text.split('\n');
    const noEol = lines[lines.length - 1] !== '';
    if (!noEol) lines.pop();
    return { count: lines.length, body: lines.map((l) => `${sign}${l}\n`).join('') + (noEol ? `${NO_EOL}\n` : '') };
  };
  const o = side(oldText, '-');
  const n = side(newText, '+');
  return `@@ -${range(1, o.count)} +${range(1, n.count)} @@\n${o.body}${n.body}`;
}

/** One `diff --git` block: `old` or `new` absent for a creation or a deletion. */
export function diffBlock(rawPath: Buffer, old: Side | undefined, neu: Side | undefined, maxEditLength = DEFAULT_MAX_EDIT_LENGTH): string {
  if (old && neu && old.gitMode === neu.gitMode && old.data.equals(neu.data)) return '';
  const a = quoteGitPath(Buffer.concat([Buffer.from('a/'), rawPath]));
  const b = quoteGitPath(Buffer.concat([Buffer.from('b/'), rawPath]));
  let out = `diff --git ${a} ${b}\n`;
  if (!old && neu) out += `new file mode ${neu.gitMode.toString(8)}\n`;
  else if (old && !neu) out += `deleted file mode ${old.gitMode.toString(8)}\n`;
  else if (old && neu && old.gitMode !== neu.gitMode) out += `old mode ${old.gitMode.toString(8)}\nnew mode ${neu.gitMode.toString(8)}\n`;
  const oldData = old?.data ?? Buffer.alloc(0);
  const newData = neu?.data ?? Buffer.alloc(0);
  if (old && neu && oldData.equals(newData)) return out;
  const sameMode = old && neu && old.gitMode === neu.gitMode ? ` ${old.gitMode.toString(8)}` : '';
  out += `index ${old ? gitBlobId(oldData) : NULL_OID}..${neu ? gitBlobId(newData) : NULL_OID}${sameMode}\n`;
  if (!isText(oldData) || !isText(newData)) return `${out}GIT binary patch\n${binaryLiteral(newData)}${binaryLiteral(oldData)}`;
  if (oldData.length === 0 && newData.length === 0) return out;
  const label = (prefix: string, quoted: string, present: boolean): string => {
    const l = present ? quoted : '/dev/null';
    return `${prefix} ${l}${l.includes(' ') ? '\t' : ''}\n`;
  };
  out += label('---', a, !!old) + label('+++', b, !!neu);
  return out + textHunks(oldData, newData, maxEditLength);
}

const gitModeOf = (type: Change['type'], mode: number): number => (type === 'symlink' ? 0o120000 : mode & 0o100 ? 0o100755 : 0o100644);

/** Lines of edit distance past which a text file is shown rewritten whole (bounds the diff's time). */
export const DEFAULT_MAX_EDIT_LENGTH = 5000;

export interface UnifiedDiffOptions {
  /** How many blocks are read at once (default 16). */
  concurrency?: number;
  maxEditLength?: number;
}

/**
 * The patch of `changes` (all of computeChanges' answer, or a selection of it): one block per
 * file or symlink, in the order given; a type change is a deletion and a creation.
 */
export async function unifiedDiff(lowerDir: string, upper: UpperSource, changes: Change[], opts: UnifiedDiffOptions = {}): Promise<string> {
  const lower = new LowerTree(lowerDir);
  const side = async (key: PathKey, type: Change['type'], mode: number, from: 'lower' | 'upper'): Promise<Side | undefined> => {
    if (type === 'directory') return undefined;
    const raw = bytesOf(key);
    const data = type === 'symlink' ? await (from === 'lower' ? lower.readlink(key) : upper.readlink(raw)) : await (from === 'lower' ? lower.read(key) : upper.read(raw));
    return { gitMode: gitModeOf(type, mode), data };
  };
  const blocks = new Array<string>(changes.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < changes.length) {
      const i = next++;
      const c = changes[i]!;
      const key = keyOfChange(c);
      const raw = bytesOf(key);
      const old = c.status === 'added' ? undefined : await side(key, c.typeOld ?? c.type, c.modeOld ?? 0, 'lower');
      const neu = c.status === 'deleted' ? undefined : await side(key, c.type, c.modeNew ?? 0, 'upper');
      if (!old && !neu) blocks[i] = '';
      else if (old && neu && old.gitMode !== neu.gitMode && (old.gitMode === 0o120000 || neu.gitMode === 0o120000)) {
        blocks[i] = diffBlock(raw, old, undefined) + diffBlock(raw, undefined, neu);
      } else blocks[i] = diffBlock(raw, old, neu, opts.maxEditLength);
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.concurrency ?? 16, changes.length) }, worker));
  return blocks.join('');
}
