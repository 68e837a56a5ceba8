/**
 * The Store of the embedded engine, seen from the main thread: each call is a message to the
 * PGlite thread (./pglite-worker.ts) and its answer. Errors come back with their KilnError code.
 */
import { Worker } from 'node:worker_threads';
import { ERROR_CATALOGUE, type ErrorCode, KilnError } from '../core/errors.js';
import type { KeyUsage, SandboxEvent, SandboxQuery, SandboxRecord, Store, StoredApiKey, StoreWrite } from '../core/store.js';
import type { WorkerAnswer, WorkerCall } from './pglite-worker.js';

function toError(a: { code?: string; message: string }): Error {
  return a.code && a.code in ERROR_CATALOGUE ? new KilnError(a.code as ErrorCode, a.message) : new Error(a.message);
}

/** Starts the thread, which opens PGlite in `dir` (in memory when undefined) and migrates it. */
export async function openPgliteWorker(dir: string | undefined): Promise<{ store: Store; migrated: number[] }> {
  // The compiled host (dist/) runs the .js file; the sources run through tsx, whose loader a worker
  // does not inherit from an --import of its parent: the worker registers it before loading the .ts.
  const ts = import.meta.url.endsWith('.ts');
  const entry = new URL(`./pglite-worker${ts ? '.ts' : '.js'}`, import.meta.url);
  const worker = ts
    ? new Worker(`import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(entry.href)}); });`, { eval: true, workerData: { dir } })
    : new Worker(entry, { workerData: { dir } });
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let next = 0;
  let dead: Error | undefined;
  const ready = new Promise<number[]>((resolve, reject) => {
    worker.on('message', (a: WorkerAnswer) => {
      if ('ready' in a) {
        if (a.ready) resolve(a.migrated);
        else reject(toError(a));
        return;
      }
      const p = pending.get(a.id);
      pending.delete(a.id);
      if (a.ok) p?.resolve(a.result);
      else p?.reject(toError(a));
    });
    const gone = (e: Error): void => {
      dead = e;
      reject(e);
      for (const p of pending.values()) p.reject(e);
      pending.clear();
    };
    worker.on('error', gone);
    worker.on('exit', (code) => gone(new KilnError('STORE_UNAVAILABLE', `the embedded database's thread stopped (exit code ${code})`)));
  });
  let migrated: number[];
  try {
    migrated = await ready;
  } catch (e) {
    await worker.terminate();
    throw e;
  }
  const call = <T>(method: WorkerCall['method'], ...args: unknown[]): Promise<T> => {
    if (dead) return Promise.reject(dead);
    const id = ++next;
    return new Promise<T>((resolve, reject) => {
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      worker.postMessage({ id, method, args } satisfies WorkerCall);
    });
  };
  const store: Store = {
    engine: 'pglite',
    apply: (writes: StoreWrite[]) => call('apply', writes),
    registerNode: (node: string, at: Date) => call('registerNode', node, at),
    insertKey: (key: StoredApiKey) => call('insertKey', key),
    listKeys: async () => (await call<StoredApiKey[]>('listKeys')).map((k) => ({ ...k, hash: Buffer.from(k.hash) })),
    revokeKey: (id: string, at: Date) => call('revokeKey', id, at),
    sandbox: (id: string) => call<SandboxRecord | undefined>('sandbox', id),
    sandboxes: (q: SandboxQuery) => call<SandboxRecord[]>('sandboxes', q),
    events: (sandboxId: string) => call<SandboxEvent[]>('events', sandboxId),
    usage: (keyId: string) => call<KeyUsage>('usage', keyId),
    async close() {
      if (dead) return;
      try {
        await call('close');
      } finally {
        worker.removeAllListeners('exit');
        dead = new KilnError('STORE_UNAVAILABLE', 'the store is closed');
        await worker.terminate();
      }
    },
  };
  return { store, migrated };
}
