/**
 * Issue #12.8: the namespace backend's cgroup code on a real cgroup v2 host, inside a delegated
 * subtree laid out as systemd makes it for a Delegate=yes service. These machines are v1/hybrid,
 * so the code runs in a QEMU guest (unified hierarchy mounted by the agent's init): bundled with
 * esbuild, uploaded, run as root; the guest script asserts on the real cgroupfs files
 * (cgroup-v2-guest.ts) and prints one "ok <step>" per step.
 */
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { loadConfig } from '../../src/core/config.js';
import { createBackends } from '../../src/server/backends.js';
import { startTestServer, type TestServer } from '../parity/fixture.js';
import { skipReason } from './fixture.js';

async function why(): Promise<string | undefined> {
  const backends = await createBackends(loadConfig({ ...process.env, KILN_RUN_DIR: tmpdir(), KILN_TOKEN: '' }));
  if (!backends.has('qemu')) return 'the server does not compose a qemu backend';
  return skipReason();
}

/** What systemd sets up for a Delegate=yes service: controllers down to the unit, the service inside. */
const DELEGATED_SERVICE = [
  'set -e',
  'cd /sys/fs/cgroup',
  'echo "+memory +pids +cpu" > cgroup.subtree_control',
  'mkdir -p system.slice/kiln.service',
  'echo "+memory +pids +cpu" > system.slice/cgroup.subtree_control',
  'echo $$ > system.slice/kiln.service/cgroup.procs',
  'exec node /workspace/cgroup-v2-guest.mjs',
].join('\n');

describe('cgroup v2 in a delegated subtree (QEMU guest)', { skip: await why(), timeout: 900_000 }, () => {
  let t: TestServer;
  let id: string;
  before(async () => {
    t = await startTestServer({ KILN_BACKEND: 'qemu' });
    id = (await t.client.sandboxes.create({ pack: 'node', memoryMib: 512 })).id;
  });
  after(async () => {
    await t?.client.sandboxes.delete(id).catch(() => undefined);
    await t?.close();
  });

  it('detects, prepares (moving the service into a leaf), creates, limits, delegates, kills, removes, scans and probes', async () => {
    const bundle = await build({
      entryPoints: [fileURLToPath(new URL('./cgroup-v2-guest.ts', import.meta.url))],
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node18',
      write: false,
      logLevel: 'silent',
    });
    await t.client.sandboxes.writeFile(id, '/workspace/cgroup-v2-guest.mjs', bundle.outputFiles[0]!.text);
    const r = await t.client.sandboxes.exec(id, { cmd: DELEGATED_SERVICE, uid: 0, timeoutMs: 300_000 });
    assert.equal(r.exitCode, 0, `guest run failed:\n${r.stdout}\n${r.stderr}`);
    const steps = r.stdout
      .split('\n')
      .filter((l) => l.startsWith('ok '))
      .map((l) => l.slice(3));
    assert.deepEqual(steps, ['detect', 'prepare', 'create', 'delegate', 'kill', 'oom', 'remove', 'scan', 'probe', 'undelegated', 'nsdelegate']);
  });
});
