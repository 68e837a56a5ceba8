/**
 * Which paths the project's .gitignore files match, read from the merged view: a .gitignore the
 * sandbox wrote counts, one it deleted does not. Nested files apply below their directory and
 * win over shallower ones; a path under an ignored directory is ignored (git cannot re-include it).
 */
import ignore, { type Ignore } from 'ignore';
import type { LowerTree } from './lower.js';
import { ancestorsOf, childKey, lossyOf, type PathKey } from './paths.js';
import type { UpperEntry, UpperSource } from './scan.js';

export class GitignoreRules {
  private readonly files = new Map<PathKey, Promise<Ignore | null>>();
  private readonly dirs = new Map<PathKey, Promise<boolean>>();

  constructor(
    private readonly lower: LowerTree,
    private readonly upper: UpperSource,
    private readonly upperEntries: Map<PathKey, UpperEntry>,
  ) {}

  async ignores(key: PathKey, isDir: boolean): Promise<boolean> {
    for (const dir of ancestorsOf(key)) if (await this.dirIgnored(dir)) return true;
    return this.matches(key, isDir);
  }

  private dirIgnored(dir: PathKey): Promise<boolean> {
    let p = this.dirs.get(dir);
    if (!p) {
      p = this.matches(dir, true);
      this.dirs.set(dir, p);
    }
    return p;
  }

  /** The deepest .gitignore with a rule for `key` itself decides. */
  private async matches(key: PathKey, isDir: boolean): Promise<boolean> {
    const dirs = ['', ...ancestorsOf(key)].reverse();
    for (const dir of dirs) {
      const ig = await this.rulesIn(dir);
      if (!ig) continue;
      const rel = lossyOf(dir === '' ? key : key.slice(dir.length + 1));
      const r = ig.test(isDir ? `${rel}/` : rel);
      if (r.ignored) return true;
      if (r.unignored) return false;
    }
    return false;
  }

  private rulesIn(dir: PathKey): Promise<Ignore | null> {
    let p = this.files.get(dir);
    if (!p) {
      p = this.load(childKey(dir, '.gitignore'));
      this.files.set(dir, p);
    }
    return p;
  }

  private async load(key: PathKey): Promise<Ignore | null> {
    const e = this.upperEntries.get(key);
    let text: string | undefined;
    if (e) {
      if (e.kind === 'file') text = (await this.upper.read(e.path)).toString('utf8');
    } else if ((await this.lower.stat(key))?.type === 'file') {
      text = (await this.lower.read(key)).toString('utf8');
    }
    return text === undefined ? null : ignore().add(text);
  }
}
