/**
 * The review page's right side: one change of a workspace sandbox, shown by its kind (a text file
 * side by side in the merge view; a symlink by its targets; a binary file, a directory or a file too
 * big for the view described), its git-style patch on request, and approve/reject for that path.
 */
import { useEffect, useState } from 'react';
import type { Change, KilnClient } from '../../../sdk/src/index.ts';
import { useApi } from '../lib/api.tsx';
import { bytes } from '../lib/format.ts';
import { contentKey, decodeText, describe, diffViewOf } from '../lib/review.ts';
import { ErrorBox } from './ErrorBox.tsx';
import { MergeDiff } from './MergeDiff.tsx';

export interface ChangeDiffProps {
  sandboxId: string;
  change: Change;
  /** Bumped by the page's Refresh: the content is read again. */
  refresh: number;
  busy: boolean;
  onDecide(action: 'approve' | 'reject', paths: string[]): void;
}

/** What was read for the shown change: text of both sides, or why there is none. */
type ContentBody = { oldText: string; newText: string } | { notText: true } | { oldTarget: string | undefined };
type Content = ContentBody & { key: string };

export function ChangeDiff({ sandboxId, change, refresh, busy, onDecide }: ChangeDiffProps) {
  const { client, report } = useApi();
  const view = diffViewOf(change);
  const key = contentKey(change);
  const [content, setContent] = useState<Content>();
  const [error, setError] = useState<string>();
  const [patch, setPatch] = useState<string>();

  useEffect(() => {
    setPatch(undefined);
    setError(undefined);
    if (view.kind !== 'text' && view.kind !== 'symlink') {
      setContent(undefined);
      return;
    }
    const ac = new AbortController();
    loadContent(client, sandboxId, change, ac.signal).then(
      (c) => setContent({ key, ...c }),
      (e: unknown) => {
        if (!ac.signal.aborted) setError(report(e));
      },
    );
    return () => ac.abort();
    // The key stands for the change's content; `change` itself is a new object on every poll.
  }, [client, sandboxId, key, refresh]);

  const showPatch = async () => {
    try {
      setPatch(await client.sandboxes.diff(sandboxId, { path: change.path, ignored: change.ignored || undefined }));
    } catch (e) {
      setError(report(e));
    }
  };

  const shown = content?.key === key ? content : undefined;
  return (
    <div className="change-diff card" data-path={change.path}>
      <header className="change-head">
        <div>
          <h3 className="mono">{change.path}</h3>
          <div className="muted small">
            {describe(change)} · {bytes(change.size)}
            {change.ignored && <span className="badge">ignored</span>}
          </div>
        </div>
        <div className="change-actions">
          <button type="button" className="ghost" onClick={() => void showPatch()}>
            Patch
          </button>
          <button type="button" className="danger" disabled={busy} onClick={() => onDecide('reject', [change.path])}>
            Reject file
          </button>
          <button type="button" className="primary" disabled={busy} onClick={() => onDecide('approve', [change.path])}>
            Approve file
          </button>
        </div>
      </header>
      <ErrorBox error={error} />
      {view.kind === 'directory' && <p className="diff-note">Directory {change.status}: its entries are listed as their own changes.</p>}
      {view.kind === 'binary' && <BinaryNote change={change} />}
      {view.kind === 'tooLarge' && (
        <p className="diff-note">
          {bytes(change.size)} is more than the side-by-side view shows ({bytes(view.limitBytes)}); the patch has the whole change.
        </p>
      )}
      {view.kind === 'symlink' && shown && 'oldTarget' in shown && (
        <dl className="kv link-targets" data-testid="symlink-targets">
          <dt>before</dt>
          <dd>{view.old ? (shown.oldTarget ?? '–') : '(none)'}</dd>
          <dt>after</dt>
          <dd>{view.newTarget ?? '(none)'}</dd>
        </dl>
      )}
      {view.kind === 'text' && shown && 'notText' in shown && <BinaryNote change={change} />}
      {view.kind === 'text' && shown && 'oldText' in shown && <MergeDiff path={change.path} oldText={shown.oldText} newText={shown.newText} />}
      {(view.kind === 'text' || view.kind === 'symlink') && !shown && !error && <p className="muted small">Loading…</p>}
      {patch !== undefined && (
        <pre className="patch" data-testid="patch">
          {patch || '(empty patch)'}
        </pre>
      )}
    </div>
  );
}

function BinaryNote({ change }: { change: Change }) {
  const verb = change.status === 'added' ? 'added' : change.status === 'deleted' ? 'deleted' : 'changed';
  return (
    <p className="diff-note" data-testid="binary-note">
      Binary file {verb} ({bytes(change.size)}): not shown side by side.
    </p>
  );
}

/** Reads the sides the change has: text for the merge view, or a symlink's old target. */
async function loadContent(client: KilnClient, id: string, c: Change, signal: AbortSignal): Promise<ContentBody> {
  const view = diffViewOf(c);
  const read = (side: 'old' | 'new') => client.sandboxes.changeContent(id, c.path, side, signal);
  if (view.kind === 'symlink') return { oldTarget: view.old ? new TextDecoder().decode(await read('old')) : undefined };
  if (view.kind !== 'text') return { notText: true };
  const [oldBytes, newBytes] = await Promise.all([view.old ? read('old') : new Uint8Array(), view.new ? read('new') : new Uint8Array()]);
  const oldText = decodeText(oldBytes);
  const newText = decodeText(newBytes);
  if (oldText === undefined || newText === undefined) return { notText: true };
  return { oldText, newText };
}
