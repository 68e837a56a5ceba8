/** Tabs over the project's files: select, add, rename (double-click or ✎), remove. */
import { useState } from 'react';

export interface FileTabsProps {
  paths: string[];
  active: string;
  onSelect(path: string): void;
  onAdd(path: string): string | undefined;
  onRename(from: string, to: string): string | undefined;
  onRemove(path: string): void;
}

export function FileTabs({ paths, active, onSelect, onAdd, onRename, onRemove }: FileTabsProps) {
  // `editing` is the file being renamed, or '' while a new file is being named.
  const [editing, setEditing] = useState<string>();
  const [draft, setDraft] = useState('');
  const [error, setError] = useState<string>();

  const commit = () => {
    const name = draft.trim();
    if (editing === undefined) return;
    const err = !name ? undefined : editing === '' ? onAdd(name) : name === editing ? undefined : onRename(editing, name);
    if (err) {
      setError(err);
      return;
    }
    setEditing(undefined);
    setError(undefined);
  };
  const begin = (path: string) => {
    setEditing(path);
    setDraft(path);
    setError(undefined);
  };

  const nameInput = (
    <input
      className="tab-input"
      // biome-ignore lint/a11y/noAutofocus: the input appears because the user asked to name a file
      autoFocus
      aria-label="File name"
      value={draft}
      onChange={(e) => setDraft(e.target.value)}
      onBlur={commit}
      onKeyDown={(e) => {
        if (e.key === 'Enter') commit();
        if (e.key === 'Escape') {
          setEditing(undefined);
          setError(undefined);
        }
      }}
    />
  );

  return (
    <div className="file-tabs" role="tablist" aria-label="Files">
      {paths.map((p) =>
        editing === p ? (
          <span key={p} className="file-tab active">
            {nameInput}
          </span>
        ) : (
          // biome-ignore lint/a11y/useFocusableInteractive: the tab's own buttons inside take the focus
          <span key={p} className={p === active ? 'file-tab active' : 'file-tab'} role="tab" aria-selected={p === active}>
            <button type="button" className="file-name" onClick={() => onSelect(p)} onDoubleClick={() => begin(p)}>
              {p}
            </button>
            <button type="button" className="icon" title={`Rename ${p}`} aria-label={`Rename ${p}`} onClick={() => begin(p)}>
              ✎
            </button>
            {paths.length > 1 && (
              <button type="button" className="icon" title={`Remove ${p}`} aria-label={`Remove ${p}`} onClick={() => onRemove(p)}>
                ×
              </button>
            )}
          </span>
        ),
      )}
      {editing === '' ? (
        <span className="file-tab active">{nameInput}</span>
      ) : (
        <button type="button" className="file-add" aria-label="Add file" title="Add file" onClick={() => begin('')}>
          + file
        </button>
      )}
      {error && <span className="error small inline">{error}</span>}
    </div>
  );
}
