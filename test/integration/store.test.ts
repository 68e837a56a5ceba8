/**
 * One store suite, run on both engines: the embedded PGlite (files in a temp dir) and a real
 * PostgreSQL server (the Debian package, a cluster of its own in a temp dir, started and removed
 * here: test/store/postgres-server.ts). Migrations, keys (hashes only), the journal's batches, the
 * event trail, usage, listing by owner, node, labels and pages.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isKilnError } from '../../src/core/errors.js';
import { Journal } from '../../src/core/journal.js';
import { hashSecret, KeyRing } from '../../src/core/keys.js';
import { NETWORK_EVENTS_KEPT, type NetworkEvent } from '../../src/core/network.js';
import type { SandboxRecord, Store, StoreWrite } from '../../src/core/store.js';
import { openStore } from '../../src/store/index.js';
import { MIGRATIONS, migrate } from '../../src/store/migrations.js';

const ALL_VERSIONS = MIGRATIONS.map((m) => m.version);
const NEWEST = Math.max(...ALL_VERSIONS);

import { openPglite, openPostgres, type SqlClient } from '../../src/store/sql.js';
import { type PostgresServer, startPostgres } from '../store/postgres-server.js';

interface Engine {
  name: string;
  /** A fresh, empty database: its URL for openStore (undefined: PGlite in `dataDir`) and a raw client opener. */
  fresh(): Promise<{ url: string | undefined; dataDir: string; raw(): Promise<SqlClient> }>;
  close(): Promise<void>;
}

const temps: string[] = [];
async function temp(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'kiln-store-'));
  temps.push(d);
  return d;
}
after(async () => {
  await Promise.all(temps.map((d) => rm(d, { recursive: true, force: true })));
});

const pglite: Engine = {
  name: 'embedded (PGlite)',
  async fresh() {
    const dataDir = await temp();
    return { url: undefined, dataDir, raw: () => openPglite(join(dataDir, 'db', 'pglite')) };
  },
  async close() {},
};

function postgres(): Engine {
  let server: PostgresServer | undefined;
  let n = 0;
  return {
    name: 'PostgreSQL server',
    async fresh() {
      server ??= await startPostgres();
      // A database per test: CREATE DATABASE on the server's default one.
      const admin = await openPostgres(server.url);
      const db = `t${++n}`;
      await admin.query(`CREATE DATABASE ${db}`);
      await admin.close();
      const url = server.url.replace('/postgres?', `/${db}?`);
      return { url, dataDir: await temp(), raw: () => openPostgres(url) };
    },
    async close() {
      await server?.stop();
    },
  };
}

const sandbox = (id: string, o: Partial<SandboxRecord> = {}): SandboxRecord => ({
  id,
  node: 'node-a',
  ownerKeyId: null,
  backend: 'namespace',
  pack: 'python',
  cpus: 1,
  memoryMib: 256,
  diskMib: 128,
  labels: {},
  metadata: { fromPool: false },
  state: 'ready',
  createdAt: new Date(),
  expiresAt: new Date(Date.now() + 60_000),
  ...o,
});

for (const engine of [pglite, postgres()]) {
  describe(`store on ${engine.name}`, () => {
    let store: Store;
    let raw: SqlClient;
    before(async () => {
      const db = await engine.fresh();
      const opened = await openStore(db.url, db.dataDir);
      assert.ok(opened);
      store = opened.store;
      // The embedded engine is one process's: the raw checks use a second database of the same kind.
      const other = await engine.fresh();
      raw = await other.raw();
    });
    after(async () => {
      await store?.close();
      await raw?.close();
      await engine.close();
    });

    it('migrations: a fresh database gets every one, a second run does nothing, in schema_migrations', async () => {
      assert.deepEqual(
        await migrate(raw),
        MIGRATIONS.map((m) => m.version),
      );
      assert.deepEqual(await migrate(raw), []);
      const rows = await raw.query<{ version: number; name: string }>('SELECT version, name FROM schema_migrations ORDER BY version');
      assert.deepEqual(
        rows.map((r) => Number(r.version)),
        MIGRATIONS.map((m) => m.version),
      );
    });

    it('migrations: a schema newer than this code is refused with a clear error, and nothing is changed', async () => {
      const fresh = await engine.fresh();
      const first = await openStore(fresh.url, fresh.dataDir);
      assert.deepEqual(first?.migrated, ALL_VERSIONS);
      await first?.store.close();
      const again = await openStore(fresh.url, fresh.dataDir);
      assert.deepEqual(again?.migrated, [], 'a second open applies nothing');
      await again?.store.close();

      const c = await fresh.raw();
      await c.query("INSERT INTO schema_migrations (version, name) VALUES (999, 'from the future')");
      await c.close();
      await assert.rejects(
        openStore(fresh.url, fresh.dataDir),
        (e: unknown) => isKilnError(e) && e.code === 'STORE_UNAVAILABLE' && new RegExp(`version 999, newer than this kiln knows \\(${NEWEST}\\)`).test(e.message),
      );
      // A newer migration list (as a newer kiln would have) is applied in one go.
      const c2 = await fresh.raw();
      await c2.query('DELETE FROM schema_migrations WHERE version = 999');
      const applied = await migrate(c2, [...MIGRATIONS, { version: NEWEST + 1, name: 'next', sql: 'CREATE TABLE next_thing (x integer); CREATE TABLE next_other (y integer);' }]);
      assert.deepEqual(applied, [NEWEST + 1]);
      await c2.close();
    });

    it('migrations: a failing migration leaves nothing behind (one transaction)', async () => {
      const fresh = await engine.fresh();
      const c = await fresh.raw();
      try {
        await assert.rejects(migrate(c, [...MIGRATIONS, { version: NEWEST + 1, name: 'broken', sql: 'CREATE TABLE half (x integer); SELECT no_such_function();' }]));
        const t = await c.query("SELECT count(*)::int AS n FROM information_schema.tables WHERE table_name IN ('sandboxes', 'half', 'schema_migrations')");
        assert.equal(Number(t[0]!.n), 0, 'neither migration 1 nor the broken one is there');
        assert.deepEqual(await migrate(c), ALL_VERSIONS);
      } finally {
        await c.close();
      }
    });

    it('keys: only the hash is stored; a key authenticates, a wrong or revoked one does not, another node sees changes on reload', async () => {
      const ring = new KeyRing(store);
      await ring.start(60_000);
      const other = new KeyRing(store);
      await other.start(60_000);
      try {
        const { key, secret } = await ring.create('team-a', { maxSandboxes: 2, maxMemoryMib: 512 });
        assert.match(secret, /^kiln_[A-Za-z0-9_-]{43}$/);
        assert.deepEqual(ring.authenticate(secret)?.limits, { maxSandboxes: 2, maxMemoryMib: 512 });
        assert.equal(ring.authenticate(`${secret.slice(0, -1)}x`), undefined);
        assert.equal(ring.authenticate('not-a-key'), undefined);
        const stored = (await store.listKeys()).find((k) => k.id === key.id);
        assert.ok(stored?.hash.equals(hashSecret(secret)));
        assert.equal(JSON.stringify(await store.listKeys()).includes(secret.slice(5)), false, 'the secret is nowhere in the store');

        assert.equal(other.authenticate(secret), undefined, 'not yet loaded on the other node');
        await other.reload();
        assert.equal(other.authenticate(secret)?.id, key.id);
        await ring.revoke(key.id);
        assert.equal(ring.authenticate(secret), undefined, 'refused at once on the node that revoked it');
        await other.reload();
        assert.equal(other.authenticate(secret), undefined);
        await assert.rejects(ring.revoke(key.id), (e: unknown) => isKilnError(e) && e.code === 'KEY_NOT_FOUND');
        assert.ok((await ring.list()).find((k) => k.id === key.id)?.revokedAt, 'revoked keys stay listed');
      } finally {
        ring.close();
        other.close();
      }
    });

    it('journal: writes are batched, kept in order, usage merged; events and ends recorded', async () => {
      const ring = new KeyRing(store);
      await ring.start(60_000);
      ring.close();
      const { key } = await ring.create('usage', {});
      const j = new Journal(store, { flushDelayMs: 10_000 });
      const id = `sb-j-${Date.now()}`;
      j.record({ type: 'sandbox.created', record: sandbox(id, { ownerKeyId: key.id, labels: { team: 'x' } }) });
      j.record({ type: 'event', event: { sandboxId: id, at: new Date(), kind: 'created', data: { fromPool: true } } });
      j.record({ type: 'usage', keyId: key.id, usage: { sandboxesCreated: 1, execs: 0, execMs: 0 } });
      for (let i = 1; i <= 3; i++) {
        j.record({ type: 'event', event: { sandboxId: id, at: new Date(), kind: 'exec.started', data: { exec: i } } });
        j.record({ type: 'event', event: { sandboxId: id, at: new Date(), kind: 'exec.ended', data: { exec: i, exitCode: i, durationMs: 5 } } });
        j.record({ type: 'usage', keyId: key.id, usage: { sandboxesCreated: 0, execs: 1, execMs: 5 } });
      }
      j.record({ type: 'sandbox.ended', id, state: 'deleted', at: new Date(), reason: 'ttl expired' });
      j.record({ type: 'event', event: { sandboxId: id, at: new Date(), kind: 'deleted', data: { reason: 'ttl expired' } } });
      assert.equal(j.pending, 14);
      assert.equal((await store.events(id)).length, 0, 'nothing written before the flush');
      await j.flush();
      assert.equal(j.pending, 0);
      const ev = await store.events(id);
      assert.deepEqual(
        ev.map((e) => e.kind),
        ['created', 'exec.started', 'exec.ended', 'exec.started', 'exec.ended', 'exec.started', 'exec.ended', 'deleted'],
      );
      assert.deepEqual(
        ev.filter((e) => e.kind === 'exec.ended').map((e) => e.data.exitCode),
        [1, 2, 3],
      );
      const rec = await store.sandbox(id);
      assert.equal(rec?.state, 'deleted');
      assert.equal(rec?.endReason, 'ttl expired');
      assert.deepEqual(rec?.labels, { team: 'x' });
      assert.equal(rec?.ownerKeyId, key.id);
      assert.deepEqual(await store.usage(key.id), { sandboxesCreated: 1, execs: 3, execMs: 15 });
      // Usage adds up across batches.
      j.record({ type: 'usage', keyId: key.id, usage: { sandboxesCreated: 1, execs: 1, execMs: 2 } });
      await j.close();
      assert.deepEqual(await store.usage(key.id), { sandboxesCreated: 2, execs: 4, execMs: 17 });
    });

    it('network events: kept in order per sandbox, the newest NETWORK_EVENTS_KEPT only, read after a seq; none for an unknown sandbox', async () => {
      const j = new Journal(store, { flushDelayMs: 10_000 });
      const [a, b] = [`sb-na-${Date.now()}`, `sb-nb-${Date.now()}`];
      j.record({ type: 'sandbox.created', record: sandbox(a) });
      j.record({ type: 'sandbox.created', record: sandbox(b) });
      const ev = (seq: number): NetworkEvent => ({
        seq,
        at: new Date(1_700_000_000_000 + seq).toISOString(),
        kind: seq % 2 ? 'dns' : 'connection',
        verdict: seq % 3 ? 'allowed' : 'refused',
        name: `n${seq}.example`,
        port: 443,
      });
      const total = NETWORK_EVENTS_KEPT + 30;
      for (let seq = 1; seq <= total; seq++) {
        j.record({ type: 'network.event', sandboxId: a, event: ev(seq) });
        if (seq <= 3) j.record({ type: 'network.event', sandboxId: b, event: ev(seq) });
      }
      j.record({ type: 'network.event', sandboxId: 'sb-never-created', event: ev(1) });
      await j.close();
      const kept = await store.networkEvents(a, 0, 10_000);
      assert.equal(kept.length, NETWORK_EVENTS_KEPT);
      assert.equal(kept[0]!.seq, total - NETWORK_EVENTS_KEPT + 1, 'the oldest went');
      assert.deepEqual(kept.at(-1), ev(total), 'an event comes back as it was recorded');
      assert.deepEqual(
        (await store.networkEvents(a, total - 3, 2)).map((e) => e.seq),
        [total - 2, total - 1],
      );
      assert.deepEqual(
        (await store.networkEvents(b, 0, 100)).map((e) => e.seq),
        [1, 2, 3],
        "another sandbox's trail is its own",
      );
      assert.deepEqual(await store.networkEvents('sb-never-created', 0, 100), []);
    });

    it('journal: a failed flush keeps its writes and a later one applies them, in order', async () => {
      let fail = true;
      const flaky: Store = Object.create(store, { apply: { value: (w: StoreWrite[]) => (fail ? Promise.reject(new Error('connection lost')) : store.apply(w)) } });
      const logged: string[] = [];
      const j = new Journal(flaky, { flushDelayMs: 10_000, log: (m) => logged.push(m) });
      const id = `sb-f-${Date.now()}`;
      j.record({ type: 'sandbox.created', record: sandbox(id) });
      await assert.rejects(j.flush(), /connection lost/);
      j.record({ type: 'event', event: { sandboxId: id, at: new Date(), kind: 'created', data: {} } });
      assert.equal(j.pending, 2);
      assert.deepEqual(logged, ['store write failed; will retry']);
      fail = false;
      await j.flush();
      assert.equal((await store.sandbox(id))?.state, 'ready');
      assert.equal((await store.events(id)).length, 1);
      await j.close();
    });

    it('lists sandboxes by owner, node and labels, in pages', async () => {
      const ring = new KeyRing(store);
      const { key } = await ring.create('lister', {});
      ring.close();
      const t0 = Date.now() - 100_000;
      const writes: StoreWrite[] = [];
      for (let i = 0; i < 7; i++) {
        writes.push({
          type: 'sandbox.created',
          record: sandbox(`sb-l-${i}`, { ownerKeyId: i % 2 ? key.id : null, node: i < 5 ? 'node-a' : 'node-b', labels: { parity: i % 2 ? 'odd' : 'even', n: String(i) }, createdAt: new Date(t0 + i) }),
        });
      }
      await store.apply(writes);
      const ids = (r: SandboxRecord[]) => r.map((s) => s.id);
      assert.deepEqual(ids(await store.sandboxes({ ownerKeyId: key.id, limit: 100 })), ['sb-l-1', 'sb-l-3', 'sb-l-5']);
      assert.deepEqual(ids(await store.sandboxes({ labels: { parity: 'even' }, node: 'node-a', limit: 100 })), ['sb-l-0', 'sb-l-2', 'sb-l-4']);
      assert.deepEqual(ids(await store.sandboxes({ labels: { parity: 'even', n: '6' }, limit: 100 })), ['sb-l-6']);
      assert.deepEqual(ids(await store.sandboxes({ ownerKeyId: null, labels: { parity: 'odd' }, limit: 100 })), []);
      const page1 = await store.sandboxes({ labels: { parity: 'even' }, limit: 2 });
      const page2 = await store.sandboxes({ labels: { parity: 'even' }, limit: 2, afterId: page1[1]!.id });
      assert.deepEqual([...ids(page1), ...ids(page2)], ['sb-l-0', 'sb-l-2', 'sb-l-4', 'sb-l-6']);
    });

    it('records the nodes that use it (one row each, the latest start)', async () => {
      const fresh = await engine.fresh();
      const opened = await openStore(fresh.url, fresh.dataDir);
      const later = new Date(Date.now() + 1000);
      await opened!.store.registerNode('node-a', new Date());
      await opened!.store.registerNode('node-a', later);
      await opened!.store.registerNode('node-b', new Date());
      await opened!.store.close();
      const c = await fresh.raw();
      const rows = await c.query<{ id: string; started_at: Date }>('SELECT id, started_at FROM nodes ORDER BY id');
      await c.close();
      assert.deepEqual(
        rows.map((r) => r.id),
        ['node-a', 'node-b'],
      );
      assert.equal(new Date(rows[0]!.started_at).getTime(), later.getTime());
    });
  });
}

describe('embedded store', () => {
  it("is one process's: a second open of the same directory is refused naming the holder; a stale lock is taken over", async () => {
    const dataDir = await temp();
    const a = await openStore(undefined, dataDir);
    try {
      await assert.rejects(openStore(undefined, dataDir), (e: unknown) => isKilnError(e) && e.code === 'STORE_UNAVAILABLE' && /already open in this process/.test(e.message));
    } finally {
      await a?.store.close();
    }
    // A lock left by a process that is gone (pid 2^22+1 is above pid_max) does not block.
    const { writeFile } = await import('node:fs/promises');
    await writeFile(join(dataDir, 'db', 'pglite.lock'), String(2 ** 22 + 1));
    const b = await openStore(undefined, dataDir);
    assert.deepEqual(b?.migrated, []);
    await b?.store.close();
  });

  it('KILN_DATABASE_URL=off opens nothing; an unknown scheme is refused', async () => {
    assert.equal(await openStore('off', '/nonexistent'), undefined);
    await assert.rejects(openStore('mysql://x', '/nonexistent'), /KILN_DATABASE_URL must be/);
  });
});
