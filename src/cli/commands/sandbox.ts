/** kiln sandbox create|exec|ls|rm|pause|resume|snapshot|snapshots|snapshot-rm|port-forward|port-link */
import { BACKEND_HELP, backendFlag, cliClient, SERVICE_ENV_HELP } from '../client.js';
import { type Command, parseFlags, UsageError } from '../command.js';
import { networkOption, networkSummary, showNetwork, takeRepeated } from '../network.js';

const SYNOPSIS =
  'usage: kiln sandbox create <pack> [--backend B] [--cpus N] [--memory-mib N] [--disk-mib N] [--ttl-sec N] [--from-snapshot NAME]\n           [--network none|allowlist|open] [--allow ENTRY]… [--learn] [--bandwidth-mbit N]\n       kiln sandbox exec <id> [--timeout-ms N] [--cwd DIR] -- <cmd…>\n       kiln sandbox ls\n       kiln sandbox network <id> [--follow] [--json]\n       kiln sandbox rm <id…>\n       kiln sandbox pause|resume <id>\n       kiln sandbox snapshot <id> <name>\n       kiln sandbox snapshots\n       kiln sandbox snapshot-rm <name…>\n       kiln sandbox port-forward <id> [[HOST:]LOCAL:]REMOTE\n       kiln sandbox port-link <id> <port> [--ttl-sec N]';
const USAGE = `${SYNOPSIS}
  create prints the new sandbox's id; exec runs a command in it (streamed, exit code passed
  through); ls lists the live sandboxes; rm deletes them. pause saves a sandbox's state on disk
  and frees its compute (microVMs keep memory and running processes; the namespace backend keeps
  the files under /workspace and /tmp); resume brings it back under the same id. snapshot saves a
  running sandbox's state under a name, for create --from-snapshot. network prints a sandbox's
  network audit trail (DNS queries, connections allowed or refused), its byte counters and the
  proposed allowlist; --follow keeps printing new events, --json prints the answer as JSON.
  port-forward listens on LOCAL (default: REMOTE; 0: any free port) on HOST (default 127.0.0.1)
  and carries each connection to port REMOTE on the sandbox's loopback until Ctrl-C (docs/ports.md).
  port-link prints a link a browser can open without the token: that port of that sandbox only,
  for --ttl-sec seconds (default 3600, at most 86400; a service restart ends it too).
    --backend B          ${BACKEND_HELP}
    --network P          none (loopback only), allowlist (only what --allow lists), open
    --allow ENTRY        repeatable: example.org, *.example.org, example.org:5432, 198.51.100.0/24, 198.51.100.7:443
    --learn              allowlist only: let everything through, record it, propose the allowlist
    --bandwidth-mbit N   rate limit per direction (0: the service's default)

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
        const allow = takeRepeated(rest, 'allow');
        const { flags, positional } = parseFlags(allow.rest, { string: ['backend', 'cpus', 'memory-mib', 'disk-mib', 'ttl-sec', 'from-snapshot', 'network', 'bandwidth-mbit'], boolean: ['learn'] });
        if (!positional[0]) throw new UsageError(SYNOPSIS);
        const network = networkOption(flags, allow.values);
        const num = (k: string) => (flags[k] === undefined ? undefined : Number(flags[k]));
        const sb = await kiln.sandboxes.create({
          pack: positional[0],
          backend: backendFlag(flags.backend),
          cpus: num('cpus'),
          memoryMib: num('memory-mib'),
          diskMib: num('disk-mib'),
          ttlSec: num('ttl-sec'),
          fromSnapshot: flags['from-snapshot'] as string | undefined,
          network,
        });
        console.log(sb.id);
        console.error(`ready in ${sb.readyMs} ms on ${sb.backend}${sb.fromPool ? ' (warm pool)' : ''}${sb.network ? `, network ${networkSummary(sb)}` : ''}`);
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
        console.log(['ID'.padEnd(22), 'PACK'.padEnd(8), 'BACKEND'.padEnd(12), 'STATE'.padEnd(8), 'READY MS'.padEnd(9), 'EXPIRES'.padEnd(24), 'NETWORK'].join(' '));
        for (const s of list)
          console.log([s.id.padEnd(22), s.pack.padEnd(8), s.backend.padEnd(12), s.state.padEnd(8), String(s.readyMs).padEnd(9), s.expiresAt.padEnd(24), networkSummary(s)].join(' '));
        return 0;
      }
      case 'network': {
        const { flags, positional } = parseFlags(rest, { boolean: ['follow', 'json'] });
        if (!positional[0]) throw new UsageError(SYNOPSIS);
        return showNetwork(kiln, positional[0], { follow: flags.follow === true, json: flags.json === true });
      }
      case 'rm': {
        const ids = parseFlags(rest, {}).positional;
        if (ids.length === 0) throw new UsageError(SYNOPSIS);
        for (const id of ids) await kiln.sandboxes.delete(id);
        return 0;
      }
      case 'pause': {
        const [id] = parseFlags(rest, {}).positional;
        if (!id) throw new UsageError(SYNOPSIS);
        const p = await kiln.sandboxes.pause(id);
        console.error(`paused ${id} in ${p.pauseMs} ms: ${mib(p.sizeBytes)} on disk, ${p.processesKept ? 'memory and processes kept' : 'files kept (processes are not)'}`);
        return 0;
      }
      case 'resume': {
        const [id] = parseFlags(rest, {}).positional;
        if (!id) throw new UsageError(SYNOPSIS);
        const r = await kiln.sandboxes.resume(id);
        console.error(`resumed ${id}${r.resumeMs === undefined ? '' : ` in ${r.resumeMs} ms`}`);
        return 0;
      }
      case 'snapshot': {
        const [id, name] = parseFlags(rest, {}).positional;
        if (!id || !name) throw new UsageError(SYNOPSIS);
        const snap = await kiln.sandboxes.snapshot(id, name);
        console.log(snap.name);
        console.error(`${snap.kind} snapshot of ${id}: ${mib(snap.sizeBytes)}`);
        return 0;
      }
      case 'snapshots': {
        parseFlags(rest, {});
        console.log(['NAME'.padEnd(24), 'KIND'.padEnd(8), 'PACK'.padEnd(8), 'BACKEND'.padEnd(12), 'SIZE'.padEnd(10), 'CREATED'].join(' '));
        for (const s of await kiln.sandboxes.listSnapshots())
          console.log([s.name.padEnd(24), s.kind.padEnd(8), s.pack.padEnd(8), s.backend.padEnd(12), mib(s.sizeBytes).padEnd(10), s.createdAt].join(' '));
        return 0;
      }
      case 'snapshot-rm': {
        const names = parseFlags(rest, {}).positional;
        if (names.length === 0) throw new UsageError(SYNOPSIS);
        for (const n of names) await kiln.sandboxes.deleteSnapshot(n);
        return 0;
      }
      case 'port-link': {
        const { flags, positional } = parseFlags(rest, { string: ['ttl-sec'] });
        const [id, portArg, extra] = positional;
        const port = Number(portArg);
        if (!id || !portArg || extra !== undefined) throw new UsageError(SYNOPSIS);
        if (!Number.isInteger(port) || port < 1 || port > 65535) throw new UsageError(`port ${portArg}: give an integer from 1 to 65535`);
        const ttlSec = flags['ttl-sec'] === undefined ? undefined : Number(flags['ttl-sec']);
        const link = await kiln.portLink(id, port, { ttlSec });
        console.log(link.url);
        console.error(`opens port ${port} of ${id} in a browser (no token needed); expires at ${link.expiresAt}`);
        return 0;
      }
      case 'port-forward': {
        const [id, spec, extra] = parseFlags(rest, {}).positional;
        if (!id || !spec || extra !== undefined) throw new UsageError(SYNOPSIS);
        const { parseForward, portForward } = await import('../port-forward.js');
        const forward = parseForward(spec);
        const stop = new AbortController();
        const onSignal = (): void => stop.abort();
        process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
        try {
          return await portForward(kiln, process.env.KILN_TOKEN, id, forward, stop.signal);
        } finally {
          process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
        }
      }
      default:
        throw new UsageError(SYNOPSIS);
    }
  },
};
export default command;

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}
