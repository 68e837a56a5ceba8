/**
 * A throwaway PostgreSQL server for the store tests: the Debian package's binaries (postgresql,
 * installed by scripts/install.sh), a cluster made by initdb in a temp dir, listening only on a
 * Unix socket in that dir, run as `nobody` (postgres refuses to run as root), removed by stop().
 * Never a system server.
 */
import { execFile } from 'node:child_process';
import { chown, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const NOBODY = 65534;

export interface PostgresServer {
  url: string;
  stop(): Promise<void>;
}

async function binDir(): Promise<string> {
  const root = '/usr/lib/postgresql';
  const versions = (await readdir(root).catch(() => [] as string[])).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
  if (!versions[0]) throw new Error(`no PostgreSQL under ${root}: install the Debian package postgresql (scripts/install.sh does)`);
  return join(root, versions[0], 'bin');
}

export async function startPostgres(): Promise<PostgresServer> {
  const bin = await binDir();
  const dir = await mkdtemp(join(tmpdir(), 'kiln-pg-'));
  const asNobody = (cmd: string, args: string[]) => (process.getuid?.() === 0 ? run('runuser', ['-u', 'nobody', '--', join(bin, cmd), ...args]) : run(join(bin, cmd), args));
  const data = join(dir, 'data');
  let started = false;
  const stop = async (): Promise<void> => {
    if (started) await asNobody('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']).catch(() => undefined);
    started = false;
    await rm(dir, { recursive: true, force: true });
  };
  try {
    if (process.getuid?.() === 0) await chown(dir, NOBODY, NOBODY);
    await asNobody('initdb', ['-D', data, '-A', 'trust', '-U', 'kiln', '-E', 'UTF8', '--no-sync']);
    started = true;
    await asNobody('pg_ctl', ['-D', data, '-l', join(dir, 'log'), '-w', '-t', '60', '-o', `-k ${dir} -c listen_addresses='' -c fsync=off`, 'start']);
    return { url: `postgres://kiln@localhost/postgres?host=${encodeURIComponent(dir)}`, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
