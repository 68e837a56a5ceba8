/**
 * Review a workspace sandbox's changes before they reach the host directory: the changed files,
 * a side-by-side diff of the selected one, approve or reject per file or all, a conflict answer
 * with its "force" action, and how full the upper layer is. #/review?sandbox=ID; without an id,
 * a list of the workspace sandboxes to pick from.
 */
import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { type ChangesResult, workspaceConflicts, workspaceOf } from '../../../sdk/src/index.ts';
import { ChangeDiff } from '../components/ChangeDiff.tsx';
import { ErrorBox } from '../components/ErrorBox.tsx';
import { useApi } from '../lib/api.tsx';
import { useSandboxes } from '../lib/catalog.ts';
import { bytes } from '../lib/format.ts';
import { type ReviewRow, reviewRows, selectionAfter, summarize, usageOf } from '../lib/review.ts';
import { usePoll } from '../lib/usePoll.ts';

type Decision = 'approve' | 'reject';

/** A refused approve: what was asked (undefined = all) and the paths changed on the host. */
interface Conflict {
  paths?: string[];
  conflicts: string[];
  message: string;
}

export function ReviewPage({ sandbox }: { sandbox?: string }) {
  return sandbox ? <Review key={sandbox} id={sandbox} /> : <Picker />;
}

function Review({ id }: { id: string }) {
  const { client, report } = useApi();
  const [showIgnored, setShowIgnored] = useState(false);
  const [data, setData] = useState<ChangesResult>();
  const [error, setError] = useState<string>();
  const [selected, setSelected] = useState<string>();
  const [busy, setBusy] = useState(false);
  const [notice, setNotice] = useState<string>();
  const [actionError, setActionError] = useState<string>();
  const [conflict, setConflict] = useState<Conflict>();
  const [refresh, setRefresh] = useState(0);
  const [workspacePath, setWorkspacePath] = useState<string>();
  const lastRows = useRef<ReviewRow[]>([]);

  const load = useCallback(async () => {
    try {
      const r = await client.sandboxes.changes(id, { ignored: showIgnored });
      const rows = reviewRows(r.changes, showIgnored);
      setSelected((sel) => selectionAfter(lastRows.current, rows, sel));
      lastRows.current = rows;
      setData(r);
      setError(undefined);
    } catch (e) {
      setError(report(e));
    }
  }, [client, id, showIgnored, report]);
  // The agent may still be writing: the list follows it; the shown diff only when its file changed.
  usePoll(load, 5000, [load]);

  useEffect(() => {
    // The sandbox may be gone while its workspace is still under review: the path is then unknown.
    client.sandboxes.get(id).then(
      (sb) => setWorkspacePath(workspaceOf(sb)?.path),
      () => undefined,
    );
  }, [client, id]);

  const rows = useMemo(() => (data ? reviewRows(data.changes, showIgnored) : []), [data, showIgnored]);
  const current = rows.find((r) => r.path === selected);

  const decide = async (action: Decision, paths?: string[], force = false) => {
    if (action === 'reject' && !paths && !confirm('Reject all changes? The sandbox’s versions of these files are discarded.')) return;
    setBusy(true);
    setActionError(undefined);
    setNotice(undefined);
    try {
      if (action === 'approve') {
        const r = await client.sandboxes.approve(id, { paths, force: force || undefined, ignored: showIgnored || undefined });
        setNotice(`Approved ${count(r.applied.length)}: written to the host directory.`);
      } else {
        const r = await client.sandboxes.reject(id, { paths });
        setNotice(`Rejected ${count(r.rejected.length)}: the sandbox sees the host’s version again.`);
      }
      setConflict(undefined);
    } catch (e) {
      const conflicts = workspaceConflicts(e);
      if (conflicts) setConflict({ paths, conflicts, message: e instanceof Error ? e.message : String(e) });
      else setActionError(report(e));
    } finally {
      setBusy(false);
    }
    await load();
  };

  const summary = data ? summarize(data.changes) : undefined;
  return (
    <section className="review-page">
      <div className="card review-head">
        <div className="review-title">
          <h2>
            Review <span className="mono">{id}</span>
          </h2>
          {workspacePath && <div className="mono small muted">{workspacePath}</div>}
        </div>
        {data && <UsageMeter upperBytes={data.upperBytes} limitBytes={data.limitBytes} />}
        <label className="inline-label">
          <input type="checkbox" name="showIgnored" checked={showIgnored} onChange={(e) => setShowIgnored(e.target.checked)} />
          show .gitignored
        </label>
        <button
          type="button"
          className="ghost"
          onClick={() => {
            setRefresh((n) => n + 1);
            void load();
          }}
        >
          Refresh
        </button>
        <button type="button" className="danger" disabled={busy || !rows.length} onClick={() => void decide('reject')}>
          Reject all
        </button>
        <button type="button" className="primary" disabled={busy || !rows.length} onClick={() => void decide('approve')}>
          Approve all
        </button>
      </div>
      <ErrorBox error={error ?? actionError} />
      {conflict && <ConflictBox conflict={conflict} busy={busy} onForce={() => void decide('approve', conflict.paths, true)} onCancel={() => setConflict(undefined)} />}
      {notice && (
        <p className="ok small" role="status">
          {notice}
        </p>
      )}
      {summary && (
        <p className="muted small review-summary" data-testid="review-summary">
          {count(rows.length)} shown · {summary.added} added · {summary.modified} modified · {summary.deleted} deleted
          {showIgnored ? ` · ${summary.ignored} ignored` : ''}
        </p>
      )}
      {data && rows.length === 0 && <p className="muted empty">No changes: the sandbox’s /workspace is the same as the host directory.</p>}
      {rows.length > 0 && (
        <div className="review-body">
          <ChangeList rows={rows} selected={selected} busy={busy} onSelect={setSelected} onDecide={(a, p) => void decide(a, p)} />
          {current && <ChangeDiff sandboxId={id} change={current.change} refresh={refresh} busy={busy} onDecide={(a, p) => void decide(a, p)} />}
        </div>
      )}
    </section>
  );
}

function ChangeList({ rows, selected, busy, onSelect, onDecide }: { rows: ReviewRow[]; selected?: string; busy: boolean; onSelect(path: string): void; onDecide(a: Decision, paths: string[]): void }) {
  return (
    <table className="grid changes">
      <thead>
        <tr>
          <th />
          <th>Path</th>
          <th>Type</th>
          <th>Size</th>
          <th />
        </tr>
      </thead>
      <tbody>
        {rows.map((r) => (
          <tr key={r.path} data-change={r.path} className={r.path === selected ? 'selected' : undefined}>
            <td>
              <span className={`change-status ${r.status}`} title={r.status}>
                {r.letter}
              </span>
            </td>
            <td className="change-path">
              <button type="button" className="link mono" onClick={() => onSelect(r.path)} aria-current={r.path === selected}>
                {r.path}
              </button>
              {r.binary && <span className="badge">binary</span>}
              {r.ignored && <span className="badge muted-badge">ignored</span>}
              {r.modeChange && <span className="muted small"> {r.modeChange}</span>}
            </td>
            <td className="small">{r.type === 'symlink' ? 'link' : r.type === 'directory' ? 'dir' : 'file'}</td>
            <td className="small">{r.type === 'directory' ? '' : bytes(r.size)}</td>
            <td className="actions">
              <button type="button" className="icon-button ok" disabled={busy} aria-label={`Approve ${r.path}`} title="Approve" onClick={() => onDecide('approve', [r.path])}>
                ✓
              </button>
              <button type="button" className="icon-button danger" disabled={busy} aria-label={`Reject ${r.path}`} title="Reject" onClick={() => onDecide('reject', [r.path])}>
                ✕
              </button>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function ConflictBox({ conflict, busy, onForce, onCancel }: { conflict: Conflict; busy: boolean; onForce(): void; onCancel(): void }) {
  return (
    <div className="conflict" role="alert" data-testid="conflict">
      <p>
        <strong>Not approved: {count(conflict.conflicts.length)} changed on the host</strong> since the sandbox started. {conflict.message}
      </p>
      <ul className="mono small">
        {conflict.conflicts.map((p) => (
          <li key={p}>{p}</li>
        ))}
      </ul>
      <div className="row">
        <button type="button" className="danger" disabled={busy} onClick={onForce}>
          Force: overwrite the host’s version
        </button>
        <button type="button" className="ghost" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </div>
  );
}

function UsageMeter({ upperBytes, limitBytes }: { upperBytes: number; limitBytes: number }) {
  const u = usageOf(upperBytes, limitBytes);
  return (
    <div className={`usage usage-${u.level}`} data-testid="upper-usage" title="The sandbox’s writes to /workspace; at the limit they fail with ENOSPC">
      <span className="small muted">upper layer</span>
      <meter min={0} max={1} low={0.8} high={0.95} optimum={0} value={u.fraction} />
      <span className="small">
        {bytes(upperBytes)} of {bytes(limitBytes)} ({u.percent}%)
      </span>
      {u.level !== 'ok' && <span className="small usage-flag">{u.level === 'full' ? 'full: writes will fail' : 'nearly full'}</span>}
    </div>
  );
}

/** Without an id: the live sandboxes that have a workspace, and a field for any id. */
function Picker() {
  const sandboxes = useSandboxes(3000);
  const [id, setId] = useState('');
  const withWorkspace = sandboxes.data?.filter((s) => workspaceOf(s)) ?? [];
  const open = (sb: string) => {
    location.hash = `#/review?sandbox=${encodeURIComponent(sb)}`;
  };
  return (
    <section className="review-page">
      <form
        className="card row"
        onSubmit={(e) => {
          e.preventDefault();
          if (id.trim()) open(id.trim());
        }}
      >
        <label>
          Sandbox id
          <input name="sandbox" value={id} placeholder="sb-…" onChange={(e) => setId(e.target.value)} />
        </label>
        <button type="submit" className="primary" disabled={!id.trim()}>
          Review
        </button>
      </form>
      <ErrorBox error={sandboxes.error} />
      <h2>Workspace sandboxes</h2>
      {sandboxes.data && withWorkspace.length === 0 && <p className="muted empty">No live sandbox has a workspace. Create one with a workspace path (POST /v1/sandboxes with workspace.path).</p>}
      {withWorkspace.length > 0 && (
        <table className="grid">
          <tbody>
            {withWorkspace.map((s) => {
              const ws = workspaceOf(s)!;
              return (
                <tr key={s.id} data-sandbox={s.id}>
                  <td className="mono">{s.id}</td>
                  <td className="mono small">{ws.path}</td>
                  <td className="small">{ws.changes === undefined ? '' : `${count(ws.changes)} changed`}</td>
                  <td className="actions">
                    <a className="button ghost" href={`#/review?sandbox=${encodeURIComponent(s.id)}`}>
                      Review
                    </a>
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </section>
  );
}

function count(n: number): string {
  return `${n} path${n === 1 ? '' : 's'}`;
}
