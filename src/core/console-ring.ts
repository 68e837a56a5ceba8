/**
 * A microVM's serial console (QEMU's and Firecracker's stdout and stderr): the last N lines, so a
 * boot failure (kernel panic, init error) can be reported in the API error instead of being lost.
 * The guest is untrusted: lines are capped and stripped of control characters before they reach
 * logs or API errors.
 */
export const CONSOLE_KEEP_LINES = 200;

export class ConsoleRing {
  private readonly lines: string[] = [];
  private partial = '';

  constructor(
    private readonly maxLines = CONSOLE_KEEP_LINES,
    private readonly maxLineChars = 1000,
  ) {}

  push(chunk: Buffer | string): void {
    const text = this.partial + chunk.toString();
    const parts = text.split(/\r?\n/);
    this.partial = parts.pop() ?? '';
    if (this.partial.length > this.maxLineChars) {
      parts.push(this.partial);
      this.partial = '';
    }
    for (const line of parts) {
      this.lines.push(clean(line).slice(0, this.maxLineChars));
      if (this.lines.length > this.maxLines) this.lines.shift();
    }
  }

  /** The last `n` lines, including an unterminated last line. */
  tail(n = this.maxLines): string[] {
    const all = this.partial ? [...this.lines, clean(this.partial)] : [...this.lines];
    return all.slice(-n);
  }

  text(n?: number): string {
    return this.tail(n).join('\n');
  }

  /**
   * The lines that explain a failure: from where it starts (init's own error, the kernel's panic
   * or oops line) to the end, at most `max`; else the last `fallback` lines. A panic's call trace
   * has a varying number of lines, so a plain tail can lose the line that says why.
   */
  failure(max = 80, fallback = 40): string[] {
    const all = this.tail();
    const start = all.findIndex((l) => FAILURE_START.test(l));
    return start < 0 ? all.slice(-fallback) : all.slice(start, start + max);
  }
}

const FAILURE_START = /kiln-init:|Kernel panic - not syncing|BUG: |Oops: |general protection fault/;

/** Strips control characters an untrusted guest could use to garble logs and API errors. */
function clean(line: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: removing control characters is the point
  return line.replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '');
}
