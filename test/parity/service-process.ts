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

export interface ServeChild {
  child: ChildProcess;
  /** Everything the service wrote to stderr so far (its JSON log); echoed when KILN_TEST_LOG is set. */
  stderr(): string;
}

/** `bin/kiln serve` on this run dir and port: no token, no pools, no socket, no store, sandboxes deleted at a stop, unless `env` says so. */
export function spawnService(runDir: string, port: number, env: Record<string, string> = {}): ServeChild {
  const child = spawn(join(REPO_ROOT, 'bin/kiln'), ['serve'], {
    env: {
      ...process.env,
      KILN_RUN_DIR: runDir,
      KILN_PORT: String(port),
      KILN_TOKEN: '',
      KILN_POOL: '',
      KILN_SOCKET: '',
      // No store unless a test asks for one: test services share KILN_DATA_DIR, an embedded database there is one process's.
      KILN_DATABASE_URL: 'off',
      // A test that stops its service expects its sandboxes gone; crash.test.ts asks for the product's default (kept).
      KILN_STOP_SANDBOXES_ON_EXIT: '1',
      NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --unhandled-rejections=strict`.trim(),
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => {
    stderr += s;
    if (process.env.KILN_TEST_LOG) process.stderr.write(s);
  });
  return { child, stderr: () => stderr };
}

/** Resolves once the service answers /healthz; throws with the end of its log if it exits first or takes over 60 s. */
export async function untilHealthy(client: KilnClient, s: ServeChild): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (
      await client.health().then(
        () => true,
        () => false,
      )
    )
      return;
    if (s.child.exitCode !== null || s.child.signalCode !== null) break;
    await sleep(100);
  }
  throw new Error(`kiln serve did not come up (exit ${s.child.exitCode ?? s.child.signalCode ?? 'none yet'}): ${s.stderr().slice(-2000)}`);
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
  const served = spawnService(runDir, port, env);
  const { child } = served;
  const baseUrl = `http://127.0.0.1:${port}`;
  const client = new KilnClient({ baseUrl });
  const svc: ServiceProcess = {
    client,
    baseUrl,
    child,
    log: served.stderr,
    alive: () => child.exitCode === null && child.signalCode === null,
    async rssBytes() {
      const status = await readFile(`/proc/${child.pid}/status`, 'utf8');
      return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)![1]) * 1024;
    },
    async close() {
      if (!(await stop(child))) {
        // It died or hung: a second start's scan removes what it left (mounts, cgroups).
        const again = spawnService(runDir, port, env);
        await untilHealthy(client, again).catch(() => undefined);
        await stop(again.child);
      }
      await rm(base, { recursive: true, force: true });
    },
  };
  try {
    await untilHealthy(client, served);
  } catch (e) {
    await svc.close();
    throw e;
  }
  return svc;
}
