/**
 * Opens the store KILN_DATABASE_URL names and brings its schema up to date:
 *   unset                        PGlite under KILN_DATA_DIR/db (embedded: no server to run)
 *   postgres://… postgresql://…  a PostgreSQL server (several kiln nodes may share one)
 *   memory://                    PGlite in memory: kept for the life of the process only
 *   off                          no store: nothing kept, no API keys
 */
import { join } from 'node:path';
import { KilnError } from '../core/errors.js';
import type { Store } from '../core/store.js';
import { migrate } from './migrations.js';
import { openPostgres } from './sql.js';
import { SqlStore } from './sql-store.js';
import { openPgliteWorker } from './worker-store.js';

export interface OpenedStore {
  store: Store;
  /** Where it is, for the log (a server URL without its password). */
  where: string;
  migrated: number[];
}

export async function openStore(databaseUrl: string | undefined, dataDir: string): Promise<OpenedStore | undefined> {
  const url = databaseUrl?.trim() || undefined;
  if (url === 'off') return undefined;
  if (url === undefined || url === 'memory://') {
    // The embedded engine runs in a process of its own (see ./pglite-worker.ts).
    const where = url === undefined ? join(dataDir, 'db', 'pglite') : undefined;
    const { store, migrated } = await openPgliteWorker(where);
    return { store, where: where ?? 'memory', migrated };
  }
  if (!/^postgres(ql)?:\/\//.test(url)) {
    throw new KilnError('INVALID_REQUEST', 'KILN_DATABASE_URL must be postgres://…, memory:// or off (unset: an embedded database under KILN_DATA_DIR)');
  }
  const where = url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
  const db = await openPostgres(url);
  try {
    const migrated = await migrate(db);
    return { store: new SqlStore(db), where, migrated };
  } catch (e) {
    await db.close().catch(() => undefined);
    throw e;
  }
}
