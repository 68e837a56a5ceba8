/** Keeps the last N lines of a microVM's serial console (Firecracker's stdout) for error reports. */
export const CONSOLE_KEEP_LINES = 200;
const MAX_LINE_CHARS = 1_000;

export class ConsoleRing {
  private readonly lines: string[] = [];
  private partial = '';

  constructor(private readonly keepLines = CONSOLE_KEEP_LINES) {}

  push(chunk: Buffer | string): void {
    const text = this.partial + (typeof chunk === 'string' ? chunk : chunk.toString('utf8'));
    const parts = text.split(/\r?\n/);
    this.partial = parts.pop()!.slice(-MAX_LINE_CHARS);
    for (const line of parts) this.add(line);
  }

  private add(line: string): void {
    this.lines.push(line.length > MAX_LINE_CHARS ? `${line.slice(0, MAX_LINE_CHARS)}…` : line);
    if (this.lines.length > this.keepLines) this.lines.splice(0, this.lines.length - this.keepLines);
  }

  /** The kept lines plus any unterminated last line. */
  tail(maxLines = this.keepLines): string[] {
    const all = this.partial ? [...this.lines, this.partial] : [...this.lines];
    return all.slice(-maxLines);
  }

  text(maxLines = this.keepLines): string {
    return this.tail(maxLines).join('\n');
  }
}
