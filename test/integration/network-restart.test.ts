/**
 * Networked sandboxes across a SIGKILL of the service, in the middle of creates and deletes: the
 * next start takes the survivors over with their network, and once they are deleted and the
 * service stops, no link, bridge port, nftables table, routing rule or address record is left.
 * With a store (a PostgreSQL server of the test's own), the audit trail outlives both the process
 * and the sandbox: the survivor's events from before the kill come back, and a deleted sandbox's
 * trail is still readable.
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
import { type PostgresServer, startPostgres } from '../store/postgres-server.js';

describe('networked sandboxes and a killed service', { timeout: 300_000 }, () => {
  let net: FakeInternet;
  let base: string;
  let pg: PostgresServer;
  before(async () => {
    pg = await startPostgres();
    net = await startFakeInternet();
    base = await mkdtemp(join(tmpdir(), 'kiln-netkill-'));
    await chmod(base, 0o755);
  });
  after(async () => {
    await net?.close();
    await pg?.stop();
    await rm(base, { recursive: true, force: true });
  });

  it('SIGKILL mid-churn: survivors keep their network; then nothing is left', async () => {
    const env: Record<string, string> = { ...net.env(), KILN_DATABASE_URL: pg.url };
    const runDir = join(base, 'run');
    const port = await freePort();
    const client = new KilnClient({ baseUrl: `http://127.0.0.1:${port}` });
    const first = spawnService(runDir, port, { ...env, KILN_STOP_SANDBOXES_ON_EXIT: '0' });
    await untilHealthy(client, first);
    const network = { policy: 'allowlist' as const, allow: ['allowed.example'] };
    const kept = await client.sandboxes.create({ pack: 'python', network });
    await probe(client, kept.id, [
      { kind: 'dns', name: 'allowed.example' },
      { kind: 'dns', name: 'before-the-kill.example' },
    ]);
    const before = await client.sandboxes.networkEvents(kept.id);
    assert.ok(before.events.some((e) => e.name === 'before-the-kill.example' && e.verdict === 'refused'));
    await new Promise((r) => setTimeout(r, 400)); // the journal's batch reaches the store (250 ms)
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
      // The trail goes on from where it was: the events from before the kill, then the new ones.
      const trail = await client.sandboxes.networkEvents(kept.id);
      const last = before.events.at(-1)!.seq;
      assert.deepEqual(
        trail.events.filter((e) => e.seq <= last),
        before.events,
        'the events from before the kill came back from the store',
      );
      assert.ok(trail.events.some((e) => e.seq > last && e.name === 'unlisted.example' && e.verdict === 'refused'));
      for (const s of listed) await client.sandboxes.delete(s.id);
      // Deleted, its trail stays readable (from the store), with its refusals and what they propose.
      const gone = await client.sandboxes.networkEvents(kept.id);
      assert.equal(gone.policy, 'allowlist');
      assert.deepEqual(
        gone.events.map((e) => e.seq),
        trail.events.map((e) => e.seq),
      );
      assert.ok(gone.counters.refused >= 2);
      assert.ok(gone.proposal.allow.includes('before-the-kill.example') && gone.proposal.allow.includes('allowed.example'), gone.proposal.allow.join(','));
      await assert.rejects(client.sandboxes.networkEvents('sb-0000000000000000'), /SANDBOX_NOT_FOUND|no sandbox/);
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
