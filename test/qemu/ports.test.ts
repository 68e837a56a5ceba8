/**
 * Inbound ports on a microVM: the proxy reaches a server in the guest (its own loopback, no
 * network device) through the agent's tcp.connect, through the real server and real QEMU (TCG here).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { establishedOn, eventually, HTTP_PORT, startServers } from '../integration/port-servers.js';
import { startTestServer } from '../parity/fixture.js';
import { qemuProcessesUnder, skipReason } from './fixture.js';

describe('inbound ports on the qemu backend', { skip: await skipReason(), timeout: 300_000 }, () => {
  it('proxies HTTP to a server in the VM and leaves no connection open', async () => {
    const t = await startTestServer();
    try {
      const id = (await t.client.sandboxes.create({ pack: 'python', backend: 'qemu' })).id;
      await startServers(t.client, id, 120_000);
      const res = await t.client.fetchPort(id, HTTP_PORT, '/info?vm=1');
      assert.equal(res.status, 200);
      assert.equal(((await res.json()) as { path: string }).path, '/info?vm=1');
      const data = randomBytes(256 * 1024);
      const echo = await t.client.fetchPort(id, HTTP_PORT, '/echo', { method: 'POST', body: data, headers: { 'content-type': 'application/octet-stream' } });
      assert.ok(Buffer.from(await echo.arrayBuffer()).equals(data));
      const refused = await t.client.fetchPort(id, 8099, '/').catch((e: { code?: string }) => e);
      assert.equal((refused as { code?: string }).code, 'PORT_UNREACHABLE');
      await eventually(
        'connections in the VM',
        () => establishedOn(t.client, id, HTTP_PORT),
        (n) => n === 0,
        20_000,
      );
      await t.client.sandboxes.delete(id);
    } finally {
      await t.close();
    }
    assert.deepEqual(await qemuProcessesUnder(t.runDir), [], 'no QEMU left after shutdown');
  });
});
