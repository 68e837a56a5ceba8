/**
 * Creates under way in a backend, so its close() can see them through: once closing, no new
 * create starts (SHUTTING_DOWN), the ones under way are aborted (their signal fires), and close()
 * waits until they have unwound or registered their sandbox. A create that finished after close()
 * used to leave its sandbox (a process, a VM, cgroups) running past the service.
 */
import type { CreateOptions } from './backend.js';
import { KilnError } from './errors.js';

export class CreatesInFlight {
  private readonly running = new Set<Promise<unknown>>();
  private readonly stop = new AbortController();

  /** `backend` names the backend in the SHUTTING_DOWN message. */
  constructor(private readonly backend: string) {}

  get closing(): boolean {
    return this.stop.signal.aborted;
  }

  /** Runs `start` with a signal that also fires when close() begins. */
  run<T>(options: CreateOptions, start: (options: CreateOptions) => Promise<T>): Promise<T> {
    if (this.closing) return Promise.reject(this.shuttingDown());
    const signal = options.signal ? AbortSignal.any([options.signal, this.stop.signal]) : this.stop.signal;
    const p = start({ ...options, signal });
    this.running.add(p);
    void p.finally(() => this.running.delete(p)).catch(() => undefined);
    return p;
  }

  /** Refuses new creates, aborts those under way, and waits until they have settled. */
  async close(): Promise<void> {
    if (!this.closing) this.stop.abort(this.shuttingDown());
    await Promise.allSettled([...this.running]);
  }

  private shuttingDown(): KilnError {
    return new KilnError('SHUTTING_DOWN', `the ${this.backend} backend is shutting down; retry on the restarted service`);
  }
}
