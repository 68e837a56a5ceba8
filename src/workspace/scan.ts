/**
 * What the upper layer of a workspace holds. The scan format is the NDJSON the Go helper writes
 * (`kiln-agent host ws-scan <upperDir>`, WORKSPACE-DESIGN.md): one entry per line, depth first,
 * parents before children, paths as base64 of their raw bytes.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, readdir, readlink, realpath } from 'node:fs/promises';
import { promisify } from 'node:util';
import { KilnError } from '../core/errors.js';
import { readFileNoFollow, readlinkNoFollow } from './nofollow.js';
import { absPath, childKey, keyOf, type PathKey } from './paths.js';

export type UpperKind = 'file' | 'dir' | 'symlink' | 'whiteout' | 'other';

export interface UpperEntry {
  /** The raw relative path under the upper directory. */
  path: Buffer;
  kind: UpperKind;
  /** Permission bits (st_mode & 0o7777). */
  mode: number;
  size: number;
  /** Only on dirs: `user.overlay.opaque=y`, the lower directory's entries are hidden. */
  opaque: boolean;
  /** Only on symlinks: the raw target. */
  target?: Buffer;
}

/** Reads an upper layer, wherever it lives (a host directory; later a guest's, through the agent). */
export interface UpperSource {
  scan(): Promise<UpperEntry[]>;
  read(rel: Buffer): Promise<Buffer>;
  readlink(rel: Buffer): Promise<Buffer>;
}

const KINDS = new Set<UpperKind>(['file', 'dir', 'symlink', 'whiteout', 'other']);

/** Parses the scan's NDJSON; a malformed line is an AGENT_PROTOCOL error naming its number. */
export function parseScan(ndjson: string): UpperEntry[] {
  const out: UpperEntry[] = [];
  const lines = ndjson.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.trim() === '') continue;
    const bad = (why: string): KilnError => new KilnError('AGENT_PROTOCOL', `workspace scan line ${i + 1}: ${why}`);
    let raw: Record<string, unknown>;
    try {
      raw = JSON.parse(line);
    } catch {
      throw bad('not JSON');
    }
    if (typeof raw.path !== 'string' || raw.path === '') throw bad('no path');
    if (typeof raw.kind !== 'string' || !KINDS.has(raw.kind as UpperKind)) throw bad(`unknown kind ${String(raw.kind)}`);
    const path = Buffer.from(raw.path, 'base64');
    if (
      path[0] === 0x2f ||
      path.includes(0) ||
      path
        .toString('latin1')
        .split('/')
        .some((c) => c === '' || c === '.' || c === '..')
    )
      throw bad('path is not a clean relative path');
    const kind = raw.kind as UpperKind;
    const entry: UpperEntry = { path, kind, mode: Number(raw.mode ?? 0) & 0o7777, size: Number(raw.size ?? 0), opaque: kind === 'dir' && raw.opaque === true };
    if (kind === 'symlink') {
      if (typeof raw.target !== 'string') throw bad('symlink without target');
      entry.target = Buffer.from(raw.target, 'base64');
    }
    out.push(entry);
  }
  return out;
}

/** The NDJSON line of an entry (the inverse of parseScan; tests and the TypeScript scan use it). */
export function formatScanLine(e: UpperEntry): string {
  const o: Record<string, unknown> = { path: e.path.toString('base64'), kind: e.kind, mode: e.mode, size: e.size, opaque: e.opaque };
  if (e.target) o.target = e.target.toString('base64');
  return JSON.stringify(o);
}

const execFileP = promisify(execFile);

/** The Go scan: `<agentPath> host ws-scan <upperDir>` (the other helper's mode of kiln-agent). */
export async function scanUpperWithAgent(agentPath: string, upperDir: string): Promise<UpperEntry[]> {
  const { stdout } = await execFileP(agentPath, ['host', 'ws-scan', upperDir], { maxBuffer: 1 << 30, encoding: 'utf8' });
  return parseScan(stdout);
}

/** Tells whether a directory (absolute, raw bytes) is opaque. */
export type OpaqueProbe = (absDir: Buffer) => Promise<boolean>;

/**
 * The opaque probe of the TypeScript scan: `getfattr` when the attr package is installed, else
 * none (every directory reads as not opaque). Node has no xattr call; the Go scan reads the
 * attribute itself.
 */
export function defaultOpaqueProbe(): OpaqueProbe | undefined {
  const getfattr = ['/usr/bin/getfattr', '/bin/getfattr'].find((p) => existsSync(p));
  if (!getfattr) return undefined;
  return async (absDir) => {
    try {
      const { stdout } = await execFileP(getfattr, ['-n', 'user.overlay.opaque', '--only-values', '--', absDir.toString('latin1')], { encoding: 'latin1' });
      return stdout === 'y';
    } catch {
      return false; // no such attribute
    }
  };
}

/**
 * INTERIM, for tests until `kiln-agent host ws-scan` lands: the scan written in TypeScript over a
 * host upper directory. Same output as the Go scan (depth first, parents first), but opaque
 * directories are only seen through `opaque` (default: getfattr if installed). The lead swaps in
 * the Go scan through HostUpperSource's `scan` option.
 */
export async function scanUpperTs(upperDir: string, opaque: OpaqueProbe | undefined = defaultOpaqueProbe()): Promise<UpperEntry[]> {
  const out: UpperEntry[] = [];
  const walk = async (dir: PathKey): Promise<void> => {
    const names = (await readdir(absPath(upperDir, dir), { encoding: 'buffer' })).map(keyOf).sort();
    const stats = await Promise.all(names.map((n) => lstat(absPath(upperDir, childKey(dir, n)))));
    for (let i = 0; i < names.length; i++) {
      const key = childKey(dir, names[i]!);
      const st = stats[i]!;
      const rel = Buffer.from(key, 'latin1');
      const mode = st.mode & 0o7777;
      if (st.isDirectory()) {
        const abs = absPath(upperDir, key);
        out.push({ path: rel, kind: 'dir', mode, size: 0, opaque: opaque ? await opaque(abs) : false });
        await walk(key);
      } else if (st.isSymbolicLink()) {
        const target = await readlink(absPath(upperDir, key), { encoding: 'buffer' });
        out.push({ path: rel, kind: 'symlink', mode, size: target.length, opaque: false, target });
      } else if (st.isFile()) {
        out.push({ path: rel, kind: 'file', mode, size: st.size, opaque: false });
      } else {
        const whiteout = st.isCharacterDevice() && st.rdev === 0;
        out.push({ path: rel, kind: whiteout ? 'whiteout' : 'other', mode, size: 0, opaque: false });
      }
    }
  };
  await walk('');
  return out;
}

export interface HostUpperSourceOptions {
  /** The scan to use (the Go helper's, say); default the interim TypeScript scan. */
  scan?: () => Promise<UpperEntry[]>;
  opaque?: OpaqueProbe;
}

/**
 * An upper directory on the host (namespace backend): reads go straight to the files, never
 * through a symlink (the sandbox may swap one in at any time while it runs).
 */
export class HostUpperSource implements UpperSource {
  private real?: Promise<string>;

  constructor(
    readonly upperDir: string,
    private readonly options: HostUpperSourceOptions = {},
  ) {}

  scan(): Promise<UpperEntry[]> {
    return this.options.scan ? this.options.scan() : scanUpperTs(this.upperDir, this.options.opaque ?? defaultOpaqueProbe());
  }

  async read(rel: Buffer): Promise<Buffer> {
    return readFileNoFollow(await this.root(), keyOf(rel));
  }

  async readlink(rel: Buffer): Promise<Buffer> {
    return readlinkNoFollow(await this.root(), keyOf(rel));
  }

  private root(): Promise<string> {
    this.real ??= realpath(this.upperDir);
    return this.real;
  }
}
