/**
 * One interactive command over kiln's exec WebSocket (src/server/routes/interactive.ts): sends
 * "start" with a tty, then stdin/resize/signal; reports started/stdout/stderr/result/error.
 */
import type { ExecEvent } from '../../../sdk/src/index.ts';

export interface TerminalSessionHandlers {
  onOutput(data: string): void;
  onStarted(pid: number): void;
  onResult(r: Extract<ExecEvent, { type: 'result' }>): void;
  onError(text: string): void;
  onClosed(): void;
}

export interface TerminalSession {
  send(data: string): void;
  resize(cols: number, rows: number): void;
  signal(name: string): void;
  close(): void;
}

export function openTerminalSession(url: string, cmd: string, size: { cols: number; rows: number }, h: TerminalSessionHandlers): TerminalSession {
  const ws = new WebSocket(url);
  let started = false;
  let ended = false;
  const send = (msg: Record<string, unknown>) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
  };

  ws.onopen = () => send({ type: 'start', cmd, tty: size, cwd: '/workspace' });
  ws.onmessage = (e: MessageEvent) => {
    if (typeof e.data !== 'string') return;
    const msg = JSON.parse(e.data) as ExecEvent;
    if (msg.type === 'started') {
      started = true;
      h.onStarted(msg.pid);
    } else if (msg.type === 'stdout' || msg.type === 'stderr') h.onOutput(msg.data);
    else if (msg.type === 'result') {
      ended = true;
      h.onResult(msg);
    } else if (msg.type === 'error') {
      ended = true;
      h.onError(`${msg.code}: ${msg.message}`);
    }
  };
  ws.onclose = (e: CloseEvent) => {
    // A refused upgrade (e.g. 401 or an unknown sandbox) reaches the browser only as a bare close.
    if (!ended && !started) h.onError(`the server closed the connection (code ${e.code}) before the shell started: check the sandbox is live and the API token is right`);
    h.onClosed();
  };
  return {
    send: (data) => send({ type: 'stdin', data }),
    resize: (cols, rows) => send({ type: 'resize', cols, rows }),
    signal: (name) => send({ type: 'signal', signal: name }),
    close: () => ws.close(1000),
  };
}
