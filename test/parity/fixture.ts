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

export interface PackServer {
  t: TestServer;
  /** A client with the operator's KILN_ADMIN_TOKEN: it may create and delete packs. */
  admin: KilnClient;
  /** KILN_CUSTOM_PACKS_DIR, a temp folder of this server's own. */
  customDir: string;
  /** Deletes these custom packs (their images live in the shared data dir), then the server and its folder. */
  close(packs: string[]): Promise<void>;
}

/** A test server that manages custom packs: its own custom-pack folder, and an admin client. */
export async function startPackServer(adminToken: string): Promise<PackServer> {
  const customDir = await mkdtemp(join(tmpdir(), 'kiln-custom-packs-'));
  const t = await startTestServer({ KILN_ADMIN_TOKEN: adminToken, KILN_CUSTOM_PACKS_DIR: customDir });
  const admin = new KilnClient({ baseUrl: t.server.url, token: adminToken });
  return {
    t,
    admin,
    customDir,
    async close(packs) {
      for (const name of packs) await admin.deletePack(name).catch(() => undefined);
      await t.close();
      await rm(customDir, { recursive: true, force: true });
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
