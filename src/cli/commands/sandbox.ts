/** kiln sandbox create|exec|ls|rm */
import { BACKEND_HELP, backendFlag, cliClient, SERVICE_ENV_HELP } from '../client.js';
import { type Command, parseFlags, UsageError } from '../command.js';

const SYNOPSIS =
  'usage: kiln sandbox create <pack> [--backend B] [--cpus N] [--memory-mib N] [--disk-mib N] [--ttl-sec N]\n       kiln sandbox exec <id> [--timeout-ms N] [--cwd DIR] -- <cmd…>\n       kiln sandbox ls\n       kiln sandbox rm <id…>';
const USAGE = `${SYNOPSIS}
  create prints the new sandbox's id; exec runs a command in it (streamed, exit code passed
  through); ls lists the live sandboxes; rm deletes them.
    --backend B   ${BACKEND_HELP}

${SERVICE_ENV_HELP}`;

const command: Command = {
  name: 'sandbox',
  summary: 'manage sandboxes',
  usage: USAGE,
  async run(argv) {
    const [sub, ...rest] = argv;
    const kiln = cliClient();
    switch (sub) {
      case 'create': {
        const { flags, positional } = parseFlags(rest, { string: ['backend', 'cpus', 'memory-mib', 'disk-mib', 'ttl-sec'] });
        if (!positional[0]) throw new UsageError(SYNOPSIS);
        const num = (k: string) => (flags[k] === undefined ? undefined : Number(flags[k]));
        const sb = await kiln.sandboxes.create({
          pack: positional[0],
          backend: backendFlag(flags.backend),
          cpus: num('cpus'),
          memoryMib: num('memory-mib'),
          diskMib: num('disk-mib'),
          ttlSec: num('ttl-sec'),
        });
        console.log(sb.id);
        console.error(`ready in ${sb.readyMs} ms on ${sb.backend}${sb.fromPool ? ' (warm pool)' : ''}`);
        return 0;
      }
      case 'exec': {
        const { flags, positional } = parseFlags(rest, { string: ['timeout-ms', 'cwd'] });
        const [id, ...cmd] = positional;
        if (!id || cmd.length === 0) throw new UsageError(SYNOPSIS);
        let exit = 1;
        for await (const ev of kiln.sandboxes.execStream(id, {
          cmd: cmd.length === 1 ? cmd[0]! : cmd,
          cwd: flags.cwd as string | undefined,
          timeoutMs: flags['timeout-ms'] ? Number(flags['timeout-ms']) : undefined,
        })) {
          if (ev.type === 'stdout') process.stdout.write(ev.data);
          else if (ev.type === 'stderr') process.stderr.write(ev.data);
          else if (ev.type === 'error') {
            console.error(`${ev.code}: ${ev.message}`);
            return 1;
          } else if (ev.type === 'result') {
            if (ev.hint) console.error(`kiln sandbox exec: ${ev.hint}`);
            exit = ev.exitCode ?? 137;
          }
        }
        return exit;
      }
      case 'ls': {
        parseFlags(rest, {});
        const list = await kiln.sandboxes.list();
        console.log(['ID'.padEnd(22), 'PACK'.padEnd(8), 'BACKEND'.padEnd(12), 'STATE'.padEnd(8), 'READY MS'.padEnd(9), 'EXPIRES'].join(' '));
        for (const s of list) console.log([s.id.padEnd(22), s.pack.padEnd(8), s.backend.padEnd(12), s.state.padEnd(8), String(s.readyMs).padEnd(9), s.expiresAt].join(' '));
        return 0;
      }
      case 'rm': {
        const ids = parseFlags(rest, {}).positional;
        if (ids.length === 0) throw new UsageError(SYNOPSIS);
        for (const id of ids) await kiln.sandboxes.delete(id);
        return 0;
      }
      default:
        throw new UsageError(SYNOPSIS);
    }
  },
};
export default command;
