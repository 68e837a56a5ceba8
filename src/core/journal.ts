/**
 * The write queue between the lifecycle and the store. record() only appends to an array: a
 * pooled acquire or an exec never waits for a database. A flush runs shortly after the first
 * write of a batch (or at once when the batch is full), applies every queued write in one
 * transaction, and merges usage counters so a busy key costs one row update per flush. A failed
 * flush keeps its writes and retries with backoff; past MAX_QUEUED writes the oldest are dropped
 * and counted (the running process stays right either way: memory is authoritative).
 */
import type { KeyUsage, Store, StoreWrite } from './store.js';

export interface JournalOptions {
  /** Wait this long after the first queued write before flushing (more writes join the batch). */
  flushDelayMs?: number;
  /** Flush at once when this many writes are queued. */
  batchSize?: number;
  log?: (msg: string, fields?: Record<string, unknown>) => void;
}

const MAX_QUEUED = 100_000;
const MAX_BACKOFF_MS = 30_000;

export class Journal {
  private queue: StoreWrite[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private failures = 0;
  private closed = false;
  /** Writes dropped because the store was unreachable for too long. */
  dropped = 0;
  private readonly delayMs: number;
  private readonly batchSize: number;

  constructor(
    readonly store: Store,
    private readonly o: JournalOptions = {},
  ) {
    this.delayMs = o.flushDelayMs ?? 250;
    this.batchSize = o.batchSize ?? 500;
  }

  record(w: StoreWrite): void {
    if (this.closed) return;
    this.queue.push(w);
    if (this.queue.length > MAX_QUEUED) {
      const n = this.queue.length - MAX_QUEUED;
      this.queue.splice(0, n);
      this.dropped += n;
    }
    if (this.queue.length >= this.batchSize) this.schedule(0);
    else this.schedule(this.delayMs);
  }

  private schedule(ms: number): void {
    if (this.flushing) return; // the running flush schedules the next one
    if (this.timer && ms > 0) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush().catch(() => undefined);
    }, ms);
    this.timer.unref();
  }

  /** Applies everything queued so far; resolves when it is in the store (rejects if the store fails). */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing.catch(() => undefined);
    if (this.queue.length === 0) return;
    const batch = this.queue;
    this.queue = [];
    const run = this.store.apply(mergeUsage(batch));
    this.flushing = run;
    try {
      await run;
      this.failures = 0;
    } catch (e) {
      this.failures++;
      this.queue = batch.concat(this.queue); // keep order: the failed batch goes first next time
      this.o.log?.('store write failed; will retry', { err: e instanceof Error ? e.message : String(e), queued: this.queue.length, attempt: this.failures });
      throw e;
    } finally {
      this.flushing = undefined;
      if (this.queue.length && !this.closed) this.schedule(this.failures ? Math.min(MAX_BACKOFF_MS, 100 * 2 ** this.failures) : this.delayMs);
    }
  }

  get pending(): number {
    return this.queue.length;
  }

  /** Flushes what is queued (one last try) and stops taking writes. */
  async close(): Promise<void> {
    clearTimeout(this.timer);
    await this.flush().catch(() => undefined);
    this.closed = true;
    clearTimeout(this.timer);
    if (this.queue.length) this.o.log?.('store writes lost at shutdown', { lost: this.queue.length });
  }
}

/** One usage write per key per batch, at the place of that key's last one (after its sandbox rows). */
function mergeUsage(batch: StoreWrite[]): StoreWrite[] {
  const totals = new Map<string, KeyUsage>();
  const out: StoreWrite[] = [];
  for (const w of batch) {
    if (w.type !== 'usage') {
      out.push(w);
      continue;
    }
    const t = totals.get(w.keyId);
    if (t) {
      t.sandboxesCreated += w.usage.sandboxesCreated;
      t.execs += w.usage.execs;
      t.execMs += w.usage.execMs;
    } else {
      totals.set(w.keyId, { ...w.usage });
    }
  }
  for (const [keyId, usage] of totals) out.push({ type: 'usage', keyId, usage });
  return out;
}
