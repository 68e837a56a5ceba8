/**
 * The kiln service as its own child process (as `bin/kiln serve` runs it), so that a crash or the
 * process's memory can be observed from outside. Node runs with --unhandled-rejections=strict: a
 * promise that rejects unobserved ends the process even if a last-resort handler is installed.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { KilnClient } from '../../sdk/src/index.js';
import { REPO_ROOT } from '../../src/core/config.js';

export interface ServiceProcess {
  client: KilnClient;
  baseUrl: string;
  child: ChildProcess;
  /** Everything the service wrote to stderr so far (its JSON log). */
  log(): string;
  alive(): boolean;
  rssBytes(): Promise<number>;
  close(): Promise<void>;
}

export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

function spawnService(runDir: string, port: number, env: Record<string, string>): ChildProcess {
  return spawn(join(REPO_ROOT, 'bin/kiln'), ['serve'], {
    env: {
      ...process.env,
      KILN_RUN_DIR: runDir,
      KILN_PORT: String(port),
      KILN_TOKEN: '',
      KILN_POOL: '',
      KILN_SOCKET: '',
      // No store unless a test asks for one: test services share KILN_DATA_DIR, an embedded database there is one process's.
      KILN_DATABASE_URL: 'off',
      NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --unhandled-rejections=strict`.trim(),
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}

/** Stops the service; true when it closed cleanly (exit code 0). */
async function stop(child: ChildProcess): Promise<boolean> {
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 25_000);
    await once(child, 'exit');
    clearTimeout(timer);
  }
  return child.exitCode === 0;
}

export async function startServiceProcess(env: Record<string, string> = {}): Promise<ServiceProcess> {
  const base = await mkdtemp(join(tmpdir(), 'kiln-svc-'));
  await chmod(base, 0o755); // sandbox uids traverse into the run dir
  const runDir = join(base, 'run');
  const port = await freePort();
  const child = spawnService(runDir, port, env);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => {
    stderr += s;
    if (process.env.KILN_TEST_LOG) process.stderr.write(s);
  });
  const baseUrl = `http://127.0.0.1:${port}`;
  const client = new KilnClient({ baseUrl });
  const svc: ServiceProcess = {
    client,
    baseUrl,
    child,
    log: () => stderr,
    alive: () => child.exitCode === null && child.signalCode === null,
    async rssBytes() {
      const status = await readFile(`/proc/${child.pid}/status`, 'utf8');
      return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)![1]) * 1024;
    },
    async close() {
      if (!(await stop(child))) {
        // It died or hung: a second start's scan removes what it left (mounts, cgroups).
        const again = spawnService(runDir, port, env);
        again.stderr!.resume();
        for (
          let i = 0;
          i < 600 &&
          again.exitCode === null &&
          !(await client.health().then(
            () => true,
            () => false,
          ));
          i++
        )
          await sleep(100);
        await stop(again);
      }
      await rm(base, { recursive: true, force: true });
    },
  };
  try {
    for (let i = 0; ; i++) {
      if (
        await client.health().then(
          () => true,
          () => false,
        )
      )
        break;
      if (i > 600 || !svc.alive()) throw new Error(`service did not start:\n${stderr}`);
      await sleep(100);
    }
  } catch (e) {
    await svc.close();
    throw e;
  }
  return svc;
}
