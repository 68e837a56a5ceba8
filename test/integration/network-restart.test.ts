/**
 * Networked sandboxes across a SIGKILL of the service, in the middle of creates and deletes: the
 * next start takes the survivors over with their network, and once they are deleted and the
 * service stops, no link, bridge port, nftables table, routing rule or address record is left.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { KilnClient } from '../../sdk/src/index.js';
import { type FakeInternet, leftovers, startFakeInternet } from '../net/fake-internet.js';
import { probe } from '../net/probe.js';
import { freePort, spawnService, untilHealthy } from '../parity/service-process.js';

describe('networked sandboxes and a killed service', { timeout: 300_000 }, () => {
  let net: FakeInternet;
  let base: string;
  before(async () => {
    net = await startFakeInternet();
    base = await mkdtemp(join(tmpdir(), 'kiln-netkill-'));
    await chmod(base, 0o755);
  });
  after(async () => {
    await net?.close();
    await rm(base, { recursive: true, force: true });
  });

  it('SIGKILL mid-churn: survivors keep their network; then nothing is left', async () => {
    const env = net.env();
    const runDir = join(base, 'run');
    const port = await freePort();
    const client = new KilnClient({ baseUrl: `http://127.0.0.1:${port}` });
    const first = spawnService(runDir, port, { ...env, KILN_STOP_SANDBOXES_ON_EXIT: '0' });
    await untilHealthy(client, first);
    const network = { policy: 'allowlist' as const, allow: ['allowed.example'] };
    const kept = await client.sandboxes.create({ pack: 'python', network });
    // Churn: creates and deletes in flight when the service is killed.
    let stop = false;
    let made = 0;
    const churn = (async () => {
      while (!stop) {
        const s = await client.sandboxes.create({ pack: 'shell', network }).catch(() => undefined);
        if (!s) break;
        made++;
        if (made % 2) await client.sandboxes.delete(s.id).catch(() => undefined);
      }
    })();
    while (made < 12) await new Promise((r) => setTimeout(r, 50));
    first.child.kill('SIGKILL');
    await once(first.child, 'exit');
    stop = true;
    await churn;

    const second = spawnService(runDir, port, env); // a stop deletes its sandboxes
    try {
      await untilHealthy(client, second);
      const listed = await client.sandboxes.list();
      const again = listed.find((s) => s.id === kept.id);
      assert.ok(again, `sandbox ${kept.id} was taken over`);
      assert.equal(again.network?.address, kept.network?.address);
      const [r] = await probe(client, kept.id, [{ kind: 'http', url: 'http://allowed.example/' }]);
      assert.match(r!.out, /host=allowed\.example/, r!.out);
      const [refused] = await probe(client, kept.id, [{ kind: 'dns', name: 'unlisted.example' }]);
      assert.equal(refused!.ok, false);
      for (const s of listed) await client.sandboxes.delete(s.id);
      const ports = execFileSync('ip', ['-o', 'link', 'show', 'master', `${env.KILN_NET_NAME}0`], { encoding: 'utf8' });
      assert.equal(ports.trim(), '', `bridge ports left: ${ports}`);
    } finally {
      second.child.kill('SIGTERM');
      await once(second.child, 'exit');
    }
    assert.equal(second.child.exitCode, 0, second.stderr().slice(-2000));
    assert.deepEqual(leftovers(env.KILN_NET_NAME!, env.KILN_NET_SUBNET!), []);
    const hostLinks = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
    assert.doesNotMatch(hostLinks, new RegExp(`${env.KILN_NET_NAME}0`));
    assert.deepEqual(await readdir(join(runDir, 'net')).catch(() => []), []);
  });
});
