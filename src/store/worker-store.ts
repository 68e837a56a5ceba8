/**
 * The Store of the embedded engine, seen from the service: each call is a message to the PGlite
 * process (./pglite-worker.ts) and its answer. Errors come back with their KilnError code.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ERROR_CATALOGUE, type ErrorCode, KilnError } from '../core/errors.js';
import type { NetworkEvent } from '../core/network.js';
import type { KeyUsage, SandboxEvent, SandboxQuery, SandboxRecord, Store, StoredApiKey, StoreWrite } from '../core/store.js';
import type { WorkerAnswer, WorkerCall } from './pglite-worker.js';
import { lockPgliteDir } from './sql.js';

function toError(a: { code?: string; message: string }): Error {
  return a.code && a.code in ERROR_CATALOGUE ? new KilnError(a.code as ErrorCode, a.message) : new Error(a.message);
}

/** Starts the process, which opens PGlite in `dir` (in memory when undefined) and migrates it. */
export async function openPgliteWorker(dir: string | undefined): Promise<{ store: Store; migrated: number[] }> {
  // The lock is the service's (its pid), taken before the process starts and kept until it ended.
  const unlock = dir ? await lockPgliteDir(dir) : async () => undefined;
  // The compiled host (dist/) runs the .js file; the sources run through tsx's loader.
  const ts = import.meta.url.endsWith('.ts');
  const entry = new URL(`./pglite-worker${ts ? '.ts' : '.js'}`, import.meta.url);
  // Only the channel: no descriptor of the service's but stdout and stderr (for a crash's trace).
  const worker = fork(fileURLToPath(entry), [JSON.stringify({ dir })], {
    execArgv: ts ? ['--import', import.meta.resolve('tsx')] : [],
    serialization: 'advanced',
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  void exited.then(unlock, unlock);
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
    worker.on('exit', (code, signal) => gone(new KilnError('STORE_UNAVAILABLE', `the embedded database's process stopped (${signal ?? `exit code ${code}`})`)));
  });
  let migrated: number[];
  try {
    migrated = await ready;
  } catch (e) {
    worker.kill('SIGKILL');
    await exited;
    throw e;
  }
  const call = <T>(method: WorkerCall['method'], ...args: unknown[]): Promise<T> => {
    if (dead) return Promise.reject(dead);
    const id = ++next;
    return new Promise<T>((resolve, reject) => {
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      worker.send({ id, method, args } satisfies WorkerCall);
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
    networkEvents: (sandboxId: string, after: number, limit: number) => call<NetworkEvent[]>('networkEvents', sandboxId, after, limit),
    usage: (keyId: string) => call<KeyUsage>('usage', keyId),
    async close() {
      if (dead) return;
      try {
        await call('close');
      } finally {
        // It ends by itself once closed; one that does not within 5 s is killed.
        const timer = setTimeout(() => worker.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
        dead = new KilnError('STORE_UNAVAILABLE', 'the store is closed');
      }
    },
  };
  return { store, migrated };
}
