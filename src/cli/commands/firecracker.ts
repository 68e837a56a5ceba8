/**
 * kiln firecracker install [--version X] [--dir D] [--sha256 H] [--url U]
 * kiln firecracker check
 */

import { loadConfig } from '../../core/config.js';
import { isKilnError } from '../../core/errors.js';
import { createBackends, firecrackerTools } from '../../server/backends.js';
import { type Command, HelpRequested, parseFlags, UsageError } from '../command.js';

// Static text (main prints it for --help without loading the backend); the pinned version itself
// is named by `kiln firecracker install` when it runs.
const USAGE = `usage:
  kiln firecracker install [--version V] [--dir /usr/local/bin] [--sha256 HEX] [--url URL]
      downloads the release tarball (by default the release kiln pins), verifies its sha256 (pinned
      for that release; required with --sha256 for other versions), installs firecracker and jailer
      atomically
  kiln firecracker check [--json]
      can this host run Firecracker microVMs, and if not, why (the backend's own probe)`;

const command: Command = {
  name: 'firecracker',
  summary: 'install a pinned Firecracker release, check the host',
  usage: USAGE,
  async run(argv) {
    const [sub, ...rest] = argv;
    try {
      if (sub === 'install') return await install(rest);
      if (sub === 'check') return await check(rest);
      console.error(USAGE);
      return sub === undefined || sub === 'help' || sub === '--help' ? 0 : 2;
    } catch (e) {
      if (e instanceof HelpRequested) throw e; // main prints the usage
      if (e instanceof UsageError) {
        console.error(`kiln firecracker: ${e.message}\n${USAGE}`);
        return 2;
      }
      console.error(`kiln firecracker ${sub}: ${isKilnError(e) ? e.message : (e as Error).message}`);
      return 1;
    }
  },
};
export default command;

async function install(argv: string[]): Promise<number> {
  const { flags, positional } = parseFlags(argv, { string: ['version', 'dir', 'sha256', 'url'] });
  if (positional.length) throw new UsageError(`unexpected argument ${positional[0]}`);
  const { installFirecracker } = await firecrackerTools();
  const r = await installFirecracker({
    version: flags.version as string | undefined,
    dir: flags.dir as string | undefined,
    sha256: flags.sha256 as string | undefined,
    url: flags.url as string | undefined,
    onProgress: (m: string) => console.error(m),
  });
  console.log(`installed Firecracker ${r.version}: ${r.firecrackerPath}${r.jailerPath ? `, ${r.jailerPath}` : ''} (sha256 ${r.sha256})`);
  return 0;
}

async function check(argv: string[]): Promise<number> {
  const { flags } = parseFlags(argv, { boolean: ['json'] });
  // The backend's own probe, configured as `kiln serve` would configure it (KILN_FIRECRACKER, …).
  const backend = (await createBackends(loadConfig(), undefined, ['firecracker'])).get('firecracker')!;
  const { checks } = await backend.probe({ thorough: true });
  if (flags.json) console.log(JSON.stringify({ checks }, null, 2));
  else for (const c of checks) console.log(`${c.ok ? ' ok ' : 'FAIL'}  ${c.name.padEnd(34)} ${c.detail}`);
  return checks.every((c) => c.ok) ? 0 : 1;
}
