/**
 * The embedded engine's thread. PGlite runs PostgreSQL as WebAssembly on the thread that calls
 * it: on the service's main thread every flush of the journal would stall requests for as long as
 * its transaction runs (measured: exec and /v1/run p50 +50%). Here it has a thread of its own; the
 * main thread talks to it through WorkerStore (./worker-store.ts) with messages.
 */
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
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

const port = parentPort!;
// Lowest CPU priority for this thread only (on Linux setpriority with pid 0 applies to the calling
// thread): a flush yields the CPU to the request path and the sandboxes rather than competing.
try {
  setPriority(19);
} catch {
  /* not permitted: run at the normal priority */
}
const fail = (e: unknown) => ({ code: isKilnError(e) ? e.code : undefined, message: e instanceof Error ? e.message : String(e) });

try {
  const db = await openPglite((workerData as { dir?: string }).dir);
  let store: SqlStore;
  try {
    const migrated = await migrate(db);
    store = new SqlStore(db);
    port.postMessage({ ready: true, migrated } satisfies WorkerAnswer);
  } catch (e) {
    await db.close().catch(() => undefined);
    throw e;
  }
  port.on('message', (call: WorkerCall) => {
    const args = call.args;
    // A Buffer crosses threads as a plain Uint8Array.
    if (call.method === 'insertKey') (args[0] as StoredApiKey).hash = Buffer.from((args[0] as StoredApiKey).hash);
    const fn = store[call.method] as (...a: unknown[]) => Promise<unknown>;
    fn.apply(store, args).then(
      (result) => port.postMessage({ id: call.id, ok: true, result } satisfies WorkerAnswer),
      (e: unknown) => port.postMessage({ id: call.id, ok: false, ...fail(e) } satisfies WorkerAnswer),
    );
  });
} catch (e) {
  port.postMessage({ ready: false, ...fail(e) } satisfies WorkerAnswer);
}
