/**
 * The Store (src/core/store.ts) in SQL, the same statements on both engines. A batch of writes is
 * one transaction of at most four statements: the rows of each travel as one JSON parameter,
 * unpacked by jsonb_to_recordset, so a batch of 500 events is one statement, not 500.
 */

import { NETWORK_EVENTS_KEPT, type NetworkEvent } from '../core/network.js';
import type { ApiKeyRecord, KeyLimits, KeyUsage, SandboxEvent, SandboxQuery, SandboxRecord, Store, StoredApiKey, StoreWrite } from '../core/store.js';
import type { SqlClient, SqlTx } from './sql.js';

type Row = Record<string, unknown>;

const ORDER: readonly StoreWrite['type'][] = ['sandbox.created', 'event', 'network.event', 'sandbox.state', 'sandbox.ended', 'usage', 'snapshot.saved', 'snapshot.deleted'];

export class SqlStore implements Store {
  constructor(private readonly db: SqlClient) {}

  get engine(): string {
    return this.db.engine;
  }

  async apply(writes: StoreWrite[]): Promise<void> {
    if (writes.length === 0) return;
    // One statement per kind of write, whatever the batch's size (a statement costs PGlite ~0.3 ms
    // of CPU; a row next to nothing): new rows, then events, then ends, then usage. Each kind keeps
    // its order, and a sandbox's row always precedes its events and its end.
    const byType = new Map<StoreWrite['type'], StoreWrite[]>(ORDER.map((t) => [t, []]));
    for (const w of writes) byType.get(w.type)!.push(w);
    await this.db.transaction(async (tx) => {
      for (const run of byType.values()) if (run.length) await applyRun(tx, run);
    });
  }

  async registerNode(node: string, at: Date): Promise<void> {
    await this.db.query(
      `INSERT INTO nodes (id, started_at, heartbeat_at) VALUES ($1, $2, $2)
      ON CONFLICT (id) DO UPDATE SET started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at`,
      [node, at.toISOString()],
    );
  }

  async insertKey(k: StoredApiKey): Promise<void> {
    await this.db.transaction(async (tx) => {
      await tx.query("INSERT INTO api_keys (id, name, hash, prefix, created_at) VALUES ($1, $2, decode($3, 'hex'), $4, $5)", [
        k.id,
        k.name,
        k.hash.toString('hex'),
        k.prefix,
        k.createdAt.toISOString(),
      ]);
      const l = k.limits;
      await tx.query('INSERT INTO quotas (key_id, max_sandboxes, max_memory_mib, max_ttl_sec, max_exec_timeout_ms, max_snapshot_mib) VALUES ($1, $2, $3, $4, $5, $6)', [
        k.id,
        l.maxSandboxes ?? null,
        l.maxMemoryMib ?? null,
        l.maxTtlSec ?? null,
        l.maxExecTimeoutMs ?? null,
        l.maxSnapshotMib ?? null,
      ]);
    });
  }

  async listKeys(): Promise<StoredApiKey[]> {
    const rows = await this.db.query(`SELECT k.id, k.name, encode(k.hash, 'hex') AS hash, k.prefix, k.created_at, k.revoked_at,
        q.max_sandboxes, q.max_memory_mib, q.max_ttl_sec, q.max_exec_timeout_ms, q.max_snapshot_mib
      FROM api_keys k LEFT JOIN quotas q ON q.key_id = k.id ORDER BY k.created_at, k.id`);
    return rows.map((r) => ({ ...keyFromRow(r), hash: Buffer.from(String(r.hash), 'hex') }));
  }

  async revokeKey(id: string, at: Date): Promise<boolean> {
    const rows = await this.db.query('UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING id', [id, at.toISOString()]);
    return rows.length > 0;
  }

  async sandbox(id: string): Promise<SandboxRecord | undefined> {
    const [r] = await this.db.query('SELECT * FROM sandboxes WHERE id = $1', [id]);
    return r ? sandboxFromRow(r) : undefined;
  }

  async sandboxes(q: SandboxQuery): Promise<SandboxRecord[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    const param = (v: unknown): string => `$${params.push(v)}`;
    if (q.ownerKeyId === null) where.push('owner_key_id IS NULL');
    else if (q.ownerKeyId !== undefined) where.push(`owner_key_id = ${param(q.ownerKeyId)}`);
    if (q.node !== undefined) where.push(`node = ${param(q.node)}`);
    if (q.labels && Object.keys(q.labels).length) where.push(`labels @> ${param(JSON.stringify(q.labels))}::jsonb`);
    if (q.afterId !== undefined) {
      where.push(`(created_at, id) > (SELECT created_at, id FROM sandboxes WHERE id = ${param(q.afterId)})`);
    }
    const rows = await this.db.query(
      `SELECT * FROM sandboxes ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY created_at, id LIMIT ${param(q.limit)}`,
      params,
    );
    return rows.map(sandboxFromRow);
  }

  async events(sandboxId: string): Promise<SandboxEvent[]> {
    const rows = await this.db.query('SELECT sandbox_id, at, kind, data FROM sandbox_events WHERE sandbox_id = $1 ORDER BY seq', [sandboxId]);
    return rows.map((r) => ({ sandboxId: String(r.sandbox_id), at: date(r.at)!, kind: r.kind as SandboxEvent['kind'], data: r.data as Record<string, unknown> }));
  }

  async networkEvents(sandboxId: string, after: number, limit: number): Promise<NetworkEvent[]> {
    const rows = await this.db.query('SELECT event FROM network_events WHERE sandbox_id = $1 AND seq > $2 ORDER BY seq LIMIT $3', [sandboxId, after, limit]);
    return rows.map((r) => (typeof r.event === 'string' ? JSON.parse(r.event) : r.event) as NetworkEvent);
  }

  async usage(keyId: string): Promise<KeyUsage> {
    const [r] = await this.db.query('SELECT sandboxes_created, execs, exec_ms FROM key_usage WHERE key_id = $1', [keyId]);
    return { sandboxesCreated: Number(r?.sandboxes_created ?? 0), execs: Number(r?.execs ?? 0), execMs: Number(r?.exec_ms ?? 0) };
  }

  close(): Promise<void> {
    return this.db.close();
  }
}

/** Writes of one type, as one statement. */
async function applyRun(tx: SqlTx, run: StoreWrite[]): Promise<void> {
  const json = (rows: unknown[]): string => JSON.stringify(rows);
  switch (run[0]!.type) {
    case 'sandbox.created': {
      const rows = run
        .map((w) => (w as Extract<StoreWrite, { type: 'sandbox.created' }>).record)
        .map((r) => ({
          id: r.id,
          node: r.node,
          owner_key_id: r.ownerKeyId,
          backend: r.backend,
          pack: r.pack,
          cpus: r.cpus,
          memory_mib: r.memoryMib,
          disk_mib: r.diskMib,
          labels: r.labels,
          metadata: r.metadata,
          state: r.state,
          created_at: r.createdAt,
          expires_at: r.expiresAt,
        }));
      await tx.query(
        `INSERT INTO sandboxes (id, node, owner_key_id, backend, pack, cpus, memory_mib, disk_mib, labels, metadata, state, created_at, expires_at, updated_at)
        SELECT id, node, owner_key_id, backend, pack, cpus, memory_mib, disk_mib, labels, metadata, state, created_at, expires_at, created_at
        FROM jsonb_to_recordset($1::jsonb) AS x(id text, node text, owner_key_id text, backend text, pack text, cpus real, memory_mib integer,
          disk_mib integer, labels jsonb, metadata jsonb, state text, created_at timestamptz, expires_at timestamptz)
        ON CONFLICT (id) DO NOTHING`,
        [json(rows)],
      );
      return;
    }
    case 'sandbox.state': {
      // The last state of each sandbox in the batch (an UPDATE … FROM with one id twice picks either).
      const last = new Map(run.map((w) => w as Extract<StoreWrite, { type: 'sandbox.state' }>).map((w) => [w.id, { id: w.id, state: w.state, at: w.at }]));
      await tx.query(
        `UPDATE sandboxes s SET state = x.state, updated_at = x.at
        FROM jsonb_to_recordset($1::jsonb) AS x(id text, state text, at timestamptz) WHERE s.id = x.id AND s.ended_at IS NULL`,
        [json([...last.values()])],
      );
      return;
    }
    case 'snapshot.saved': {
      const rows = run
        .map((w) => (w as Extract<StoreWrite, { type: 'snapshot.saved' }>).record)
        .map((r) => ({
          name: r.name,
          node: r.node,
          owner_key_id: r.ownerKeyId,
          kind: r.kind,
          backend: r.backend,
          pack: r.pack,
          source_sandbox_id: r.sourceSandboxId,
          size_bytes: r.sizeBytes,
          created_at: r.createdAt,
        }));
      // A name is free again once its snapshot is deleted: the row is then reused.
      await tx.query(
        `INSERT INTO snapshots (name, node, owner_key_id, kind, backend, pack, source_sandbox_id, size_bytes, created_at)
        SELECT name, node, owner_key_id, kind, backend, pack, source_sandbox_id, size_bytes, created_at
        FROM jsonb_to_recordset($1::jsonb) AS x(name text, node text, owner_key_id text, kind text, backend text, pack text, source_sandbox_id text, size_bytes bigint, created_at timestamptz)
        ON CONFLICT (name) DO UPDATE SET node = EXCLUDED.node, owner_key_id = EXCLUDED.owner_key_id, kind = EXCLUDED.kind, backend = EXCLUDED.backend,
          pack = EXCLUDED.pack, source_sandbox_id = EXCLUDED.source_sandbox_id, size_bytes = EXCLUDED.size_bytes, created_at = EXCLUDED.created_at, deleted_at = NULL`,
        [json(rows)],
      );
      return;
    }
    case 'snapshot.deleted': {
      const rows = run.map((w) => w as Extract<StoreWrite, { type: 'snapshot.deleted' }>).map((w) => ({ name: w.name, at: w.at }));
      await tx.query(`UPDATE snapshots s SET deleted_at = x.at FROM jsonb_to_recordset($1::jsonb) AS x(name text, at timestamptz) WHERE s.name = x.name`, [json(rows)]);
      return;
    }
    case 'sandbox.ended': {
      const rows = run.map((w) => w as Extract<StoreWrite, { type: 'sandbox.ended' }>).map((w) => ({ id: w.id, state: w.state, at: w.at, reason: w.reason }));
      await tx.query(
        `UPDATE sandboxes s SET state = x.state, ended_at = x.at, updated_at = x.at, end_reason = x.reason
        FROM jsonb_to_recordset($1::jsonb) AS x(id text, state text, at timestamptz, reason text) WHERE s.id = x.id`,
        [json(rows)],
      );
      return;
    }
    case 'event': {
      const rows = run.map((w) => (w as Extract<StoreWrite, { type: 'event' }>).event).map((e) => ({ sandbox_id: e.sandboxId, at: e.at, kind: e.kind, data: e.data }));
      // WITH ORDINALITY keeps the batch's order in seq.
      await tx.query(
        `INSERT INTO sandbox_events (sandbox_id, at, kind, data)
        SELECT x.sandbox_id, x.at, x.kind, x.data FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(v, n),
          LATERAL jsonb_to_record(e.v) AS x(sandbox_id text, at timestamptz, kind text, data jsonb)
        WHERE EXISTS (SELECT 1 FROM sandboxes s WHERE s.id = x.sandbox_id) ORDER BY e.n`,
        [json(rows)],
      );
      return;
    }
    case 'network.event': {
      const rows = run.map((w) => w as Extract<StoreWrite, { type: 'network.event' }>).map((w) => ({ sandbox_id: w.sandboxId, seq: w.event.seq, at: w.event.at, event: w.event }));
      await tx.query(
        `INSERT INTO network_events (sandbox_id, seq, at, event)
        SELECT x.sandbox_id, x.seq, x.at, x.event FROM jsonb_to_recordset($1::jsonb) AS x(sandbox_id text, seq bigint, at timestamptz, event jsonb)
        WHERE EXISTS (SELECT 1 FROM sandboxes s WHERE s.id = x.sandbox_id)
        ON CONFLICT (sandbox_id, seq) DO NOTHING`,
        [json(rows)],
      );
      // The newest NETWORK_EVENTS_KEPT of each sandbox written to stay, as in memory.
      await tx.query(
        `DELETE FROM network_events n USING (
          SELECT sandbox_id, max(seq) AS top FROM jsonb_to_recordset($1::jsonb) AS x(sandbox_id text, seq bigint) GROUP BY sandbox_id
        ) t WHERE n.sandbox_id = t.sandbox_id AND n.seq <= t.top - $2`,
        [json(rows.map(({ sandbox_id, seq }) => ({ sandbox_id, seq }))), NETWORK_EVENTS_KEPT],
      );
      return;
    }
    case 'usage': {
      const rows = run.map((w) => w as Extract<StoreWrite, { type: 'usage' }>).map((w) => ({ key_id: w.keyId, c: w.usage.sandboxesCreated, e: w.usage.execs, ms: w.usage.execMs }));
      await tx.query(
        `INSERT INTO key_usage (key_id, sandboxes_created, execs, exec_ms, updated_at)
        SELECT key_id, c, e, ms, now() FROM jsonb_to_recordset($1::jsonb) AS x(key_id text, c bigint, e bigint, ms bigint)
        WHERE EXISTS (SELECT 1 FROM api_keys k WHERE k.id = x.key_id)
        ON CONFLICT (key_id) DO UPDATE SET sandboxes_created = key_usage.sandboxes_created + EXCLUDED.sandboxes_created,
          execs = key_usage.execs + EXCLUDED.execs, exec_ms = key_usage.exec_ms + EXCLUDED.exec_ms, updated_at = EXCLUDED.updated_at`,
        [json(rows)],
      );
      return;
    }
  }
}

function date(v: unknown): Date | undefined {
  if (v === null || v === undefined) return undefined;
  return v instanceof Date ? v : new Date(String(v));
}

function optionalInt(v: unknown): number | undefined {
  return v === null || v === undefined ? undefined : Number(v);
}

function keyFromRow(r: Row): ApiKeyRecord {
  const limits: KeyLimits = {};
  const set = (name: keyof KeyLimits, v: unknown): void => {
    const n = optionalInt(v);
    if (n !== undefined) limits[name] = n;
  };
  set('maxSandboxes', r.max_sandboxes);
  set('maxMemoryMib', r.max_memory_mib);
  set('maxTtlSec', r.max_ttl_sec);
  set('maxExecTimeoutMs', r.max_exec_timeout_ms);
  set('maxSnapshotMib', r.max_snapshot_mib);
  const revokedAt = date(r.revoked_at);
  return { id: String(r.id), name: String(r.name), prefix: String(r.prefix), createdAt: date(r.created_at)!, ...(revokedAt ? { revokedAt } : {}), limits };
}

function sandboxFromRow(r: Row): SandboxRecord {
  const endedAt = date(r.ended_at);
  return {
    id: String(r.id),
    node: String(r.node),
    ownerKeyId: r.owner_key_id === null ? null : String(r.owner_key_id),
    backend: String(r.backend),
    pack: String(r.pack),
    cpus: Number(r.cpus),
    memoryMib: Number(r.memory_mib),
    diskMib: Number(r.disk_mib),
    labels: r.labels as Record<string, string>,
    metadata: r.metadata as Record<string, unknown>,
    state: String(r.state),
    createdAt: date(r.created_at)!,
    expiresAt: date(r.expires_at)!,
    ...(endedAt ? { endedAt, endReason: String(r.end_reason) } : {}),
  };
}
