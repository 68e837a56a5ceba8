/** Starts a real kiln server (real HTTP, real backend, real images) in a private run dir. */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KilnClient } from '../../sdk/src/index.js';
import { type KilnConfig, loadConfig } from '../../src/core/config.js';
import { type RunningServer, startServer } from '../../src/server/main.js';

export interface TestServer {
  client: KilnClient;
  server: RunningServer;
  runDir: string;
  config: KilnConfig;
  close(): Promise<void>;
}

export async function startTestServer(env: Record<string, string> = {}, opts: { skipScan?: boolean } = {}): Promise<TestServer> {
  const base = await mkdtemp(join(tmpdir(), 'kiln-test-'));
  await chmod(base, 0o755); // sandbox uids traverse into the run dir
  const runDir = join(base, 'run');
  // No store unless a test asks for one (KILN_DATABASE_URL): test servers share KILN_DATA_DIR, and
  // an embedded database there belongs to one process at a time.
  const config = loadConfig({ ...process.env, KILN_PORT: '0', KILN_RUN_DIR: runDir, KILN_TOKEN: '', KILN_POOL: '', KILN_DATABASE_URL: 'off', ...env });
  const server = await startServer(config, { logger: !!process.env.KILN_TEST_LOG, skipScan: opts.skipScan ?? true });
  const client = new KilnClient({ baseUrl: server.url });
  return {
    client,
    server,
    runDir,
    config,
    async close() {
      await server.close();
      await rm(base, { recursive: true, force: true });
    },
  };
}

/** Creates a sandbox for the duration of `fn` and always deletes it (even when fn throws). */
export async function withSandbox<T>(client: KilnClient, opts: Parameters<KilnClient['sandboxes']['create']>[0], fn: (id: string) => Promise<T>): Promise<T> {
  const sb = await client.sandboxes.create(opts);
  try {
    return await fn(sb.id);
  } finally {
    await client.sandboxes.delete(sb.id).catch(() => undefined);
  }
}
