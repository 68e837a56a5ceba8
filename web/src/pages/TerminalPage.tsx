/** An interactive shell in a live sandbox: xterm.js over the exec WebSocket with a tty. */
import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';
import '@xterm/xterm/css/xterm.css';
import { useEffect, useRef, useState } from 'react';
import { ErrorBox } from '../components/ErrorBox.tsx';
import { useApi } from '../lib/api.tsx';
import { useSandboxes } from '../lib/catalog.ts';
import { openTerminalSession, type TerminalSession } from '../lib/terminal-session.ts';

type Status = 'idle' | 'connecting' | 'connected' | 'ended';

export function TerminalPage({ initialSandbox }: { initialSandbox?: string }) {
  const { client } = useApi();
  const sandboxes = useSandboxes(3000);
  const live = sandboxes.data?.filter((s) => s.state === 'ready') ?? [];
  const [target, setTarget] = useState(initialSandbox ?? '');
  const [shell, setShell] = useState('bash');
  const [status, setStatus] = useState<Status>('idle');
  const [error, setError] = useState<string>();
  const host = useRef<HTMLDivElement>(null);
  const term = useRef<{ t: Terminal; fit: FitAddon } | undefined>(undefined);
  const session = useRef<TerminalSession | undefined>(undefined);

  useEffect(() => {
    if (!target && live[0]) setTarget(live[0].id);
  }, [live, target]);

  // One xterm for the page's lifetime; each connection reuses it.
  useEffect(() => {
    const t = new Terminal({ cursorBlink: true, fontFamily: 'ui-monospace, "JetBrains Mono", Menlo, Consolas, monospace', fontSize: 13, theme: { background: '#0f1115' }, scrollback: 5000 });
    const fit = new FitAddon();
    t.loadAddon(fit);
    t.open(host.current!);
    fit.fit();
    term.current = { t, fit };
    const onData = t.onData((d) => session.current?.send(d));
    const ro = new ResizeObserver(() => {
      fit.fit();
      session.current?.resize(t.cols, t.rows);
    });
    ro.observe(host.current!);
    return () => {
      ro.disconnect();
      onData.dispose();
      session.current?.close();
      t.dispose();
      term.current = undefined;
    };
  }, []);

  const connect = () => {
    const x = term.current;
    if (!x || !target) return;
    session.current?.close();
    x.t.reset();
    x.fit.fit();
    setError(undefined);
    setStatus('connecting');
    const s = openTerminalSession(
      client.execSocketUrl(target),
      shell,
      { cols: x.t.cols, rows: x.t.rows },
      {
        onStarted: () => {
          setStatus('connected');
          x.t.focus();
        },
        onOutput: (d) => x.t.write(d),
        onResult: (r) => x.t.write(`\r\n\x1b[2m[exited: code ${r.exitCode ?? '–'}${r.signal ? `, signal ${r.signal}` : ''}]\x1b[0m\r\n`),
        onError: (text) => setError(text),
        onClosed: () => {
          if (session.current === s) {
            session.current = undefined;
            setStatus('ended');
          }
        },
      },
    );
    session.current = s;
  };

  const disconnect = () => session.current?.close();

  return (
    <section className="terminal-page">
      <div className="card run-controls">
        <label>
          Sandbox
          <select name="sandbox" value={target} onChange={(e) => setTarget(e.target.value)}>
            {live.length === 0 && <option value="">no live sandboxes: create one first</option>}
            {live.map((s) => (
              <option key={s.id} value={s.id}>
                {s.id} ({s.pack}, {s.backend})
              </option>
            ))}
            {target && !live.some((s) => s.id === target) && <option value={target}>{target} (not live)</option>}
          </select>
        </label>
        <label>
          Command
          <input name="shell" value={shell} onChange={(e) => setShell(e.target.value)} />
        </label>
        {status === 'connected' || status === 'connecting' ? (
          <>
            <button type="button" onClick={() => session.current?.signal('SIGINT')}>
              Ctrl-C
            </button>
            <button type="button" className="danger" onClick={disconnect}>
              Disconnect
            </button>
          </>
        ) : (
          <button type="button" className="primary" onClick={connect} disabled={!target}>
            Connect
          </button>
        )}
        <span className={`conn conn-${status}`} data-testid="terminal-status">
          {status}
        </span>
      </div>
      <ErrorBox error={error ?? sandboxes.error} />
      <div className="terminal-frame">
        <div className="terminal-host" ref={host} data-testid="terminal" />
      </div>
    </section>
  );
}
