/** kiln run <pack> (-c CODE | FILE) [--stdin] [--timeout-ms N] [--backend B] [-- args…] */
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { cliClient, SERVICE_ENV_HELP } from '../client.js';
import { parseFlags, UsageError, type Command } from '../command.js';

const SYNOPSIS = 'usage: kiln run <pack> (-c CODE | FILE) [--stdin] [--timeout-ms N] [--memory-mib N] [--backend B] [--json] [-- args…]';
const USAGE = `${SYNOPSIS}
  runs a snippet (-c) or a file in a fresh sandbox of <pack> (python, node, go, shell…; GET
  /v1/packs lists them), streams its output and exits with its exit code.
    -c CODE          the program text
    FILE             a local file, uploaded and run as the pack runs a project's entrypoint
    --stdin          pass this command's stdin to the program
    --timeout-ms N   kill the program after N ms
    --memory-mib N   the sandbox's memory
    --backend B      namespace, qemu or firecracker (default: the service's)
    --json           print the result (exit code, usage, timings) as JSON on stderr
    -- args…         arguments for the program

${SERVICE_ENV_HELP}`;

const command: Command = {
  name: 'run',
  summary: 'run a snippet or a file once',
  usage: USAGE,
  async run(argv) {
    const { flags, positional } = parseFlags(argv, { string: ['c', 'backend', 'timeout-ms', 'memory-mib'], boolean: ['stdin', 'json'], alias: { '-c': 'c' } });
    const [pack, file, ...args] = positional;
    if (!pack || (flags.c === undefined) === (file === undefined)) throw new UsageError(SYNOPSIS);
    const stdin = flags.stdin ? await readStdin() : undefined;
    const common = {
      pack, stdin, args,
      backend: flags.backend as 'namespace' | 'qemu' | 'firecracker' | undefined,
      timeoutMs: flags['timeout-ms'] ? Number(flags['timeout-ms']) : undefined,
      memoryMib: flags['memory-mib'] ? Number(flags['memory-mib']) : undefined,
    };
    const body = file === undefined
      ? { ...common, code: String(flags.c) }
      : { ...common, files: [{ path: basename(file), content: await readFile(file, 'utf8') }], entrypoint: basename(file) };
    let exit = 1;
    for await (const ev of cliClient().runStream(body)) {
      if (ev.type === 'stdout') process.stdout.write(ev.data);
      else if (ev.type === 'stderr') process.stderr.write(ev.data);
      else if (ev.type === 'error') { console.error(`kiln run: ${ev.code}: ${ev.message}`); return 1; }
      else if (ev.type === 'result') {
        if (flags.json) console.error(JSON.stringify(ev));
        if (ev.timedOut) console.error(`kiln run: timed out after ${ev.durationMs} ms`);
        if (ev.oomKilled) console.error('kiln run: killed: out of memory');
        if (ev.outputTruncated) console.error('kiln run: output truncated');
        exit = ev.exitCode ?? 128 + 9;
      }
    }
    return exit;
  },
};

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
export default command;
