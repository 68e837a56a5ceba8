/**
 * A read-only side-by-side diff: CodeMirror's merge view, the host's version on the left and the
 * sandbox's on the right, long unchanged stretches collapsed. Remade whenever the texts change.
 */
import { MergeView } from '@codemirror/merge';
import { EditorState, type Extension } from '@codemirror/state';
import { EditorView, lineNumbers } from '@codemirror/view';
import { minimalSetup } from 'codemirror';
import { useEffect, useRef } from 'react';
import { languageFor } from './languages.ts';

export interface MergeDiffProps {
  path: string;
  /** Empty for an added file. */
  oldText: string;
  /** Empty for a deleted file. */
  newText: string;
}

export function MergeDiff({ path, oldText, newText }: MergeDiffProps) {
  const host = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const extensions = readOnly(path);
    const view = new MergeView({
      a: { doc: oldText, extensions },
      b: { doc: newText, extensions },
      parent: host.current!,
      gutter: true,
      highlightChanges: true,
      collapseUnchanged: { margin: 3, minSize: 6 },
    });
    return () => view.destroy();
  }, [path, oldText, newText]);
  return (
    <div className="merge" data-testid="merge-view">
      <div className="merge-sides">
        <span>host (before)</span>
        <span>sandbox (after)</span>
      </div>
      <div className="merge-host" ref={host} />
    </div>
  );
}

function readOnly(path: string): Extension[] {
  return [
    minimalSetup,
    lineNumbers(),
    languageFor(path),
    EditorState.readOnly.of(true),
    EditorView.editable.of(false),
    EditorView.theme({ '.cm-scroller': { fontFamily: 'var(--mono)', fontSize: '12.5px' } }),
  ];
}
