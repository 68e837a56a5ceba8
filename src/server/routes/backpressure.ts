/** Writing to a slow client without holding its backlog in memory. */
import type { Writable } from 'node:stream';

const drains = new WeakMap<Writable, Promise<void>>();

/**
 * Writes `chunk`; when the stream's buffer is full, the promise it returns settles once the
 * stream drains (or closes). Passed back as an output sink's result, it holds the sandbox's
 * program until the client has taken what it was sent.
 */
export function writeOrWait(w: Writable, chunk: string | Buffer): undefined | Promise<void> {
  if (w.destroyed || w.writableEnded) return undefined;
  if (w.write(chunk)) return undefined;
  // Writers that go on before the drain (a download's frames within its window) share one wait:
  // one listener set per writable, not one per chunk.
  let wait = drains.get(w);
  if (!wait) {
    wait = new Promise((resolve) => {
      const go = (): void => {
        w.off('drain', go);
        w.off('close', go);
        w.off('error', go);
        drains.delete(w);
        resolve();
      };
      w.on('drain', go);
      w.on('close', go);
      w.on('error', go);
    });
    drains.set(w, wait);
  }
  return wait;
}
