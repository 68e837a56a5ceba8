/** kiln run <pack> (-c CODE | FILE) [--stdin] [--timeout-ms N] [--backend B] [-- args…] */
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { BACKEND_HELP, backendFlag, cliClient, SERVICE_ENV_HELP } from '../client.js';
import { type Command, parseFlags, UsageError } from '../command.js';

const SYNOPSIS = 'usage: kiln run <pack> (-c CODE | FILE) [--stdin] [--timeout-ms N] [--memory-mib N] [--backend B] [--json] [-- args…]';
const USAGE = `${SYNOPSIS}
  runs a snippet (-c) or a file in a fresh sandbox of <pack> (python, node, go, shell…; GET
  /v1/packs lists them), streams its output and exits with its exit code.
    -c CODE          the program text
    FILE             a local file, uploaded and run as the pack runs a project's entrypoint
    --stdin          pass this command's stdin to the program
    --timeout-ms N   kill the program after N ms
    --memory-mib N   the sandbox's memory
    --backend B      ${BACKEND_HELP}
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
      // base64 both ways: bytes reach the program, and its output reaches ours, unchanged.
      pack,
      stdin: stdin?.toString('base64'),
      stdinEncoding: 'base64' as const,
      args,
      encoding: 'base64' as const,
      backend: backendFlag(flags.backend),
      timeoutMs: flags['timeout-ms'] ? Number(flags['timeout-ms']) : undefined,
      memoryMib: flags['memory-mib'] ? Number(flags['memory-mib']) : undefined,
    };
    const body =
      file === undefined
        ? { ...common, code: String(flags.c) }
        : { ...common, files: [{ path: basename(file), content: (await readFile(file)).toString('base64'), encoding: 'base64' as const }], entrypoint: basename(file) };
    let exit = 1;
    for await (const ev of cliClient().runStream(body)) {
      if (ev.type === 'stdout') process.stdout.write(Buffer.from(ev.data, 'base64'));
      else if (ev.type === 'stderr') process.stderr.write(Buffer.from(ev.data, 'base64'));
      else if (ev.type === 'truncated') process.stderr.write(`\nkiln run: ${ev.droppedBytes} bytes of ${ev.stream} dropped here (over the output cap); its last bytes follow\n`);
      else if (ev.type === 'error') {
        console.error(`kiln run: ${ev.code}: ${ev.message}`);
        return 1;
      } else if (ev.type === 'result') {
        if (flags.json) console.error(JSON.stringify(ev));
        if (ev.timedOut) console.error(`kiln run: timed out after ${ev.durationMs} ms`);
        if (ev.oomKilled) console.error('kiln run: killed: out of memory');
        if (ev.outputTruncated) console.error('kiln run: output truncated');
        if (ev.hint) console.error(`kiln run: ${ev.hint}`);
        exit = ev.exitCode ?? 128 + 9;
      }
    }
    return exit;
  },
};

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
export default command;
