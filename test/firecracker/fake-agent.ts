/** A minimal guest agent speaking protocol v1 on any socket: hello, ping, sync. Records requests. */
import type { Socket } from 'node:net';
import { decodeJson, encodeJsonFrame, FrameDecoder, FrameType } from '../../src/protocol/frames.js';

export interface FakeAgentLog {
  ops: string[];
  syncs: Array<{ wallClockMs: number; entropyBytes: number }>;
}

export function serveFakeAgent(socket: Socket, log: FakeAgentLog): void {
  const decoder = new FrameDecoder();
  socket.on('data', (chunk: Buffer) => {
    for (const f of decoder.push(chunk)) {
      if (f.type !== FrameType.REQUEST) continue;
      const req = decodeJson(f) as { op: string; wallClockMs?: number; entropy?: string };
      log.ops.push(req.op);
      const reply = (v: unknown): void => { socket.write(encodeJsonFrame(FrameType.RESULT, f.stream, v)); };
      if (req.op === 'hello') reply({ version: 1, agent: 'fake-agent/0', pid: 1, transport: 'vsock', uid: 0, bootMs: 1 });
      else if (req.op === 'ping') reply({ nowMs: Date.now() });
      else if (req.op === 'sync') {
        log.syncs.push({ wallClockMs: req.wallClockMs ?? 0, entropyBytes: Buffer.from(req.entropy ?? '', 'base64').length });
        reply({ reseeded: true, clockSet: true });
      } else socket.write(encodeJsonFrame(FrameType.ERROR, f.stream, { code: 'BAD_REQUEST', message: `fake agent: no ${req.op}` }));
    }
  });
  socket.on('error', () => undefined);
}
