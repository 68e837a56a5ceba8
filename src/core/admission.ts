/**
 * Admission control: at most `capacity` sandboxes exist at once. Creates beyond it wait in a
 * bounded FIFO queue until a slot frees or their deadline passes; a full queue answers 429 at
 * once, a missed deadline 503. Both carry Retry-After.
 */
import { KilnError } from './errors.js';

export interface AdmissionOptions {
  capacity: number;
  queueLength: number;
  queueTimeoutMs: number;
}

interface Waiter {
  resolve: (release: () => void) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class Admission {
  private inUse = 0;
  private readonly queue: Waiter[] = [];
  private closed = false;

  constructor(private readonly o: AdmissionOptions) {}

  get stats(): { inUse: number; capacity: number; queued: number } {
    return { inUse: this.inUse, capacity: this.o.capacity, queued: this.queue.length };
  }

  /** A slot now if one is free, else undefined (a sandbox reattached at start takes one when it can). */
  tryAcquire(): (() => void) | undefined {
    if (this.closed || this.inUse >= this.o.capacity) return undefined;
    this.inUse++;
    return this.releaser();
  }

  /** Resolves with a release function once a slot is held. Call release exactly once. */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (this.closed) return Promise.reject(new KilnError('SHUTTING_DOWN', 'kiln is shutting down; retry against another instance or later', { retryAfterSec: 5 }));
    if (this.inUse < this.o.capacity) {
      this.inUse++;
      return Promise.resolve(this.releaser());
    }
    if (this.queue.length >= this.o.queueLength) {
      return Promise.reject(
        new KilnError('AT_CAPACITY', `host is at capacity (${this.o.capacity} sandboxes) and ${this.queue.length} creates are already waiting; retry later or delete idle sandboxes`, {
          retryAfterSec: 1,
        }),
      );
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.drop(waiter);
          reject(
            new KilnError('QUEUE_TIMEOUT', `no sandbox slot freed within ${this.o.queueTimeoutMs} ms (capacity ${this.o.capacity}); retry later`, {
              retryAfterSec: Math.max(1, Math.ceil(this.o.queueTimeoutMs / 1000)),
            }),
          );
        }, this.o.queueTimeoutMs),
      };
      signal?.addEventListener(
        'abort',
        () => {
          if (this.drop(waiter)) reject(new KilnError('TIMEOUT', 'create was abandoned while waiting for capacity'));
        },
        { once: true },
      );
      this.queue.push(waiter);
    });
  }

  private drop(w: Waiter): boolean {
    const i = this.queue.indexOf(w);
    if (i < 0) return false;
    this.queue.splice(i, 1);
    clearTimeout(w.timer);
    return true;
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.queue.shift();
      if (next) {
        clearTimeout(next.timer);
        next.resolve(this.releaser()); // hand the slot over without freeing it
      } else {
        this.inUse--;
      }
    };
  }

  close(): void {
    this.closed = true;
    for (const w of this.queue.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new KilnError('SHUTTING_DOWN', 'kiln is shutting down', { retryAfterSec: 5 }));
    }
  }
}
