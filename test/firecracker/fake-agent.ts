/**
 * A minimal guest agent speaking protocol v2 on any socket: hello (with or without a sync riding
 * on it), ping, sync, and what a template's warm-up uses (fs.list, file.write, exec) over a tiny
 * in-memory view of /tmp and /workspace. Records requests. `helloSync: false` acts as an agent
 * that predates hello-sync.
 */
import type { Socket } from 'node:net';
import { decodeJson, encodeFrame, encodeJsonFrame, FrameDecoder, FrameType, type FrameTypeCode } from '../../src/protocol/frames.js';

export interface FakeAgentLog {
  ops: string[];
  syncs: Array<{ wallClockMs: number; entropyBytes: number; onHello: boolean }>;
  /** argv of every exec. */
  execs?: string[][];
  helloSync?: boolean;
  /** Top-level names in /tmp and /workspace, as the guest would list them. */
  files?: Map<string, Set<string>>;
  /** The guest kernel's OOM kill count (`oom_kill` in its /proc/vmstat). */
  oomKills?: number;
}

/**
 * Execs the fake guest treats specially: FAKE_OOM ends SIGKILLed by the guest's OOM killer (the
 * guest's oom_kill count goes up), FAKE_SIGKILL ends SIGKILLed by anyone else.
 */
export const FAKE_OOM = 'fake-use-all-memory';
export const FAKE_SIGKILL = 'fake-kill-9';

/** What the fake's exec of anything but `rm` leaves behind (a tool's cache, say). */
export const FAKE_EXEC_LEFTOVER = '/workspace/.cache';

const EXEC_OK = { exitCode: 0, signal: null, timedOut: false, durationMs: 1, outputTruncated: false, cpuUserMs: 0, cpuSystemMs: 0, peakMemoryBytes: 0 };

export function serveFakeAgent(socket: Socket, log: FakeAgentLog): void {
  const decoder = new FrameDecoder();
  const files = (log.files ??= new Map([
    ['/tmp', new Set<string>()],
    ['/workspace', new Set<string>()],
  ]));
  const execs = (log.execs ??= []);
  const uploads = new Map<number, string>();
  const add = (path: string) => {
    const [, top, name] = /^(\/tmp|\/workspace)\/([^/]+)/.exec(path) ?? [];
    if (top && name) files.get(top)!.add(name);
  };
  const remove = (path: string) => {
    const [, top, name] = /^(\/tmp|\/workspace)\/([^/]+)$/.exec(path) ?? [];
    if (top && name) files.get(top)!.delete(name);
  };
  const guestFile = (path: string): string | undefined => (path === '/proc/vmstat' ? `nr_free_pages 1000\noom_kill ${log.oomKills ?? 0}\n` : undefined);
  socket.on('data', (chunk: Buffer) => {
    for (const f of decoder.push(chunk)) {
      const reply = (v: unknown, type: FrameTypeCode = FrameType.RESULT): void => {
        socket.write(encodeJsonFrame(type, f.stream, v));
      };
      if (f.type === FrameType.EOF && uploads.has(f.stream)) {
        add(uploads.get(f.stream)!);
        uploads.delete(f.stream);
        reply({ bytes: 0 });
        continue;
      }
      if (f.type !== FrameType.REQUEST) continue;
      type Sync = { wallClockMs?: number; entropy?: string };
      const req = decodeJson(f) as { op: string; sync?: Sync; path?: string; argv?: string[] } & Sync;
      log.ops.push(req.op);
      const record = (s: Sync, onHello: boolean): void => {
        log.syncs.push({ wallClockMs: s.wallClockMs ?? 0, entropyBytes: Buffer.from(s.entropy ?? '', 'base64').length, onHello });
      };
      if (req.op === 'hello') {
        const synced = req.sync && log.helloSync !== false;
        if (synced) record(req.sync!, true);
        reply({ version: 2, agent: 'fake-agent/0', pid: 1, transport: 'vsock', uid: 0, bootMs: 1, ...(synced ? { sync: { reseeded: true, clockSet: true } } : {}) });
      } else if (req.op === 'ping') reply({ nowMs: Date.now() });
      else if (req.op === 'sync') {
        record(req, false);
        reply({ reseeded: true, clockSet: true });
      } else if (req.op === 'net.config') {
        reply({});
      } else if (req.op === 'fs.list') {
        reply({ entries: [...(files.get(req.path ?? '') ?? [])].map((name) => ({ name, type: 'dir', size: 0, mode: 0o755, mtimeMs: 0 })) });
      } else if (req.op === 'file.read' && guestFile(req.path ?? '') !== undefined) {
        const body = Buffer.from(guestFile(req.path ?? '')!);
        socket.write(encodeFrame(FrameType.DATA, f.stream, body));
        socket.write(encodeFrame(FrameType.EOF, f.stream));
        reply({ bytes: body.length });
      } else if (req.op === 'file.write') {
        uploads.set(f.stream, req.path ?? '');
      } else if (req.op === 'exec') {
        const argv = req.argv ?? [];
        execs.push(argv);
        if (argv[0] === 'rm')
          argv
            .slice(1)
            .filter((a) => a.startsWith('/'))
            .forEach(remove);
        else add(FAKE_EXEC_LEFTOVER);
        reply({ event: 'started', pid: 100 + execs.length }, FrameType.EVENT);
        if (argv[0] === FAKE_OOM) log.oomKills = (log.oomKills ?? 0) + 1;
        const killed = argv[0] === FAKE_OOM || argv[0] === FAKE_SIGKILL;
        reply(killed ? { ...EXEC_OK, exitCode: null, signal: 'SIGKILL' } : EXEC_OK);
      } else reply({ code: 'BAD_REQUEST', message: `fake agent: no ${req.op}` }, FrameType.ERROR);
    }
  });
  socket.on('error', () => undefined);
}
