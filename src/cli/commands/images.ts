/**
 * `kiln images build|ls|prune`: builds pack images and shows what is on disk. Progress goes to
 * stderr (one line per phase change or 10% step, so logs stay readable); tables go to stdout.
 * Ctrl-C aborts the running build, which removes its temp dir before the command returns.
 */
import { join } from 'node:path';
import { type BuildProgressEvent, type BuildResult, buildPack, DEFAULT_PACKS_DIR, listImages, loadPacks, type PackSources, pruneImages } from '../../images/index.js';
import { HelpRequested } from '../command.js';
import { mb, table } from '../table.js';

const USAGE = `usage:
  kiln images build [pack...] [--force] [--data-dir DIR]   build images (all packs when none named)
  kiln images ls [--data-dir DIR]                          list built images
  kiln images prune [--data-dir DIR]                       remove images no pack definition uses
data dir: --data-dir, else $KILN_DATA_DIR, else /var/lib/kiln
packs: $KILN_PACKS_DIR (default: the repo's images/packs) and the custom packs in
       $KILN_CUSTOM_PACKS_DIR (default: <data dir>/packs); prune keeps the images of both`;

interface ParsedArgs {
  sub: string | undefined;
  packs: string[];
  force: boolean;
  dataDir: string;
}

function parseArgs(argv: string[]): ParsedArgs | string {
  const out: ParsedArgs = { sub: undefined, packs: [], force: false, dataDir: process.env.KILN_DATA_DIR || '/var/lib/kiln' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--force') out.force = true;
    else if (a === '--data-dir') {
      const v = argv[++i];
      if (!v) return '--data-dir needs a directory';
      out.dataDir = v;
    } else if (a.startsWith('--data-dir=')) out.dataDir = a.slice('--data-dir='.length);
    else if (a === '-h' || a === '--help') return '';
    else if (a.startsWith('-')) return `unknown option ${a}`;
    else if (out.sub === undefined) out.sub = a;
    else out.packs.push(a);
  }
  return out;
}

/** The same folders the service reads, so prune never removes a custom pack's image. */
function sources(args: ParsedArgs): PackSources {
  return { builtinDir: process.env.KILN_PACKS_DIR || DEFAULT_PACKS_DIR, customDir: process.env.KILN_CUSTOM_PACKS_DIR || join(args.dataDir, 'packs') };
}

/** Prints a line when the phase changes or the percentage crosses a 10% step. */
function progressPrinter(): (e: BuildProgressEvent) => void {
  let lastKey = '';
  return (e) => {
    const step = e.percent === undefined ? '' : String(Math.floor(e.percent / 10));
    const key = `${e.pack}/${e.phase}/${step}`;
    if (key === lastKey && !/^(E|W): /.test(e.message)) return;
    lastKey = key;
    const percent = e.percent === undefined ? '' : ` ${String(e.percent).padStart(3)}%`;
    process.stderr.write(`[${e.pack}] ${e.phase.padEnd(9)}${percent}  ${e.message}\n`);
  };
}

async function build(args: ParsedArgs): Promise<number> {
  const skipInvalid = (name: string, e: unknown) => process.stderr.write(`[${name}] skipped: ${e instanceof Error ? e.message : String(e)}\n`);
  const packs = args.packs.length > 0 ? args.packs : (await loadPacks(sources(args), skipInvalid)).map((p) => p.name);
  const controller = new AbortController();
  const onSigint = () => {
    process.stderr.write('\ninterrupted: stopping the build and removing its temp dir...\n');
    controller.abort(new Error('interrupted'));
  };
  process.on('SIGINT', onSigint);
  const results: BuildResult[] = [];
  const failed: string[] = [];
  try {
    for (const name of packs) {
      if (controller.signal.aborted) break;
      try {
        results.push(await buildPack(name, { dataDir: args.dataDir, packsDir: sources(args), force: args.force, onProgress: progressPrinter(), signal: controller.signal }));
      } catch (e) {
        failed.push(name);
        process.stderr.write(`[${name}] failed: ${e instanceof Error ? e.message : String(e)}\n`);
      }
    }
  } finally {
    process.off('SIGINT', onSigint);
  }
  const rows = [['PACK', 'HASH', 'SIZE', 'TIME', 'STATUS', 'IMAGE']];
  for (const r of results) {
    rows.push([r.name, r.hash, mb(r.sizeBytes), `${(r.durationMs / 1000).toFixed(1)}s`, r.built ? 'built' : 'cached', r.imagePath]);
  }
  for (const name of failed) rows.push([name, '-', '-', '-', 'FAILED', '-']);
  process.stdout.write(`${table(rows)}\n`);
  return failed.length > 0 || controller.signal.aborted ? 1 : 0;
}

async function ls(args: ParsedArgs): Promise<number> {
  const images = await listImages(args.dataDir, sources(args));
  if (images.length === 0) {
    process.stderr.write(`no images in ${args.dataDir}/images; run \`kiln images build\`\n`);
    return 0;
  }
  const rows = [['PACK', 'HASH', 'SIZE', 'BUILT', 'CURRENT', 'IMAGE']];
  for (const i of images) rows.push([i.name, i.hash, mb(i.sizeBytes), i.builtAt, i.current ? 'yes' : 'no (prune removes it)', i.imagePath]);
  process.stdout.write(`${table(rows)}\n`);
  return 0;
}

async function prune(args: ParsedArgs): Promise<number> {
  const result = await pruneImages(args.dataDir, sources(args));
  for (const path of result.removed) process.stderr.write(`removed ${path}\n`);
  process.stdout.write(`removed ${result.removed.length} item(s), freed ${mb(result.freedBytes)}\n`);
  return 0;
}

export default {
  name: 'images',
  summary: 'build, list and prune language-pack root filesystem images',
  usage: USAGE,
  async run(argv: string[]): Promise<number> {
    const args = parseArgs(argv);
    if (args === '') throw new HelpRequested();
    if (typeof args === 'string') {
      process.stderr.write(`${args ? `${args}\n` : ''}${USAGE}\n`);
      return args ? 2 : 0;
    }
    try {
      switch (args.sub) {
        case 'build':
          return await build(args);
        case 'ls':
          return await ls(args);
        case 'prune':
          return await prune(args);
        default:
          process.stderr.write(`${args.sub ? `unknown subcommand ${args.sub}\n` : ''}${USAGE}\n`);
          return 2;
      }
    } catch (e) {
      process.stderr.write(`kiln images ${args.sub}: ${e instanceof Error ? e.message : String(e)}\n`);
      return 1;
    }
  },
};
