import { BACKENDS } from '../../server/backends.js';
import { type Command, parseFlags, UsageError } from '../command.js';

const USAGE = `usage: kiln serve
  runs the kiln service in the foreground (as root) until SIGTERM or SIGINT. Configured by the
  environment; the main variables (README.md lists them all):
    KILN_HOST, KILN_PORT   where to listen (default 127.0.0.1:8400)
    KILN_TOKEN             bearer token clients must send (required off loopback)
    KILN_SOCKET            also listen on this Unix socket, for trusted local clients
    KILN_BACKEND           default backend (default ${BACKENDS[0].name}), one of:
${BACKENDS.map((b) => `                             ${b.name.padEnd(12)} ${b.summary}`).join('\n')}
    KILN_POOL              warm pools, [backend/]pack=count,… (empty: none)
    KILN_DATA_DIR, KILN_RUN_DIR   images / per-sandbox state (default /var/lib/kiln, /run/kiln)`;

const command: Command = {
  name: 'serve',
  summary: 'run the kiln service',
  usage: USAGE,
  async run(argv) {
    const { positional } = parseFlags(argv, {});
    if (positional.length) throw new UsageError(`unexpected argument ${positional[0]}: kiln serve is configured by the environment`);
    const { serveForever } = await import('../../server/main.js');
    return serveForever();
  },
};
export default command;
