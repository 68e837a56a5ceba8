/**
 * Turns the build tools' output into progress events. mmdebstrap draws its progress bars only on
 * a tty, so we run it with --verbose and count apt's "Get:" and dpkg's "Unpacking"/"Setting up"
 * lines against the "N newly installed" total apt prints before each stage.
 */
import type { BuildPhase, BuildProgressEvent } from './types.js';

type Emit = (phase: BuildPhase, message: string, percent?: number) => BuildProgressEvent;

function pct(n: number, total: number): number | undefined {
  if (total <= 0) return undefined;
  return Math.min(100, Math.round((n / total) * 100));
}

export class MmdebstrapProgress {
  private phase: BuildPhase = 'resolve';
  private total = 0;
  private downloaded = 0;
  private unpacked = 0;
  private configured = 0;
  /** Inside a custom pack's setup command: its output is passed on as it comes. */
  private inSetup = false;
  private readonly emit: Emit;

  constructor(pack: string) {
    this.emit = (phase, message, percent) => {
      this.phase = phase;
      return percent === undefined ? { pack, phase, message } : { pack, phase, message, percent };
    };
  }

  /** One line of mmdebstrap output in, at most one event out. */
  feed(line: string): BuildProgressEvent | undefined {
    let m: RegExpExecArray | null;
    // "kiln: setup 1/2: pip install …", printed by our own hooks (mmdebstrap.ts customHooks).
    if ((m = /^kiln: (.*)$/.exec(line))) {
      this.inSetup = true;
      return this.emit('setup', m[1]!);
    }
    if (this.inSetup && !/^[IEW]: /.test(line)) return this.emit('setup', line.slice(0, 500));
    this.inSetup = false;
    if (line.startsWith('I: running apt-get update')) return this.emit('resolve', 'updating package lists');
    if (line.startsWith('I: downloading packages')) {
      this.resetCounts();
      return this.emit('download', 'resolving and downloading essential packages');
    }
    if ((m = /^(\d+) upgraded, (\d+) newly installed/.exec(line))) {
      this.resetCounts();
      this.total = Number(m[1]) + Number(m[2]);
      return this.emit(this.phase, `${this.total} packages to install`);
    }
    // "Get:12 http://deb.debian.org/debian bookworm/main amd64 bash amd64 5.2.15-2+b13 [1491 kB]"
    if ((m = /^Get:\d+ \S+ \S+ \S+ (\S+) \S+ (\S+) \[([^\]]+)\]/.exec(line))) {
      this.downloaded++;
      return this.emit('download', `downloading ${m[1]} ${m[2]} (${m[3]})`, pct(this.downloaded, this.total));
    }
    if ((m = /^Get:\d+ (\S+ \S+)/.exec(line))) return this.emit('resolve', `fetching index ${m[1]}`);
    if (line.startsWith('I: extracting archives')) {
      this.unpacked = 0;
      return this.emit('unpack', 'extracting essential packages');
    }
    if (line.startsWith('I: installing essential packages')) {
      this.unpacked = 0;
      this.configured = 0;
      return this.emit('unpack', 'installing essential packages');
    }
    if (line.startsWith('I: installing remaining packages')) {
      this.resetCounts();
      return this.emit('download', "installing the pack's packages");
    }
    if ((m = /^Unpacking (\S+) \(([^)]+)\)/.exec(line))) {
      this.unpacked++;
      return this.emit('unpack', `unpacking ${m[1]} ${m[2]}`, pct(this.unpacked, this.total));
    }
    if ((m = /^Setting up (\S+) \(([^)]+)\)/.exec(line))) {
      this.configured++;
      return this.emit('configure', `setting up ${m[1]} ${m[2]}`, pct(this.configured, this.total));
    }
    if (line.startsWith('I: running --customize-hook') || line.startsWith('I: running special hook')) {
      return this.emit('configure', 'saving downloaded packages to the cache');
    }
    if (line.startsWith('I: cleaning')) return this.emit('configure', 'cleaning package lists and caches');
    if ((m = /^I: success in ([\d.]+) seconds/.exec(line))) {
      return this.emit('configure', `root filesystem ready in ${Number(m[1]).toFixed(1)}s`, 100);
    }
    if (/^(E|W): /.test(line)) return this.emit(this.phase, line);
    return undefined;
  }

  private resetCounts(): void {
    this.total = 0;
    this.downloaded = 0;
    this.unpacked = 0;
    this.configured = 0;
  }
}

/** mksquashfs -progress prints "[====\   ] 1234/5678  21%" separated by '\r'. */
export function parseSquashProgress(pack: string, line: string): BuildProgressEvent | undefined {
  const m = /\]\s+(\d+)\/(\d+)\s+(\d+)%/.exec(line);
  if (!m) return undefined;
  return { pack, phase: 'squash', message: `compressing ${m[1]}/${m[2]} blocks`, percent: Number(m[3]) };
}
