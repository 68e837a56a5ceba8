/** Writing to a slow client without holding its backlog in memory. */
import type { Writable } from 'node:stream';

/**
 * Writes `chunk`; when the stream's buffer is full, the promise it returns settles once the
 * stream drains (or closes). Passed back as an output sink's result, it holds the sandbox's
 * program until the client has taken what it was sent.
 */
export function writeOrWait(w: Writable, chunk: string | Buffer): undefined | Promise<void> {
  if (w.destroyed || w.writableEnded) return undefined;
  if (w.write(chunk)) return undefined;
  return new Promise((resolve) => {
    const go = (): void => {
      w.off('drain', go);
      w.off('close', go);
      w.off('error', go);
      resolve();
    };
    w.on('drain', go);
    w.on('close', go);
    w.on('error', go);
  });
}
