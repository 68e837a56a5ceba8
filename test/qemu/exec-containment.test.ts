/**
 * QEMU backend: an exec's processes live in a per-exec cgroup2 group inside the guest, so timeout
 * and cancel kill every one of them however it detached; the exec user cannot touch PID 1's OOM
 * score and a guest OOM kills user code, never the agent. One VM for all (software emulation).
 */
import { tmpdir } from 'node:os';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../../src/core/config.js';
import { createBackends } from '../../src/server/backends.js';
import { agentOutOfOomReach, cancelKillsDetached, timeoutKillsDetached } from '../parity/containment.js';
import { startTestServer, type TestServer } from '../parity/fixture.js';
import { skipReason } from './fixture.js';

async function why(): Promise<string | undefined> {
  const backends = await createBackends(loadConfig({ ...process.env, KILN_RUN_DIR: tmpdir(), KILN_TOKEN: '' }));
  if (!backends.has('qemu')) return 'the server does not compose a qemu backend';
  return skipReason();
}

const slow = 3;

describe('exec containment on qemu', { skip: await why(), timeout: 900_000 }, () => {
  let t: TestServer;
  let id: string;
  before(async () => {
    t = await startTestServer({ KILN_BACKEND: 'qemu' });
    id = (await t.client.sandboxes.create({ pack: 'python', memoryMib: 256 })).id;
  });
  after(async () => {
    await t?.client.sandboxes.delete(id).catch(() => undefined);
    await t?.close();
  });

  it('a timeout kills every detached process of the exec', () => timeoutKillsDetached(t.client, id, slow));
  it('a cancel kills every detached process of the exec', () => cancelKillsDetached(t.client, id, slow));
  it("the exec user cannot raise PID 1's OOM score, and a guest OOM never kills the agent", () => agentOutOfOomReach(t.client, id, slow));
});
