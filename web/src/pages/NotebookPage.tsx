/**
 * A notebook over a stateful code context: cells run one after another in the same interpreter
 * (Python through IPython, or JavaScript), each showing its streamed output, its rich results
 * (PNG images, HTML in a sandboxed frame, text) and its exception.
 */
import { useEffect, useRef, useState } from 'react';
import type { CodeContext, CodeEvent } from '../../../sdk/src/index.ts';
import { CodeEditor } from '../components/CodeEditor.tsx';
import { ErrorBox } from '../components/ErrorBox.tsx';
import { useApi } from '../lib/api.tsx';
import { useSandboxes } from '../lib/catalog.ts';

interface Cell {
  key: number;
  code: string;
  events: CodeEvent[];
  running: boolean;
  count?: number;
}

let nextKey = 1;
const newCell = (code = ''): Cell => ({ key: nextKey++, code, events: [], running: false });

function Result({ data }: { data: Record<string, unknown> }) {
  const png = data['image/png'];
  const html = data['text/html'];
  const svg = data['image/svg+xml'];
  if (typeof png === 'string') return <img className="nb-image" alt={String(data['text/plain'] ?? 'figure')} src={`data:image/png;base64,${png}`} />;
  if (typeof svg === 'string') return <img className="nb-image" alt="figure" src={`data:image/svg+xml;base64,${btoa(unescape(encodeURIComponent(svg)))}`} />;
  // The sandbox's HTML never runs in the dashboard's origin: a frame with no permissions at all.
  if (typeof html === 'string') return <iframe className="nb-html" title="HTML result" sandbox="" srcDoc={html} />;
  return <pre className="nb-text">{String(data['text/plain'] ?? JSON.stringify(data))}</pre>;
}

function CellOutput({ events }: { events: CodeEvent[] }) {
  return (
    <div className="nb-output" data-testid="cell-output">
      {events.map((e, i) => {
        const k = `${i}-${e.type}`;
        switch (e.type) {
          case 'stdout':
            return (
              <pre key={k} className="nb-text">
                {e.text}
              </pre>
            );
          case 'stderr':
            return (
              <pre key={k} className="nb-text stderr">
                {e.text}
              </pre>
            );
          case 'result':
            return <Result key={k} data={e.data} />;
          case 'exception':
            return (
              <pre key={k} className="nb-text stderr" data-testid="cell-exception">
                {e.traceback || `${e.name}: ${e.value}`}
              </pre>
            );
          case 'error':
            return (
              <pre key={k} className="nb-text stderr">
                {e.code}: {e.message}
              </pre>
            );
          default:
            return null;
        }
      })}
    </div>
  );
}

export function NotebookPage({ initialSandbox }: { initialSandbox?: string }) {
  const { client, report } = useApi();
  const sandboxes = useSandboxes(3000);
  const live = sandboxes.data?.filter((s) => s.state === 'ready') ?? [];
  const [target, setTarget] = useState(initialSandbox ?? '');
  const [language, setLanguage] = useState('python');
  const [ctx, setCtx] = useState<CodeContext>();
  const [cells, setCells] = useState<Cell[]>(() => [newCell('x = 41\nx + 1')]);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const cellsRef = useRef(cells);
  cellsRef.current = cells;

  useEffect(() => {
    if (!target && live[0]) setTarget(live[0].id);
  }, [live, target]);

  const update = (key: number, f: (c: Cell) => Cell) => setCells((cs) => cs.map((c) => (c.key === key ? f(c) : c)));

  const start = async () => {
    setError(undefined);
    setBusy(true);
    try {
      if (ctx) await client.sandboxes.deleteContext(target, ctx.id).catch(() => undefined);
      setCtx(await client.sandboxes.createContext(target, { language }));
      setCells((cs) => cs.map((c) => ({ ...c, events: [], count: undefined })));
    } catch (e) {
      setError(report(e));
    } finally {
      setBusy(false);
    }
  };

  const restart = async () => {
    if (!ctx) return;
    setBusy(true);
    try {
      await client.sandboxes.restartContext(target, ctx.id);
      setCells((cs) => cs.map((c) => ({ ...c, events: [], count: undefined })));
    } catch (e) {
      setError(report(e));
    } finally {
      setBusy(false);
    }
  };

  const run = async (key: number) => {
    const cell = cellsRef.current.find((c) => c.key === key);
    if (!ctx || !cell) return;
    update(key, (c) => ({ ...c, events: [], running: true }));
    try {
      for await (const e of client.sandboxes.runCode(target, ctx.id, cell.code)) {
        if (e.type === 'started') update(key, (c) => ({ ...c, count: e.executionCount }));
        else if (e.type !== 'end') update(key, (c) => ({ ...c, events: [...c.events, e] }));
      }
    } catch (e) {
      setError(report(e));
    } finally {
      update(key, (c) => ({ ...c, running: false }));
    }
  };

  const runAll = async () => {
    for (const c of cellsRef.current) await run(c.key);
  };

  return (
    <section className="notebook-page">
      <div className="card run-controls">
        <label>
          Sandbox
          <select name="sandbox" value={target} onChange={(e) => setTarget(e.target.value)}>
            {live.length === 0 && <option value="">no live sandboxes: create one (pack code-interpreter)</option>}
            {live.map((s) => (
              <option key={s.id} value={s.id}>
                {s.id} ({s.pack}, {s.backend})
              </option>
            ))}
          </select>
        </label>
        <label>
          Language
          <select name="language" value={language} onChange={(e) => setLanguage(e.target.value)}>
            <option value="python">Python</option>
            <option value="javascript">JavaScript</option>
          </select>
        </label>
        <button type="button" className="primary" onClick={start} disabled={!target || busy}>
          {ctx ? 'New context' : 'Start context'}
        </button>
        <button type="button" onClick={restart} disabled={!ctx || busy}>
          Restart
        </button>
        <button type="button" onClick={runAll} disabled={!ctx || busy}>
          Run all
        </button>
        <span className="muted" data-testid="context-status">
          {ctx ? `${ctx.language} context ${ctx.id.slice(0, 8)}` : 'no context'}
        </span>
      </div>
      <ErrorBox error={error ?? sandboxes.error} />
      {cells.map((c) => (
        <div key={c.key} className="card nb-cell" data-testid="cell">
          <div className="nb-gutter">[{c.running ? '*' : (c.count ?? ' ')}]</div>
          <div className="nb-body">
            <CodeEditor path={language === 'python' ? `cell${c.key}.py` : `cell${c.key}.js`} value={c.code} onChange={(_p, v) => update(c.key, (x) => ({ ...x, code: v }))} onRun={() => run(c.key)} />
            <div className="nb-actions">
              <button type="button" onClick={() => run(c.key)} disabled={!ctx || c.running}>
                Run
              </button>
              <button type="button" onClick={() => setCells((cs) => (cs.length > 1 ? cs.filter((x) => x.key !== c.key) : cs))}>
                Remove
              </button>
            </div>
            <CellOutput events={c.events} />
          </div>
        </div>
      ))}
      <button type="button" onClick={() => setCells((cs) => [...cs, newCell()])}>
        + Cell
      </button>
    </section>
  );
}
