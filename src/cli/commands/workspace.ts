/**
 * `kiln workspace create|changes|diff|approve|reject|rm`: a sandbox over a host project folder,
 * copy-on-write at /workspace, and the review of what it changed before anything reaches the
 * folder (docs/workspaces.md).
 */
import { resolve } from 'node:path';
import { type Change, type ChangesResult, KilnError } from '../../../sdk/src/index.js';
import { BACKEND_HELP, backendFlag, cliClient, SERVICE_ENV_HELP } from '../client.js';
import { type Command, parseFlags, UsageError } from '../command.js';

const SYNOPSIS = `usage: kiln workspace create <path> [--pack P] [--backend B] [--git-writable] [--size-mib N] [--idle-sec N] [--cpus N] [--memory-mib N]
       kiln workspace changes <id> [--ignored]
       kiln workspace diff <id> [<path>] [--ignored]
       kiln workspace approve <id> [<path>…] [--force] [--ignored]
       kiln workspace reject <id> [<path>…]
       kiln workspace rm <id> [--discard]`;

const USAGE = `${SYNOPSIS}
  create   a sandbox (pack "base" by default: git, build tools) whose /workspace is the folder,
           copy-on-write: nothing reaches the folder until approved. The folder must be under one
           of the service's KILN_WORKSPACE_ROOTS. Prints the sandbox id; run commands with
           \`kiln sandbox exec <id> -- …\` (they start in /workspace).
  changes  what the sandbox changed: status (A added, M modified, D deleted), type, size, path.
  diff     the changes as a unified diff (git apply accepts it); one path if given.
  approve  applies all changes (or the paths given) to the folder; host files changed since the
           sandbox started are refused and listed unless --force.
  reject   discards all changes (or the paths given).
  rm       deletes the sandbox; refused while changes are pending unless --discard.
  --ignored  include paths the project's .gitignore files ignore (node_modules, build outputs).
  --backend B  ${BACKEND_HELP}

${SERVICE_ENV_HELP}`;

const command: Command = {
  name: 'workspace',
  summary: 'work on a host folder copy-on-write, then review, approve or reject the changes',
  usage: USAGE,
  async run(argv) {
    const [sub, ...rest] = argv;
    const kiln = cliClient();
    switch (sub) {
      case 'create': {
        const { flags, positional } = parseFlags(rest, { string: ['pack', 'backend', 'size-mib', 'idle-sec', 'cpus', 'memory-mib'], boolean: ['git-writable'] });
        if (positional.length !== 1) throw new UsageError(SYNOPSIS);
        const num = (k: string) => {
          if (flags[k] === undefined) return undefined;
          const n = Number(flags[k]);
          if (!Number.isFinite(n) || n <= 0) throw new UsageError(`--${k} must be a positive number (got ${String(flags[k])})`);
          return n;
        };
        const sb = await kiln.json<{ id: string; readyMs: number; backend: string }>('POST', '/v1/sandboxes', {
          pack: (flags.pack as string | undefined) ?? 'base',
          backend: backendFlag(flags.backend),
          cpus: num('cpus'),
          memoryMib: num('memory-mib'),
          idleTimeoutSec: num('idle-sec'),
          workspace: { path: resolve(positional[0]!), gitWritable: flags['git-writable'] === true ? true : undefined, sizeMib: num('size-mib') },
        });
        console.log(sb.id);
        console.error(`ready in ${sb.readyMs} ms on ${sb.backend}; review with: kiln workspace changes ${sb.id}`);
        return 0;
      }
      case 'changes': {
        const { flags, positional } = parseFlags(rest, { boolean: ['ignored'] });
        if (positional.length !== 1) throw new UsageError(SYNOPSIS);
        const r = await kiln.json<ChangesResult>('GET', `/v1/sandboxes/${encodeURIComponent(positional[0]!)}/changes${flags.ignored ? '?ignored=1' : ''}`);
        for (const c of r.changes) console.log(formatChange(c));
        console.error(`${r.changes.length} change${r.changes.length === 1 ? '' : 's'}; ${mib(r.upperBytes)} of ${mib(r.limitBytes)} written`);
        if (r.warning) console.error(`warning: ${r.warning}`);
        return 0;
      }
      case 'diff': {
        const { flags, positional } = parseFlags(rest, { boolean: ['ignored'] });
        if (positional.length < 1 || positional.length > 2) throw new UsageError(SYNOPSIS);
        const q = new URLSearchParams();
        if (positional[1] !== undefined) q.set('path', positional[1]);
        if (flags.ignored) q.set('ignored', '1');
        const res = await kiln.request('GET', `/v1/sandboxes/${encodeURIComponent(positional[0]!)}/diff${q.size ? `?${q}` : ''}`, { accept: 'text/x-diff' });
        process.stdout.write(Buffer.from(await res.arrayBuffer()));
        return 0;
      }
      case 'approve': {
        const { flags, positional } = parseFlags(rest, { boolean: ['force', 'ignored'] });
        const [id, ...paths] = positional;
        if (!id) throw new UsageError(SYNOPSIS);
        try {
          const r = await kiln.json<{ applied: string[] }>('POST', `/v1/sandboxes/${encodeURIComponent(id)}/approve`, {
            ...(paths.length ? { paths } : {}),
            force: flags.force === true,
            ignored: flags.ignored === true,
          });
          for (const p of r.applied) console.log(p);
          console.error(`applied ${r.applied.length} change${r.applied.length === 1 ? '' : 's'} to the host folder`);
          return 0;
        } catch (e) {
          if (e instanceof KilnError && e.code === 'WORKSPACE_CONFLICT') {
            const conflicts = (e.details?.conflicts as string[] | undefined) ?? [];
            console.error(`${e.message}\nchanged on the host since the sandbox started:`);
            for (const p of conflicts) console.error(`  ${p}`);
            console.error('nothing was applied; approve other paths, or repeat with --force to overwrite them');
            return 1;
          }
          throw e;
        }
      }
      case 'reject': {
        const { flags, positional } = parseFlags(rest, { boolean: ['ignored'] });
        const [id, ...paths] = positional;
        if (!id) throw new UsageError(SYNOPSIS);
        const r = await kiln.json<{ rejected: string[] }>('POST', `/v1/sandboxes/${encodeURIComponent(id)}/reject`, {
          ...(paths.length ? { paths } : {}),
          ignored: flags.ignored === true,
        });
        for (const p of r.rejected) console.log(p);
        console.error(`discarded ${r.rejected.length} change${r.rejected.length === 1 ? '' : 's'}`);
        return 0;
      }
      case 'rm': {
        const { flags, positional } = parseFlags(rest, { boolean: ['discard'] });
        if (positional.length !== 1) throw new UsageError(SYNOPSIS);
        await kiln.request('DELETE', `/v1/sandboxes/${encodeURIComponent(positional[0]!)}${flags.discard ? '?discard=true' : ''}`);
        return 0;
      }
      default:
        throw new UsageError(SYNOPSIS);
    }
  },
};
export default command;

const STATUS = { added: 'A', modified: 'M', deleted: 'D' } as const;

export function formatChange(c: Change): string {
  const mode = c.modeOld !== undefined && c.modeNew !== undefined && c.modeOld !== c.modeNew ? ` (mode ${c.modeOld.toString(8)} → ${c.modeNew.toString(8)})` : '';
  const kind = c.type === 'file' ? (c.binary ? 'binary' : 'file') : c.type;
  return `${STATUS[c.status]} ${kind.padEnd(9)} ${String(c.size).padStart(9)}  ${c.path}${c.type === 'directory' ? '/' : ''}${mode}${c.ignored ? '  (ignored)' : ''}`;
}

function mib(n: number): string {
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}
