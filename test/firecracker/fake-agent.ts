/**
 * A minimal guest agent speaking protocol v1 on any socket: hello (with or without a sync riding
 * on it), ping, sync. Records requests. `helloSync: false` acts as an agent that predates it.
 */
import type { Socket } from 'node:net';
import { decodeJson, encodeJsonFrame, FrameDecoder, FrameType } from '../../src/protocol/frames.js';

export interface FakeAgentLog {
  ops: string[];
  syncs: Array<{ wallClockMs: number; entropyBytes: number; onHello: boolean }>;
  helloSync?: boolean;
}

export function serveFakeAgent(socket: Socket, log: FakeAgentLog): void {
  const decoder = new FrameDecoder();
  socket.on('data', (chunk: Buffer) => {
    for (const f of decoder.push(chunk)) {
      if (f.type !== FrameType.REQUEST) continue;
      type Sync = { wallClockMs?: number; entropy?: string };
      const req = decodeJson(f) as { op: string; sync?: Sync } & Sync;
      log.ops.push(req.op);
      const reply = (v: unknown): void => { socket.write(encodeJsonFrame(FrameType.RESULT, f.stream, v)); };
      const record = (s: Sync, onHello: boolean): void => {
        log.syncs.push({ wallClockMs: s.wallClockMs ?? 0, entropyBytes: Buffer.from(s.entropy ?? '', 'base64').length, onHello });
      };
      if (req.op === 'hello') {
        const synced = req.sync && log.helloSync !== false;
        if (synced) record(req.sync!, true);
        reply({ version: 1, agent: 'fake-agent/0', pid: 1, transport: 'vsock', uid: 0, bootMs: 1, ...(synced ? { sync: { reseeded: true, clockSet: true } } : {}) });
      } else if (req.op === 'ping') reply({ nowMs: Date.now() });
      else if (req.op === 'sync') {
        record(req, false);
        reply({ reseeded: true, clockSet: true });
      } else socket.write(encodeJsonFrame(FrameType.ERROR, f.stream, { code: 'BAD_REQUEST', message: `fake agent: no ${req.op}` }));
    }
  });
  socket.on('error', () => undefined);
}
