/**
 * The schema, as numbered migrations: append a new one, never edit one that has shipped. One SQL
 * dialect (PostgreSQL) for both engines. Applied at start, in one transaction, under an advisory
 * lock (nodes sharing one server may start together); a database that has a version this code
 * does not know was written by a newer kiln and is refused.
 *
 * Several nodes can share one PostgreSQL: every sandbox row names its node, `nodes` records who is
 * alive, and `leases` is where a node will claim work that must be done once (a sandbox it adopts,
 * the orphan scan); keys, quotas and usage are global.
 */
import { KilnError } from '../core/errors.js';
import type { SqlClient } from './sql.js';

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'sandboxes, events, keys, quotas, usage, nodes, leases',
    sql: `
      CREATE TABLE nodes (
        id text PRIMARY KEY,
        started_at timestamptz NOT NULL,
        heartbeat_at timestamptz NOT NULL
      );
      CREATE TABLE leases (
        name text PRIMARY KEY,
        node text NOT NULL,
        expires_at timestamptz NOT NULL
      );
      CREATE TABLE api_keys (
        id text PRIMARY KEY,
        name text NOT NULL,
        hash bytea NOT NULL UNIQUE,
        prefix text NOT NULL,
        created_at timestamptz NOT NULL,
        revoked_at timestamptz
      );
      CREATE TABLE quotas (
        key_id text PRIMARY KEY REFERENCES api_keys (id) ON DELETE CASCADE,
        max_sandboxes integer,
        max_memory_mib integer,
        max_ttl_sec integer,
        max_exec_timeout_ms integer
      );
      CREATE TABLE key_usage (
        key_id text PRIMARY KEY REFERENCES api_keys (id) ON DELETE CASCADE,
        sandboxes_created bigint NOT NULL DEFAULT 0,
        execs bigint NOT NULL DEFAULT 0,
        exec_ms bigint NOT NULL DEFAULT 0,
        updated_at timestamptz NOT NULL
      );
      CREATE TABLE sandboxes (
        id text PRIMARY KEY,
        node text NOT NULL,
        owner_key_id text REFERENCES api_keys (id),
        backend text NOT NULL,
        pack text NOT NULL,
        cpus real NOT NULL,
        memory_mib integer NOT NULL,
        disk_mib integer NOT NULL,
        labels jsonb NOT NULL DEFAULT '{}',
        metadata jsonb NOT NULL DEFAULT '{}',
        state text NOT NULL,
        created_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        ended_at timestamptz,
        end_reason text
      );
      CREATE INDEX sandboxes_owner ON sandboxes (owner_key_id, created_at, id);
      CREATE INDEX sandboxes_node_state ON sandboxes (node, state);
      CREATE INDEX sandboxes_labels ON sandboxes USING gin (labels);
      CREATE TABLE sandbox_events (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        sandbox_id text NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
        at timestamptz NOT NULL,
        kind text NOT NULL,
        data jsonb NOT NULL DEFAULT '{}'
      );
      CREATE INDEX sandbox_events_sandbox ON sandbox_events (sandbox_id, seq);
    `,
  },
  {
    version: 2,
    name: 'snapshots, the snapshot quota',
    sql: `
      ALTER TABLE quotas ADD COLUMN max_snapshot_mib integer;
      CREATE TABLE snapshots (
        name text PRIMARY KEY,
        node text NOT NULL,
        owner_key_id text REFERENCES api_keys (id),
        kind text NOT NULL,
        backend text NOT NULL,
        pack text NOT NULL,
        source_sandbox_id text,
        size_bytes bigint NOT NULL,
        created_at timestamptz NOT NULL,
        deleted_at timestamptz
      );
      CREATE INDEX snapshots_owner ON snapshots (owner_key_id, created_at);
    `,
  },
  {
    version: 3,
    name: 'network audit trail',
    sql: `
      CREATE TABLE network_events (
        sandbox_id text NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
        seq bigint NOT NULL,
        at timestamptz NOT NULL,
        event jsonb NOT NULL,
        PRIMARY KEY (sandbox_id, seq)
      );
    `,
  },
];

/** Any fixed number: serialises migrations of nodes that start at once on one server. */
const LOCK_ID = 0x6b696c6e; // "kiln"

/** Brings the schema up to the newest migration; returns the versions applied (none: already current). */
export async function migrate(db: SqlClient, migrations: readonly Migration[] = MIGRATIONS): Promise<number[]> {
  const known = migrations.reduce((m, x) => Math.max(m, x.version), 0);
  return db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [LOCK_ID]);
    await tx.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    const rows = await tx.query<{ version: number }>('SELECT version FROM schema_migrations ORDER BY version');
    const applied = new Set(rows.map((r) => Number(r.version)));
    const newest = Math.max(0, ...applied);
    if (newest > known) {
      throw new KilnError(
        'STORE_UNAVAILABLE',
        `the database's schema is at version ${newest}, newer than this kiln knows (${known}): it was written by a newer kiln. Run that version, or point KILN_DATABASE_URL / KILN_DATA_DIR at another database`,
      );
    }
    const done: number[] = [];
    for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
      if (applied.has(m.version)) continue;
      await tx.exec(m.sql);
      await tx.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
      done.push(m.version);
    }
    return done;
  });
}
