/**
 * kiln packs ls|show|create|follow|rm: packs as the service sees them, and custom packs built through
 * it. Managing packs needs the admin token (KILN_ADMIN_TOKEN, sent instead of KILN_TOKEN) over TCP.
 * Build progress goes to stderr, one line per phase change or 10% step; results to stdout.
 */
import { readFile } from 'node:fs/promises';
import { type CustomPackDefinition, KilnClient, type PackBuildEvent, type PackInfo } from '../../../sdk/src/index.js';
import { cliClient, SERVICE_ENV_HELP } from '../client.js';
import { type Command, HelpRequested, parseFlags, UsageError } from '../command.js';
import { mb, table } from '../table.js';

const SYNOPSIS = `usage: kiln packs ls                      list packs: language version, size, tools
       kiln packs show <name>             one pack as JSON
       kiln packs create <file.json|->    build a custom pack and store it (admin)
       kiln packs follow <name>           follow the latest build of a pack
       kiln packs rm <name>               remove a custom pack and its images (admin)`;
const USAGE = `${SYNOPSIS}
  A custom pack is a base pack plus Debian packages, files and setup commands; the format is in
  images/packs/README.md. create streams the build's progress to stderr.

${SERVICE_ENV_HELP}
$KILN_ADMIN_TOKEN, when set, is sent instead: creating and removing packs needs it over TCP.`;

function adminClient(): KilnClient {
  const base = cliClient();
  return new KilnClient({ baseUrl: base.baseUrl, token: process.env.KILN_ADMIN_TOKEN || process.env.KILN_TOKEN });
}

function list(packs: PackInfo[]): string {
  const rows = [['PACK', 'SOURCE', 'VERSION', 'LANGUAGE', 'SIZE', 'READY', 'TOOLS']];
  for (const p of packs) {
    rows.push([
      p.name,
      p.source === 'custom' ? `custom (${p.base})` : (p.source ?? '-'),
      p.version === undefined ? '-' : String(p.version),
      p.languageVersion ?? '-',
      mb(p.imageSizeBytes),
      p.imageReady ? 'yes' : 'no',
      (p.tools ?? []).join(' '),
    ]);
  }
  return table(rows);
}

/** Prints progress to stderr; returns the exit code once the stream ends. */
async function printBuild(events: AsyncGenerator<PackBuildEvent>): Promise<number> {
  let lastKey = '';
  for await (const e of events) {
    if (e.type === 'accepted') process.stderr.write(`[${e.build.pack}] ${e.build.id}: version ${e.build.version}, ${e.build.state}\n`);
    else if (e.type === 'progress') {
      const key = `${e.phase}/${e.percent === undefined ? '' : Math.floor(e.percent / 10)}`;
      if (key === lastKey && e.phase !== 'setup') continue;
      lastKey = key;
      process.stderr.write(`[${e.pack}] ${e.phase.padEnd(9)}${e.percent === undefined ? '' : ` ${String(e.percent).padStart(3)}%`}  ${e.message}\n`);
    } else if (e.type === 'error') {
      process.stderr.write(`${e.code}: ${e.message}\n`);
      return 1;
    } else {
      process.stdout.write(`${list([e.pack])}\n`);
      return 0;
    }
  }
  process.stderr.write('the build stream ended without a result; `kiln packs follow <name>` shows how it went\n');
  return 1;
}

async function readDefinition(file: string): Promise<CustomPackDefinition> {
  let text: string;
  if (file === '-') {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    text = Buffer.concat(chunks).toString('utf8');
  } else text = await readFile(file, 'utf8');
  try {
    return JSON.parse(text) as CustomPackDefinition;
  } catch (e) {
    throw new UsageError(`${file} is not valid JSON: ${(e as Error).message}`);
  }
}

const command: Command = {
  name: 'packs',
  summary: 'list packs; create, follow and remove custom packs',
  usage: USAGE,
  async run(argv) {
    const [sub, ...rest] = argv;
    if (sub === undefined) throw new UsageError(SYNOPSIS);
    if (sub === '-h' || sub === '--help' || sub === 'help') throw new HelpRequested();
    // Throws HelpRequested for -h/--help anywhere, and UsageError for an unknown option.
    const [arg, ...extra] = parseFlags(rest, {}).positional;
    if (extra.length > 0) throw new UsageError(`unexpected argument ${extra[0]}\n${SYNOPSIS}`);
    switch (sub) {
      case 'ls':
        console.log(list(await cliClient().packs()));
        return 0;
      case 'show':
        if (!arg) throw new UsageError(SYNOPSIS);
        console.log(JSON.stringify(await cliClient().pack(arg), null, 2));
        return 0;
      case 'create':
        if (!arg) throw new UsageError(SYNOPSIS);
        return printBuild(adminClient().createPackStream(await readDefinition(arg)));
      case 'follow':
        if (!arg) throw new UsageError(SYNOPSIS);
        return printBuild(adminClient().followPackBuild(arg));
      case 'rm': {
        if (!arg) throw new UsageError(SYNOPSIS);
        const r = await adminClient().deletePack(arg);
        console.log(`removed pack ${r.pack}: ${r.removed.length} file(s), ${mb(r.freedBytes)} freed`);
        return 0;
      }
      default:
        throw new UsageError(`${sub ? `unknown subcommand ${sub}\n` : ''}${SYNOPSIS}`);
    }
  },
};
export default command;
