/**
 * The embedded engine's process. PGlite runs PostgreSQL as WebAssembly on the thread that calls
 * it: on the service's main thread every flush of the journal would stall requests for as long as
 * its transaction runs (measured: exec and /v1/run p50 +50%). It is a child process rather than
 * a worker thread because of its memory: some 500 MB of WebAssembly heap in the service's own
 * address space made every fork the service does (one per sandbox: bwrap, QEMU) copy its page
 * tables, ~5 ms of service CPU per one-shot run (bench/tput.ts). The service talks to it through
 * ./worker-store.ts with IPC messages; it ends with the service (its IPC channel closing).
 */
import { setPriority } from 'node:os';
import { isKilnError } from '../core/errors.js';
import type { Store, StoredApiKey } from '../core/store.js';
import { migrate } from './migrations.js';
import { openPglite } from './sql.js';
import { SqlStore } from './sql-store.js';

export interface WorkerCall {
  id: number;
  method: keyof Store;
  args: unknown[];
}

export type WorkerAnswer =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; code?: string; message: string }
  | { ready: true; migrated: number[] }
  | { ready: false; code?: string; message: string };

const send = (a: WorkerAnswer): void => {
  process.send?.(a);
};
// The service is gone (or closed the channel): end at once, as the thread ended with it before.
process.on('disconnect', () => process.exit(0));
// Lowest CPU priority: a flush yields the CPU to the request path and the sandboxes.
try {
  setPriority(19);
} catch {
  /* not permitted: run at the normal priority */
}
const fail = (e: unknown) => ({ code: isKilnError(e) ? e.code : undefined, message: e instanceof Error ? e.message : String(e) });

try {
  const { dir } = JSON.parse(process.argv[2] ?? '{}') as { dir?: string };
  // The service holds the directory's lock (naming the service); this process holds one of its
  // own, so a service started after this one's died cannot open the files while it still runs.
  const db = await openPglite(dir, { lockName: 'engine.lock' });
  let store: SqlStore;
  try {
    const migrated = await migrate(db);
    store = new SqlStore(db);
    send({ ready: true, migrated });
  } catch (e) {
    await db.close().catch(() => undefined);
    throw e;
  }
  process.on('message', (call: WorkerCall) => {
    const args = call.args;
    // A Buffer crosses the channel as a plain Uint8Array.
    if (call.method === 'insertKey') (args[0] as StoredApiKey).hash = Buffer.from((args[0] as StoredApiKey).hash);
    const fn = store[call.method] as (...a: unknown[]) => Promise<unknown>;
    fn.apply(store, args).then(
      (result) => {
        send({ id: call.id, ok: true, result });
        // Closed: the channel goes too, and the process ends.
        if (call.method === 'close') process.disconnect();
      },
      (e: unknown) => send({ id: call.id, ok: false, ...fail(e) }),
    );
  });
} catch (e) {
  send({ ready: false, ...fail(e) });
}
