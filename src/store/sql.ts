/**
 * The two engines behind one small client: PGlite (PostgreSQL compiled to WebAssembly, in this
 * process, its files under KILN_DATA_DIR) and a PostgreSQL server (node-postgres pool). Both speak
 * the same SQL; what differs (how a transaction is held, how 64-bit integers come back) stops here
 * or in SqlStore's row mapping. Each engine's package is loaded only when it is used.
 */
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Pool } from 'pg';
import { KilnError } from '../core/errors.js';
import { InstanceLock } from '../core/instance-lock.js';

export interface SqlTx {
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  /** Several statements, no parameters (migrations). */
  exec(sql: string): Promise<void>;
}

export interface SqlClient extends SqlTx {
  readonly engine: 'pglite' | 'postgres';
  transaction<T>(fn: (tx: SqlTx) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** PGlite in `dir` (created if missing), or in memory when `dir` is undefined. */
export async function openPglite(dir: string | undefined, o: { lockName?: string } = {}): Promise<SqlClient> {
  const unlock = dir ? await lockPgliteDir(dir, o.lockName) : async () => undefined;
  try {
    const { PGlite } = await import('@electric-sql/pglite');
    const db = await PGlite.create(dir ? { dataDir: dir } : {});
    const tx = (t: { query: typeof db.query; exec: typeof db.exec }): SqlTx => ({
      query: async <T>(sql: string, params?: unknown[]) => (await t.query<T>(sql, params)).rows,
      exec: async (sql: string) => {
        await t.exec(sql);
      },
    });
    return {
      engine: 'pglite',
      ...tx(db),
      transaction: (fn) => db.transaction((t) => fn(tx(t))),
      async close() {
        try {
          await db.close();
        } finally {
          await unlock();
        }
      },
    };
  } catch (e) {
    await unlock();
    throw e;
  }
}

/** A PostgreSQL server, e.g. postgres://user:pass@host/db or postgres:///db?host=/run/postgresql. */
export async function openPostgres(url: string): Promise<SqlClient> {
  const { default: pg } = await import('pg');
  const pool = new pg.Pool({ connectionString: url, max: 4, connectionTimeoutMillis: 10_000 });
  // An idle client's error (the server restarted) must not end the process; the next query reconnects.
  pool.on('error', () => undefined);
  const run = (c: { query: Pool['query'] }): SqlTx => ({
    query: async <T>(sql: string, params?: unknown[]) => (await c.query(sql, params)).rows as T[],
    exec: async (sql: string) => {
      await c.query(sql);
    },
  });
  try {
    await pool.query('SELECT 1');
  } catch (e) {
    await pool.end().catch(() => undefined);
    throw new KilnError('STORE_UNAVAILABLE', `cannot reach the PostgreSQL server of KILN_DATABASE_URL: ${(e as Error).message}`, { cause: e });
  }
  return {
    engine: 'postgres',
    ...run(pool),
    async transaction(fn) {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        const out = await fn(run(client));
        await client.query('COMMIT');
        return out;
      } catch (e) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw e;
      } finally {
        client.release();
      }
    },
    close: () => pool.end(),
  };
}

/**
 * One process per embedded database: PGlite has no server to arbitrate, and two processes writing
 * the same files would corrupt them. The lock names its holder by pid and start time, so a lock
 * whose process is gone (or whose pid was reused) is stale and taken over (core/instance-lock.ts).
 */
export async function lockPgliteDir(dir: string, lockName = 'lock'): Promise<() => Promise<void>> {
  await mkdir(dirname(dir), { recursive: true, mode: 0o700 });
  const lock = await InstanceLock.acquireFile(`${dir}.${lockName}`, {
    mode: 0o600,
    refuse: (holder) =>
      new KilnError(
        'STORE_UNAVAILABLE',
        holder === undefined
          ? `could not lock the embedded database ${dir}`
          : holder.pid === process.pid
            ? `the embedded database ${dir} is already open in this process`
            : `the embedded database ${dir} is in use by process ${holder.pid} (another kiln service?); stop it, or give this one its own KILN_DATA_DIR or KILN_DATABASE_URL`,
      ),
  });
  return () => lock.release();
}
