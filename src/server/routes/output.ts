/**
 * Output as the API sends it: UTF-8 text, decoded across chunk boundaries so that a character split
 * between two chunks arrives whole, or base64 (`"encoding":"base64"`) for bytes that are not text.
 */
import { StringDecoder } from 'node:string_decoder';
import type { ExecStreamHandlers } from '../../core/exec.js';
import type { OutputStream } from '../../protocol/agent-client.js';

export type OutputEncoding = 'utf8' | 'base64';

export function encodeOutput(buf: Buffer, encoding: OutputEncoding): string {
  return buf.toString(encoding);
}

/** One stream's chunks as strings; the bytes of an unfinished character wait for the next chunk. */
class StreamText {
  private readonly decoder?: StringDecoder;

  constructor(encoding: OutputEncoding) {
    if (encoding === 'utf8') this.decoder = new StringDecoder('utf8');
  }

  write(chunk: Buffer): string {
    return this.decoder ? this.decoder.write(chunk) : chunk.toString('base64');
  }

  /** Whatever is held back: bytes of a character that never finished (sent as U+FFFD). */
  end(): string {
    return this.decoder ? this.decoder.end() : '';
  }
}

type Emit = (event: Record<string, unknown>) => undefined | Promise<void>;

/**
 * Output handlers for a streaming exec that emit {"type":"stdout"|"stderr","data","encoding"}
 * and {"type":"truncated","stream","droppedBytes"} (what follows on that stream is its tail).
 * Call flush() before the final event: it sends what the decoders still hold.
 */
export function outputEvents(encoding: OutputEncoding, emit: Emit): { handlers: Required<Pick<ExecStreamHandlers, 'onStdout' | 'onStderr' | 'onTruncated'>>; flush(): void } {
  const text = { stdout: new StreamText(encoding), stderr: new StreamText(encoding) };
  const chunk = (stream: OutputStream, data: string): undefined | Promise<void> => (data === '' ? undefined : emit({ type: stream, data, encoding }));
  const end = (stream: OutputStream): void => { void chunk(stream, text[stream].end()); };
  return {
    handlers: {
      onStdout: (c) => chunk('stdout', text.stdout.write(c)),
      onStderr: (c) => chunk('stderr', text.stderr.write(c)),
      onTruncated: (stream, droppedBytes) => {
        end(stream);
        void emit({ type: 'truncated', stream, droppedBytes });
      },
    },
    flush: () => { end('stdout'); end('stderr'); },
  };
}
