/** kiln CLI entry: a lazy command map, so `kiln run` never loads the server or the image builder. */
import { KilnError } from '../../sdk/src/errors.js';
import { SERVICE_ENV_HELP, serviceUrl } from './client.js';
import { type Command, HelpRequested, UsageError } from './command.js';

const COMMANDS: Record<string, () => Promise<{ default: Command }>> = {
  serve: () => import('./commands/serve.js'),
  run: () => import('./commands/run.js'),
  sandbox: () => import('./commands/sandbox.js'),
  images: () => import('./commands/images.js'),
  packs: () => import('./commands/packs.js'),
  doctor: () => import('./commands/doctor.js'),
  firecracker: () => import('./commands/firecracker.js'),
  keys: () => import('./commands/keys.js'),
  workspace: () => import('./commands/workspace.js'),
};

const SUMMARIES: Record<string, string> = {
  serve: 'run the kiln service (env: KILN_HOST, KILN_PORT, KILN_TOKEN, KILN_BACKEND, KILN_POOL=[backend/]pack=n,… — see README)',
  run: 'run a snippet or a file once: kiln run <pack> (-c CODE | FILE) [-- args]',
  sandbox: 'create | exec | ls | rm sandboxes',
  images: 'build | ls | prune language-pack images (on this host, no service needed)',
  packs: 'ls | show | create | follow | rm packs through the service (custom packs: admin)',
  doctor: 'check what this host can run and how to fix what is missing',
  firecracker: 'install a pinned Firecracker release | check whether this host can run it',
  keys: 'create | ls | revoke API keys (admin: KILN_TOKEN)',
  workspace: 'work on a host folder copy-on-write, then review, approve or reject the changes',
};

const HELP_FLAGS = new Set(['-h', '--help', 'help']);

function usage(): string {
  return ['usage: kiln <command> [options]      (kiln <command> --help for its options)', '', ...Object.entries(SUMMARIES).map(([n, s]) => `  ${n.padEnd(12)} ${s}`), '', SERVICE_ENV_HELP].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || HELP_FLAGS.has(name)) {
    // `kiln help run` is `kiln run --help`.
    if (name === 'help' && rest[0] && COMMANDS[rest[0]]) return main([rest[0], '--help']);
    console.log(usage());
    return name ? 0 : 2;
  }
  const load = COMMANDS[name];
  if (!load) {
    console.error(`kiln: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  let command: Command | undefined;
  try {
    command = (await load()).default;
    if (rest[0] !== undefined && HELP_FLAGS.has(rest[0])) throw new HelpRequested();
    return await command.run(rest);
  } catch (e) {
    if (e instanceof HelpRequested && command) {
      console.log(command.usage);
      return 0;
    }
    if (e instanceof UsageError) console.error(`kiln ${name}: ${e.message}\n(kiln ${name} --help for the options)`);
    else if (e instanceof KilnError) console.error(`kiln ${name}: ${e.code}: ${e.message}`);
    else if (e instanceof TypeError && /fetch failed/.test(e.message))
      console.error(`kiln ${name}: cannot reach the kiln service at ${serviceUrl()} (${causeOf(e)}); start it with \`kiln serve\`, or point KILN_URL at it`);
    else console.error(`kiln ${name}: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
}

/** fetch's "fetch failed" hides the reason (ECONNREFUSED, ENOTFOUND…) in its cause. */
function causeOf(e: Error): string {
  const c = e.cause as { code?: string; message?: string } | undefined;
  return c?.code ?? c?.message ?? e.message;
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
