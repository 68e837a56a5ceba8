/**
 * Bytes in JSON. Output as the API sends it: UTF-8 text, decoded across chunk boundaries so that a
 * character split between two chunks arrives whole, or base64 (`"encoding":"base64"`) for bytes
 * that are not text. Input (stdin) as text or, with `"stdinEncoding":"base64"`, exact bytes.
 */
import { StringDecoder } from 'node:string_decoder';
import { KilnError } from '../../core/errors.js';
import type { ExecStreamHandlers } from '../../core/exec.js';
import type { OutputStream } from '../../protocol/agent-client.js';

export type OutputEncoding = 'utf8' | 'base64';

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * A request's text field as bytes. Base64 is checked (Buffer.from would skip what it cannot read
 * and run the rest); line breaks and spaces, as base64(1) writes them, are allowed.
 */
export function decodeInput(field: string, value: string, encoding: OutputEncoding = 'utf8'): string | Buffer {
  if (encoding === 'utf8') return value;
  if (!BASE64.test(value.replace(/[ \t\r\n]/g, ''))) {
    throw new KilnError(
      'INVALID_REQUEST',
      `"${field}" is not valid base64 (${value.length} characters; use A-Z a-z 0-9 + / with = padding to a multiple of 4), or send it as text with "${field}Encoding": "utf8"`,
      { details: { field } },
    );
  }
  return Buffer.from(value, 'base64');
}

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
  const end = (stream: OutputStream): void => {
    void chunk(stream, text[stream].end());
  };
  return {
    handlers: {
      onStdout: (c) => chunk('stdout', text.stdout.write(c)),
      onStderr: (c) => chunk('stderr', text.stderr.write(c)),
      onTruncated: (stream, droppedBytes) => {
        end(stream);
        void emit({ type: 'truncated', stream, droppedBytes });
      },
    },
    flush: () => {
      end('stdout');
      end('stderr');
    },
  };
}
