/**
 * Per-stream flow control (docs/protocol.md, "Flow control"). Each direction of a stream starts
 * with a window of INITIAL_WINDOW_BYTES; a STDIN/STDOUT/STDERR/DATA/EOF frame costs its payload
 * plus FRAME_COST_BYTES; the receiver hands the cost back in WINDOW frames as it consumes. Host
 * memory per stream is thus bounded by the window, whatever the sandbox writes or the client sends.
 */
import { ProtocolError } from './frames.js';

export const INITIAL_WINDOW_BYTES = 1024 * 1024;
export const FRAME_COST_BYTES = 32;
/** Credit goes back in batches of at least this much (below the window: the sender never waits on a batch). */
export const GRANT_BATCH_BYTES = INITIAL_WINDOW_BYTES / 4;
export const MAX_WINDOW_INCREMENT = 0x7fff_ffff;

export function windowPayload(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n, 0);
  return b;
}

export function parseWindow(payload: Buffer): number {
  if (payload.length !== 4) throw new ProtocolError(`WINDOW payload must be 4 bytes, got ${payload.length}`);
  const n = payload.readUInt32BE(0);
  if (n === 0 || n > MAX_WINDOW_INCREMENT) throw new ProtocolError(`WINDOW increment ${n} out of range`);
  return n;
}

/** What this side may still send on one stream; senders wait here for the agent's credit. */
export class SendWindow {
  private avail = INITIAL_WINDOW_BYTES;
  private waiters: Array<() => void> = [];
  private ended = false;

  add(n: number): void {
    this.avail += n;
    this.wake();
  }

  /** The stream is over: every waiter is released (take() then answers 0). */
  end(): void {
    this.ended = true;
    this.wake();
  }

  /**
   * Waits until a frame with at least one payload byte fits (or `payloadBytes` is 0 and a bare
   * frame fits), reserves it and returns the payload bytes granted, at most `payloadBytes`;
   * -1 once the stream is over.
   */
  async take(payloadBytes: number): Promise<number> {
    const need = FRAME_COST_BYTES + (payloadBytes > 0 ? 1 : 0);
    while (!this.ended && this.avail < need) await new Promise<void>((r) => this.waiters.push(r));
    if (this.ended) return -1;
    const n = Math.min(payloadBytes, this.avail - FRAME_COST_BYTES);
    this.avail -= n + FRAME_COST_BYTES;
    return n;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const r of w) r();
  }
}

/** What the agent may still send us on one stream, and the credit we owe it back. */
export class RecvWindow {
  private avail = INITIAL_WINDOW_BYTES;
  private owed = 0;

  constructor(private readonly grant: (n: number) => void) {}

  /** Charges one frame; an agent that overruns its window has broken the protocol. */
  charge(payloadBytes: number): number {
    const cost = payloadBytes + FRAME_COST_BYTES;
    this.avail -= cost;
    if (this.avail < 0) throw new ProtocolError('agent overran the stream window');
    return cost;
  }

  /** The frame has been passed on: its cost goes back to the agent (in batches). */
  consumed(cost: number): void {
    this.owed += cost;
    if (this.owed < GRANT_BATCH_BYTES) return;
    const n = this.owed;
    this.owed = 0;
    this.avail += n;
    this.grant(n);
  }
}
