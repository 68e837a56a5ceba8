/**
 * CodeMirror 6 over several files: one EditorView, one EditorState per file (so each file keeps its
 * own undo history and selection); switching tabs swaps the state.
 */

import { indentWithTab } from '@codemirror/commands';
import { EditorState, type Extension, StateField } from '@codemirror/state';
import { EditorView, keymap } from '@codemirror/view';
import { basicSetup } from 'codemirror';
import { useEffect, useRef } from 'react';
import { languageFor } from './languages.ts';

export interface CodeEditorProps {
  path: string;
  value: string;
  onChange(path: string, value: string): void;
  /** Ctrl/Cmd-Enter. */
  onRun?(): void;
}

export function CodeEditor({ path, value, onChange, onRun }: CodeEditorProps) {
  const host = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView | undefined>(undefined);
  const states = useRef(new Map<string, EditorState>());
  const callbacks = useRef({ onChange, onRun, path });
  callbacks.current = { onChange, onRun, path };

  useEffect(() => {
    const v = new EditorView({ parent: host.current! });
    view.current = v;
    return () => {
      v.destroy();
      view.current = undefined;
    };
  }, []);

  useEffect(() => {
    const v = view.current;
    if (!v) return;
    const shown = v.state.field(pathField, false);
    if (shown === path) {
      // The same file changed from outside the editor (e.g. reset): replace its text.
      if (v.state.doc.toString() !== value) v.dispatch({ changes: { from: 0, to: v.state.doc.length, insert: value } });
      return;
    }
    if (shown !== undefined) states.current.set(shown, v.state);
    let state = states.current.get(path);
    if (!state || state.doc.toString() !== value) state = EditorState.create({ doc: value, extensions: extensionsFor(path, callbacks) });
    v.setState(state);
  }, [path, value]);

  return <div className="editor" ref={host} data-path={path} />;
}

/** Which file a state belongs to (so the swap can store it under the right name). */
const pathField = StateField.define<string | undefined>({ create: () => undefined, update: (v) => v });

function extensionsFor(path: string, cb: { current: { onChange: CodeEditorProps['onChange']; onRun?: () => void; path: string } }): Extension[] {
  return [
    basicSetup,
    keymap.of([
      indentWithTab,
      {
        key: 'Mod-Enter',
        run: () => {
          cb.current.onRun?.();
          return true;
        },
      },
    ]),
    languageFor(path),
    pathField.init(() => path),
    EditorView.updateListener.of((u) => {
      if (u.docChanged) cb.current.onChange(path, u.state.doc.toString());
    }),
    EditorView.theme({ '&': { height: '100%' }, '.cm-scroller': { fontFamily: 'var(--mono)' } }),
  ];
}
