/** CodeMirror's language mode for a file name, shared by the editor and the review's diff view. */
import { go } from '@codemirror/lang-go';
import { javascript } from '@codemirror/lang-javascript';
import { python } from '@codemirror/lang-python';
import type { Extension } from '@codemirror/state';

export function languageFor(path: string): Extension {
  if (/\.py$/.test(path)) return python();
  if (/\.(m|c)?jsx?$/.test(path)) return javascript({ jsx: path.endsWith('x') });
  if (/\.tsx?$/.test(path)) return javascript({ typescript: true, jsx: path.endsWith('x') });
  if (/\.go$/.test(path)) return go();
  return [];
}
