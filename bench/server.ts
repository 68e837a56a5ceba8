/** The kiln service as its own process, as users run it (benchmarks measure through its HTTP API). */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KilnClient } from '../sdk/src/index.js';
import { REPO_ROOT } from '../src/core/config.js';

export interface ServerProcess {
  client: KilnClient;
  /** The service's pid (bin/kiln execs nothing: it is the node process serving). */
  pid: number;
  close(): Promise<void>;
}

export async function startServerProcess(env: Record<string, string>): Promise<ServerProcess> {
  const base = await mkdtemp(join(tmpdir(), 'kiln-bench-srv-'));
  await chmod(base, 0o755);
  const port = 18_000 + Math.floor(Math.random() * 2000);
  const child = spawn(join(REPO_ROOT, 'bin/kiln'), ['serve'], {
    env: { ...process.env, KILN_RUN_DIR: join(base, 'run'), KILN_PORT: String(port), KILN_TOKEN: '', ...env },
    stdio: ['ignore', 'ignore', 'ignore'],
  });
  const client = new KilnClient({ baseUrl: `http://127.0.0.1:${port}` });
  for (let i = 0; ; i++) {
    if (
      await client.health().then(
        () => true,
        () => false,
      )
    )
      break;
    if (i > 300 || child.exitCode !== null) {
      // Not left running (with its pool) when it did not come up in time.
      child.kill('SIGKILL');
      await rm(base, { recursive: true, force: true });
      throw new Error('bench server did not start');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    client,
    pid: child.pid!,
    async close() {
      child.kill('SIGTERM');
      if (child.exitCode === null) await once(child, 'exit');
      await rm(base, { recursive: true, force: true });
    },
  };
}

/** Waits until every pool has `atLeast` ready members (or its whole target, if smaller). */
export async function waitPoolFull(kiln: KilnClient, atLeast: number): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const { pools } = (await kiln.pools()) as { pools: Array<{ ready: number; target: number }> };
    if (pools.every((p) => p.ready >= Math.min(atLeast, p.target))) return;
    await new Promise((r) => setTimeout(r, 10));
  }
}
