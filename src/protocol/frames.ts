/** Frame codec for protocol v2 (docs/protocol.md). Pure: no I/O. */
export const FrameType = {
  REQUEST: 0x01,
  RESULT: 0x02,
  ERROR: 0x03,
  EVENT: 0x04,
  STDIN: 0x05,
  STDOUT: 0x06,
  STDERR: 0x07,
  DATA: 0x08,
  EOF: 0x09,
  CONTROL: 0x0a,
  CANCEL: 0x0b,
  WINDOW: 0x0c,
} as const;
export type FrameTypeCode = (typeof FrameType)[keyof typeof FrameType];

export const HEADER_BYTES = 9;
export const MAX_PAYLOAD_BYTES = 1024 * 1024;
export const MAX_JSON_BYTES = 256 * 1024;
const KNOWN_TYPES = new Set<number>(Object.values(FrameType));

export interface Frame {
  type: FrameTypeCode;
  stream: number;
  payload: Buffer;
}

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

export function encodeFrame(type: FrameTypeCode, stream: number, payload: Buffer = EMPTY): Buffer {
  if (payload.length > MAX_PAYLOAD_BYTES) throw new ProtocolError(`frame payload ${payload.length} bytes exceeds ${MAX_PAYLOAD_BYTES}`);
  const header = Buffer.allocUnsafe(HEADER_BYTES);
  header.writeUInt32BE(payload.length, 0);
  header.writeUInt8(type, 4);
  header.writeUInt32BE(stream >>> 0, 5);
  return payload.length === 0 ? header : Buffer.concat([header, payload], HEADER_BYTES + payload.length);
}

export function encodeJsonFrame(type: FrameTypeCode, stream: number, value: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(value));
  if (body.length > MAX_JSON_BYTES) throw new ProtocolError(`JSON payload ${body.length} bytes exceeds ${MAX_JSON_BYTES}`);
  return encodeFrame(type, stream, body);
}

const EMPTY = Buffer.alloc(0);

/**
 * Incremental decoder: push chunks as they arrive, get whole frames out. Throws ProtocolError on an
 * oversized length or unknown type; the caller must then drop the connection (no resync exists).
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  push(chunk: Buffer): Frame[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const frames: Frame[] = [];
    for (;;) {
      if (this.buffered < HEADER_BYTES) break;
      const head = this.peek(HEADER_BYTES);
      const length = head.readUInt32BE(0);
      const type = head.readUInt8(4);
      if (length > MAX_PAYLOAD_BYTES) throw new ProtocolError(`frame length ${length} exceeds ${MAX_PAYLOAD_BYTES}`);
      if (!KNOWN_TYPES.has(type)) throw new ProtocolError(`unknown frame type 0x${type.toString(16)}`);
      if (this.buffered < HEADER_BYTES + length) break;
      const whole = this.take(HEADER_BYTES + length);
      frames.push({ type: type as FrameTypeCode, stream: whole.readUInt32BE(5), payload: whole.subarray(HEADER_BYTES) });
    }
    return frames;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0]!.subarray(0, n);
  }

  private take(n: number): Buffer {
    if (this.chunks[0]!.length < n) this.chunks = [Buffer.concat(this.chunks)];
    const first = this.chunks[0]!;
    const out = first.subarray(0, n);
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
    return out;
  }
}

export function decodeJson(frame: Frame): unknown {
  if (frame.payload.length > MAX_JSON_BYTES) throw new ProtocolError(`JSON payload ${frame.payload.length} bytes exceeds ${MAX_JSON_BYTES}`);
  try {
    return JSON.parse(frame.payload.toString('utf8'));
  } catch {
    throw new ProtocolError(`frame type 0x${frame.type.toString(16)} on stream ${frame.stream} carries invalid JSON`);
  }
}
