/**
 * A workspace made of plain temp directories: a lower tree (the host directory W) and an upper
 * layer built by hand the way overlayfs leaves it (copied-up parents, whiteouts as char devices
 * 0/0 made with mknod, opaque directories with the user.overlay.opaque xattr). Needs root.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Change, computeChanges } from '../../src/workspace/changes.js';
import { HostUpperSource, type OpaqueProbe } from '../../src/workspace/scan.js';

export type P = string | Buffer;
const raw = (p: P): Buffer => (typeof p === 'string' ? Buffer.from(p) : p);
export const under = (dir: string, p: P): Buffer => Buffer.concat([Buffer.from(`${dir}/`), raw(p)]);

const hasBin = (b: string): boolean => ['/usr/bin/', '/bin/'].some((d) => existsSync(d + b));
const python = ['python3', 'python'].find((b) => {
  try {
    execFileSync(b, ['-c', 'import os; os.getxattr'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
});

/** How the tests set and read the opaque xattr: the attr tools, else Python's os.*xattr, else not at all. */
export const xattrTools = hasBin('setfattr') ? 'attr' : python ? 'python' : undefined;

export function setOpaque(abs: Buffer): void {
  if (xattrTools === 'attr') execFileSync('setfattr', ['-n', 'user.overlay.opaque', '-v', 'y', abs.toString('latin1')]);
  else execFileSync(python!, ['-c', 'import os,sys; os.setxattr(os.fsencode(sys.argv[1]), "user.overlay.opaque", b"y")', abs.toString('latin1')]);
}

/** The opaque probe the tests hand to HostUpperSource when getfattr is missing. */
export const testOpaqueProbe: OpaqueProbe | undefined =
  xattrTools === 'python'
    ? async (abs) => {
        const out = execFileSync(python!, [
          '-c',
          'import os,sys\ntry: print(os.getxattr(os.fsencode(sys.argv[1]), "user.overlay.opaque") == b"y")\nexcept OSError: print(False)',
          abs.toString('latin1'),
        ]);
        return out.toString().trim() === 'True';
      }
    : undefined;

export interface TreeEntry {
  type: 'file' | 'directory' | 'symlink';
  mode: number;
  content?: string;
}

export class WsFixture {
  private constructor(readonly root: string) {}
  get lower(): string {
    return join(this.root, 'lower');
  }
  get upper(): string {
    return join(this.root, 'upper');
  }
  get state(): string {
    return join(this.root, 'state');
  }

  static async make(): Promise<WsFixture> {
    const root = await mkdtemp(join(tmpdir(), 'kiln-ws-'));
    const f = new WsFixture(root);
    await mkdir(f.lower);
    await mkdir(f.upper);
    await mkdir(f.state);
    return f;
  }

  async close(): Promise<void> {
    await rm(this.root, { recursive: true, force: true });
  }

  // lower (the host directory)
  async lowerFile(p: P, content: string | Buffer, mode = 0o644): Promise<void> {
    await this.mkParents(this.lower, p);
    await writeFile(under(this.lower, p), content);
    await chmod(under(this.lower, p), mode);
  }
  async lowerDir(p: P, mode = 0o755): Promise<void> {
    await mkdir(under(this.lower, p), { recursive: true });
    await chmod(under(this.lower, p), mode);
  }
  async lowerLink(p: P, target: string): Promise<void> {
    await this.mkParents(this.lower, p);
    await symlink(target, under(this.lower, p));
  }

  // upper, the way the overlay writes it
  async upFile(p: P, content: string | Buffer, mode = 0o644): Promise<void> {
    await this.copyUpParents(p);
    await rm(under(this.upper, p), { force: true, recursive: true });
    await writeFile(under(this.upper, p), content);
    await chmod(under(this.upper, p), mode);
  }
  async upDir(p: P, mode = 0o755, opaque = false): Promise<void> {
    await this.copyUpParents(p);
    const there = await lstat(under(this.upper, p)).catch(() => undefined);
    if (there && !there.isDirectory()) await rm(under(this.upper, p));
    await mkdir(under(this.upper, p), { recursive: true });
    await chmod(under(this.upper, p), mode);
    if (opaque) setOpaque(under(this.upper, p));
  }
  async upLink(p: P, target: string): Promise<void> {
    await this.copyUpParents(p);
    await rm(under(this.upper, p), { force: true });
    await symlink(target, under(this.upper, p));
  }
  async whiteout(p: P): Promise<void> {
    await this.copyUpParents(p);
    await rm(under(this.upper, p), { force: true, recursive: true });
    execFileSync('mknod', [under(this.upper, p).toString('latin1'), 'c', '0', '0']);
  }

  source(): HostUpperSource {
    return new HostUpperSource(this.upper, { opaque: testOpaqueProbe });
  }

  changes(includeIgnored = false): Promise<Change[]> {
    return computeChanges(this.lower, this.source(), { includeIgnored });
  }

  private async mkParents(dir: string, p: P): Promise<void> {
    const parts = raw(p).toString('latin1').split('/').slice(0, -1);
    if (parts.length) await mkdir(under(dir, Buffer.from(parts.join('/'), 'latin1')), { recursive: true });
  }

  /** Parents exist in the upper with the lower directory's mode (a copy-up keeps it). */
  private async copyUpParents(p: P): Promise<void> {
    const parts = raw(p).toString('latin1').split('/').slice(0, -1);
    for (let i = 1; i <= parts.length; i++) {
      const rel = Buffer.from(parts.slice(0, i).join('/'), 'latin1');
      if (existsSync(under(this.upper, rel))) continue;
      const mode = await lstat(under(this.lower, rel)).then(
        (s) => s.mode & 0o7777,
        () => 0o755,
      );
      await mkdir(under(this.upper, rel));
      await chmod(under(this.upper, rel), mode);
    }
  }
}

/** A directory's tree: relative path (latin1 of its bytes) → type, mode, content or target. */
export async function readTree(dir: string, opts: { skip?: (rel: string) => boolean } = {}): Promise<Record<string, TreeEntry>> {
  const out: Record<string, TreeEntry> = {};
  const walk = async (rel: string): Promise<void> => {
    const abs = rel === '' ? Buffer.from(dir) : under(dir, Buffer.from(rel, 'latin1'));
    for (const name of (await readdir(abs, { encoding: 'buffer' })).map((n) => n.toString('latin1')).sort()) {
      const r = rel === '' ? name : `${rel}/${name}`;
      if (opts.skip?.(r)) continue;
      const a = under(dir, Buffer.from(r, 'latin1'));
      const st = await lstat(a);
      const mode = st.mode & 0o7777;
      if (st.isDirectory()) {
        out[r] = { type: 'directory', mode };
        await walk(r);
      } else if (st.isSymbolicLink()) out[r] = { type: 'symlink', mode: 0o777, content: (await readlink(a, { encoding: 'buffer' })).toString('latin1') };
      else out[r] = { type: 'file', mode, content: (await readFile(a)).toString('latin1') };
    }
  };
  await walk('');
  return out;
}

/** What a change list says, short: "status type path". */
export const summary = (changes: Change[]): string[] => changes.map((c) => `${c.status} ${c.type} ${c.path}`);

/**
 * The merged view as the kernel shows it: a read-only overlay with the upper as the top lower
 * layer (userxattr, so whiteouts and user.overlay.opaque count as they do in a sandbox).
 */
export async function mergedTree(f: WsFixture): Promise<Record<string, TreeEntry>> {
  const mnt = join(f.root, 'merged');
  await mkdir(mnt, { recursive: true });
  execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `ro,userxattr,lowerdir=${f.upper}:${f.lower}`, mnt]);
  try {
    return await readTree(mnt);
  } finally {
    execFileSync('umount', [mnt]);
    await rm(mnt, { recursive: true });
  }
}

/** What a git patch can carry: files (content, executable or not) and symlinks; no directories. */
export function gitView(tree: Record<string, TreeEntry>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, e] of Object.entries(tree)) {
    if (e.type === 'file') out[k] = `${e.mode & 0o100 ? 'x' : '-'} ${e.content}`;
    else if (e.type === 'symlink') out[k] = `-> ${e.content}`;
  }
  return out;
}
