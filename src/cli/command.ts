/** The shape every CLI command module exports as default. Commands return an exit code. */
export interface Command {
  name: string;
  summary: string;
  /** What `kiln <name> --help` prints: the synopsis, the options and the environment read. */
  usage: string;
  run(argv: string[]): Promise<number>;
}

/** -h or --help among a command's options: main prints the command's usage and exits 0. */
export class HelpRequested extends Error {}

/** Minimal flag parsing shared by commands: --flag value, --flag=value, booleans, positionals. */
export function parseFlags(argv: string[], spec: { string?: string[]; boolean?: string[]; alias?: Record<string, string> }): { flags: Record<string, string | boolean>; positional: string[] } {
  const flags: Record<string, string | boolean> = {};
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i]!;
    if (a === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith('-') || a === '-') {
      positional.push(a);
      continue;
    }
    if (a === '-h' || a === '--help') throw new HelpRequested();
    let value: string | undefined;
    const eq = a.indexOf('=');
    if (eq > 0) {
      value = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    const name = spec.alias?.[a] ?? a.replace(/^--?/, '');
    if (spec.boolean?.includes(name)) {
      flags[name] = value === undefined ? true : value !== 'false';
      continue;
    }
    if (spec.string?.includes(name)) {
      value ??= argv[++i];
      if (value === undefined) throw new UsageError(`${a} needs a value`);
      flags[name] = value;
      continue;
    }
    throw new UsageError(`unknown option ${a}`);
  }
  return { flags, positional };
}

export class UsageError extends Error {}
