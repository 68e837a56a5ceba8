/**
 * Pause, resume and named snapshots on the namespace backend (real bwrap): files kept across a
 * pause, a resume and a service restart; a snapshot seeding two sandboxes; the snapshot quota;
 * retention; nothing left behind.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { KilnClient, KilnError } from '../../sdk/src/index.js';
import { REPO_ROOT } from '../../src/core/config.js';
import { startTestServer, type TestServer } from '../parity/fixture.js';
import { freePort, spawnService, untilHealthy } from '../parity/service-process.js';

const skip = process.getuid?.() === 0 ? undefined : 'the namespace backend needs root';
const isCode = (code: string) => (e: unknown) => e instanceof KilnError && e.code === code;

describe('pause, resume and snapshots on namespace', { skip, timeout: 300_000 }, () => {
  let snapDir: string;
  before(async () => {
    snapDir = await mkdtemp(join(tmpdir(), 'kiln-snaps-'));
  });
  after(async () => {
    await rm(snapDir, { recursive: true, force: true });
  });
  const env = () => ({ KILN_BACKEND: 'namespace', KILN_SNAPSHOTS_DIR: snapDir });

  it('keeps the files across pause and resume, and across a service restart while paused', async () => {
    let t: TestServer | undefined = await startTestServer(env());
    let id = '';
    try {
      const kiln = t.client;
      const sb = await kiln.sandboxes.create({ pack: 'shell', memoryMib: 128, diskMib: 64 });
      id = sb.id;
      await kiln.sandboxes.writeFile(id, '/workspace/a.txt', 'alpha');
      await kiln.sandboxes.exec(id, { cmd: 'mkdir -p /tmp/d && echo beta > /tmp/d/b.txt && chmod 750 /tmp/d' });
      const p = await kiln.sandboxes.pause(id);
      assert.equal(p.state, 'paused');
      assert.equal(p.processesKept, false);
      assert.ok(p.sizeBytes > 0);
      console.log(`namespace pause: ${p.pauseMs} ms, ${p.sizeBytes} bytes`);
      assert.equal((await kiln.sandboxes.get(id)).state, 'paused');
      assert.equal((await kiln.sandboxes.list()).find((s) => s.id === id)?.state, 'paused');
      await assert.rejects(kiln.sandboxes.exec(id, { cmd: 'true' }), isCode('SANDBOX_PAUSED'));
      const health = await fetch(`${t.server.url}/v1/health`).then((r) => r.json() as Promise<Record<string, unknown>>);
      assert.ok(health, 'service answers');
      assert.equal(t.server.svc.manager.admission.stats.inUse, 0, 'a paused sandbox holds no admission slot');

      const r = await kiln.sandboxes.resume(id);
      assert.equal(r.id, id);
      assert.equal(r.state, 'ready');
      console.log(`namespace resume: ${r.resumeMs} ms`);
      assert.equal((await kiln.sandboxes.exec(id, { cmd: 'cat /workspace/a.txt /tmp/d/b.txt; stat -c %a /tmp/d' })).stdout, 'alphabeta\n750\n');

      // Paused across a restart of the service on the same snapshot folder.
      await kiln.sandboxes.pause(id);
      await t.close();
      t = undefined;
      t = await startTestServer(env());
      const again = await t.client.sandboxes.get(id);
      assert.equal(again.state, 'paused');
      await t.client.sandboxes.resume(id);
      assert.equal((await t.client.sandboxes.exec(id, { cmd: 'cat /workspace/a.txt' })).stdout, 'alpha');
      assert.equal((await t.client.sandboxes.exec(id, { cmd: 'echo $LANG' })).stdout, 'C.UTF-8\n', "the pack's environment after the restart");
      await t.client.sandboxes.delete(id);
      assert.deepEqual(await readdir(join(snapDir, 'paused')), []);
    } finally {
      if (t && id) await t.client.sandboxes.delete(id).catch(() => undefined);
      await t?.close();
    }
  });

  it('deletes a paused sandbox with its state', async () => {
    const t = await startTestServer(env());
    try {
      const { id } = await t.client.sandboxes.create({ pack: 'shell', memoryMib: 128, diskMib: 64 });
      await t.client.sandboxes.pause(id);
      assert.deepEqual(await readdir(join(snapDir, 'paused')), [id]);
      await t.client.sandboxes.delete(id);
      assert.deepEqual(await readdir(join(snapDir, 'paused')), []);
      await assert.rejects(t.client.sandboxes.get(id), isCode('SANDBOX_NOT_FOUND'));
      // A delete during the pause wins: no state is left to bring it back at the next start.
      const { id: racer } = await t.client.sandboxes.create({ pack: 'shell', memoryMib: 128, diskMib: 64 });
      await t.client.sandboxes.writeFile(racer, '/workspace/x', 'x');
      await Promise.allSettled([t.client.sandboxes.pause(racer), t.client.sandboxes.delete(racer)]);
      await assert.rejects(t.client.sandboxes.get(racer), isCode('SANDBOX_NOT_FOUND'));
      assert.deepEqual(await readdir(join(snapDir, 'paused')), []);
    } finally {
      await t.close();
    }
  });

  it('seeds two new sandboxes from a named snapshot; lists, refuses a taken name, deletes', async () => {
    const t = await startTestServer(env());
    const ids: string[] = [];
    try {
      const kiln = t.client;
      const src = await kiln.sandboxes.create({ pack: 'shell', memoryMib: 128, diskMib: 64 });
      ids.push(src.id);
      await kiln.sandboxes.writeFile(src.id, '/workspace/seed.txt', 'seeded');
      const snap = await kiln.sandboxes.snapshot(src.id, 'seed-1');
      assert.equal(snap.kind, 'files');
      assert.equal(snap.pack, 'shell');
      await assert.rejects(kiln.sandboxes.snapshot(src.id, 'seed-1'), isCode('SNAPSHOT_EXISTS'));
      // The source goes on.
      assert.equal((await kiln.sandboxes.exec(src.id, { cmd: 'cat /workspace/seed.txt' })).stdout, 'seeded');
      for (let i = 0; i < 2; i++) {
        const sb = await kiln.sandboxes.create({ pack: 'shell', fromSnapshot: 'seed-1' });
        ids.push(sb.id);
        assert.equal(sb.memoryMib, 128);
        assert.equal((await kiln.sandboxes.exec(sb.id, { cmd: 'cat /workspace/seed.txt' })).stdout, 'seeded');
      }
      assert.deepEqual(
        (await kiln.sandboxes.listSnapshots()).map((s) => s.name),
        ['seed-1'],
      );
      await kiln.sandboxes.deleteSnapshot('seed-1');
      await assert.rejects(kiln.sandboxes.getSnapshot('seed-1'), isCode('SNAPSHOT_NOT_FOUND'));
      await assert.rejects(kiln.sandboxes.create({ pack: 'shell', fromSnapshot: 'seed-1' }), isCode('SNAPSHOT_NOT_FOUND'));
    } finally {
      for (const id of ids) await t.client.sandboxes.delete(id).catch(() => undefined);
      await t.close();
    }
  });

  it("refuses a snapshot over the key's maxSnapshotMib with 429 QUOTA_EXCEEDED; another key cannot see or use it", async () => {
    const admin = 'admin-token-for-pause-test';
    const t = await startTestServer({ ...env(), KILN_TOKEN: admin, KILN_DATABASE_URL: 'memory://' });
    let sbId = '';
    const adminClient = new KilnClient({ baseUrl: t.server.url, token: admin });
    try {
      const key = await adminClient.json<{ secret: string }>('POST', '/v1/keys', { name: 'snapper', limits: { maxSnapshotMib: 1 } });
      const kiln = new KilnClient({ baseUrl: t.server.url, token: key.secret });
      sbId = (await kiln.sandboxes.create({ pack: 'shell', memoryMib: 128, diskMib: 64 })).id;
      // A small one fits; another key neither sees it nor starts from it nor deletes it.
      await kiln.sandboxes.snapshot(sbId, 'a-small');
      const other = await adminClient.json<{ secret: string }>('POST', '/v1/keys', { name: 'other' });
      const b = new KilnClient({ baseUrl: t.server.url, token: other.secret });
      assert.deepEqual(await b.sandboxes.listSnapshots(), []);
      await assert.rejects(b.sandboxes.getSnapshot('a-small'), isCode('SNAPSHOT_NOT_FOUND'));
      await assert.rejects(b.sandboxes.deleteSnapshot('a-small'), isCode('SNAPSHOT_NOT_FOUND'));
      await assert.rejects(b.sandboxes.create({ pack: 'shell', fromSnapshot: 'a-small' }), isCode('SNAPSHOT_NOT_FOUND'));
      // Random data does not compress: 2 MiB in /tmp is over a 1 MiB quota.
      await kiln.sandboxes.exec(sbId, { cmd: 'head -c 2097152 /dev/urandom > /tmp/big' });
      await assert.rejects(kiln.sandboxes.snapshot(sbId, 'too-big'), (e: unknown) => e instanceof KilnError && e.code === 'QUOTA_EXCEEDED' && e.status === 429);
      assert.deepEqual(
        (await kiln.sandboxes.listSnapshots()).map((s) => s.name),
        ['a-small'],
      );
      await kiln.sandboxes.deleteSnapshot('a-small');
      assert.deepEqual(await readdir(join(snapDir, 'tmp')).catch(() => []), []);
      // The trail in the store has the pause and the resume.
      await kiln.sandboxes.pause(sbId);
      await kiln.sandboxes.resume(sbId);
      const { events } = await kiln.json<{ events: { kind: string; data: Record<string, unknown> }[] }>('GET', `/v1/sandboxes/${sbId}/events`);
      const kinds = events.map((e) => e.kind);
      assert.ok(kinds.indexOf('paused') > 0 && kinds.indexOf('resumed') > kinds.indexOf('paused'), kinds.join(','));
    } finally {
      if (sbId) await adminClient.sandboxes.delete(sbId).catch(() => undefined);
      await t.close();
    }
  });

  it('removes a named snapshot past KILN_SNAPSHOT_RETENTION_SEC', async () => {
    const t = await startTestServer({ ...env(), KILN_SNAPSHOT_RETENTION_SEC: '1' });
    let id = '';
    try {
      id = (await t.client.sandboxes.create({ pack: 'shell', memoryMib: 128, diskMib: 64 })).id;
      await t.client.sandboxes.snapshot(id, 'short-lived');
      assert.equal((await t.client.sandboxes.listSnapshots()).length, 1);
      const deadline = Date.now() + 10_000;
      while ((await t.client.sandboxes.listSnapshots()).length > 0) {
        assert.ok(Date.now() < deadline, 'the snapshot outlived its retention');
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.deepEqual(await readdir(join(snapDir, 'named')), []);
    } finally {
      if (id) await t.client.sandboxes.delete(id).catch(() => undefined);
      await t.close();
    }
  });

  it('kiln sandbox pause|resume|snapshot|snapshots|snapshot-rm', async () => {
    const t = await startTestServer(env());
    const cli = (...args: string[]) =>
      promisify(execFile)(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'src/cli/main.ts'), 'sandbox', ...args], { env: { ...process.env, KILN_URL: t.server.url, KILN_TOKEN: '' } });
    let id = '';
    try {
      id = (await cli('create', 'shell', '--memory-mib', '128', '--disk-mib', '64')).stdout.trim();
      await t.client.sandboxes.writeFile(id, '/workspace/c.txt', 'cli');
      assert.match((await cli('pause', id)).stderr, /paused .* files kept \(processes are not\)/);
      assert.match((await cli('ls')).stdout, new RegExp(`${id} .* paused`));
      await cli('resume', id);
      assert.equal((await cli('snapshot', id, 'cli-snap')).stdout.trim(), 'cli-snap');
      assert.match((await cli('snapshots')).stdout, /cli-snap +files +shell/);
      const seeded = (await cli('create', 'shell', '--from-snapshot', 'cli-snap')).stdout.trim();
      assert.equal((await t.client.sandboxes.exec(seeded, { cmd: 'cat /workspace/c.txt' })).stdout, 'cli');
      await cli('rm', seeded);
      await cli('snapshot-rm', 'cli-snap');
      assert.deepEqual(await t.client.sandboxes.listSnapshots(), []);
    } finally {
      if (id) await t.client.sandboxes.delete(id).catch(() => undefined);
      await t.close();
    }
  });

  it('resumes a paused sandbox after the service was killed (kill -9) and started again', async () => {
    const base = await mkdtemp(join(tmpdir(), 'kiln-svc-'));
    await chmod(base, 0o755);
    const runDir = join(base, 'run');
    const port = await freePort();
    const kiln = new KilnClient({ baseUrl: `http://127.0.0.1:${port}` });
    let served = spawnService(runDir, port, env());
    let id = '';
    try {
      await untilHealthy(kiln, served);
      id = (await kiln.sandboxes.create({ pack: 'shell', memoryMib: 128, diskMib: 64 })).id;
      await kiln.sandboxes.writeFile(id, '/workspace/k.txt', 'survived');
      await kiln.sandboxes.pause(id);
      served.child.kill('SIGKILL');
      await once(served.child, 'exit');
      served = spawnService(runDir, port, env());
      await untilHealthy(kiln, served);
      assert.equal((await kiln.sandboxes.get(id)).state, 'paused');
      await kiln.sandboxes.resume(id);
      assert.equal((await kiln.sandboxes.exec(id, { cmd: 'cat /workspace/k.txt' })).stdout, 'survived');
      await kiln.sandboxes.delete(id);
      id = '';
    } finally {
      if (id) await kiln.sandboxes.delete(id).catch(() => undefined);
      if (served.child.exitCode === null && served.child.signalCode === null) {
        served.child.kill('SIGTERM');
        await once(served.child, 'exit');
      }
      await rm(base, { recursive: true, force: true });
    }
  });
});
