/**
 * The interpreter drivers of stateful code contexts (code-contexts.ts), run inside the sandbox as
 * `python3 -c` / `node -e`: no file is written. Protocol: one JSON request a line on stdin
 * ({id, code, env}); events on stdout, each line starting with \x1e (RS) so that whatever a
 * child process writes straight to the descriptor is told apart: {type: ready|number_of_executions|
 * stdout|stderr|result|error|done|fatal, id, ...}.
 */

/** Python through IPython's InteractiveShell: the display hook and publisher become result events, tracebacks error events, matplotlib figures PNG results at the end of a run. */
export const PYTHON_DRIVER = String.raw`import base64, io, json, os, signal, sys, threading, warnings
from datetime import datetime, timezone

_proto = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
_lock = threading.Lock()
_current = [None]


def _now():
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def emit(obj):
    if "id" not in obj:
        obj["id"] = _current[0]
    line = "\x1e" + json.dumps(obj, default=str) + "\n"
    with _lock:
        _proto.write(line)
        _proto.flush()


class _Stream(io.TextIOBase):
    """Buffers like ipykernel's OutStream: whole lines go at once, a partial line after 0.2 s."""

    def __init__(self, name):
        self.name = name
        self._buf = []
        self._timer = None

    def writable(self):
        return True

    def write(self, s):
        if not s:
            return 0
        with _lock:
            self._buf.append(s)
        if "\n" in s:
            self.flush()
        elif self._timer is None:
            self._timer = threading.Timer(0.2, self.flush)
            self._timer.daemon = True
            self._timer.start()
        return len(s)

    def flush(self):
        with _lock:
            text = "".join(self._buf)
            self._buf = []
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        if text:
            emit({"type": self.name, "text": text, "timestamp": _now()})

    def isatty(self):
        return False

    @property
    def encoding(self):
        return "utf-8"


def _flush_streams():
    sys.stdout.flush()
    sys.stderr.flush()


try:
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell
except Exception as e:  # noqa: BLE001
    emit({"type": "fatal", "message": "IPython is not installed in this sandbox (%s): use the code-interpreter pack" % e})
    sys.exit(3)


class Hook(DisplayHook):
    def write_output_prompt(self):
        pass

    def write_format_data(self, format_dict, md_dict=None):
        _flush_streams()
        emit({"type": "result", "main": True, "data": format_dict})

    def finish_displayhook(self):
        pass


class Pub(DisplayPublisher):
    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kw):
        _flush_streams()
        emit({"type": "result", "main": False, "data": data})

    def clear_output(self, wait=False):
        pass


class Shell(InteractiveShell):
    def _showtraceback(self, etype, evalue, stb):
        _flush_streams()
        emit({"type": "error", "name": etype.__name__, "value": str(evalue), "traceback": "\n".join(stb)})



sys.stdout = _Stream("stdout")
sys.stderr = _Stream("stderr")
sys.stdin = io.StringIO("")
shell = Shell.instance(displayhook_class=Hook, display_pub_class=Pub, colors="NoColor")
warnings.filterwarnings("ignore", message=".*non-GUI backend.*")


def _flush_figures():
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    try:
        for num in plt.get_fignums():
            fig = plt.figure(num)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", bbox_inches="tight")
            w, h = fig.get_size_inches() * fig.dpi
            text = "<Figure size %dx%d with %d Axes>" % (w, h, len(fig.axes))
            emit({"type": "result", "main": False, "data": {"text/plain": text, "image/png": base64.b64encode(buf.getvalue()).decode()}})
        plt.close("all")
    except Exception as e:  # noqa: BLE001
        emit({"type": "stderr", "text": "kiln: could not render the figures: %s\n" % e, "timestamp": _now()})


def _patch_show():
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None and getattr(plt.show, "__kiln__", False) is False:
        def show(*a, **k):
            _flush_figures()
        show.__kiln__ = True
        plt.show = show


signal.signal(signal.SIGINT, signal.default_int_handler)
emit({"type": "ready", "pid": os.getpid()})
for raw in sys.__stdin__:
    try:
        req = json.loads(raw)
    except ValueError:
        continue
    _current[0] = req.get("id")
    env = req.get("env") or {}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    emit({"type": "number_of_executions", "execution_count": shell.execution_count})
    try:
        try:
            shell.run_cell(req.get("code", ""), store_history=True)
            _patch_show()
            _flush_figures()
        except KeyboardInterrupt:
            pass
    finally:
        _flush_streams()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        emit({"type": "done"})
        _current[0] = None
`;

/** JavaScript in one Node.js process: vm.runInThisContext keeps top-level declarations between runs; the completion value is the result. */
export const NODE_DRIVER = String.raw`'use strict';
const fs = require('node:fs');
const util = require('node:util');
const vm = require('node:vm');
const readline = require('node:readline');
const protoFd = 1;
let current = null;
function emit(obj) {
  if (!('id' in obj)) obj.id = current;
  fs.writeSync(protoFd, '\x1e' + JSON.stringify(obj) + '\n');
}
const now = () => new Date().toISOString();
for (const name of ['stdout', 'stderr']) {
  const stream = process[name];
  stream.write = (chunk, enc, cb) => {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    if (text) emit({ type: name, text, timestamp: now() });
    if (typeof enc === 'function') enc();
    else if (typeof cb === 'function') cb();
    return true;
  };
}
globalThis.require = require;
globalThis.module = module;
globalThis.exports = module.exports;
globalThis.__filename = '[kiln]';
globalThis.__dirname = process.cwd();
process.on('SIGINT', () => {});
process.on('uncaughtException', (e) => emit({ type: 'stderr', text: 'Uncaught ' + (e && e.stack ? e.stack : String(e)) + '\n', timestamp: now() }));
process.on('unhandledRejection', (e) => emit({ type: 'stderr', text: 'Unhandled rejection ' + (e && e.stack ? e.stack : String(e)) + '\n', timestamp: now() }));
let count = 0;
function errorEvent(e) {
  if (e instanceof Error || (e && typeof e === 'object' && 'stack' in e)) {
    return { type: 'error', name: e.name || 'Error', value: e.message === undefined ? String(e) : String(e.message), traceback: String(e.stack || '') };
  }
  return { type: 'error', name: 'Error', value: util.inspect(e), traceback: '' };
}
function represent(v) {
  const data = { 'text/plain': typeof v === 'string' ? "'" + v + "'" : util.inspect(v, { depth: 4, colors: false }) };
  if (v && typeof v === 'object') {
    for (const [mime, fn] of [['text/html', '_repr_html_'], ['image/png', '_repr_png_'], ['image/svg+xml', '_repr_svg_'], ['text/markdown', '_repr_markdown_'], ['application/json', '_repr_json_']]) {
      if (typeof v[fn] === 'function') {
        try { data[mime] = v[fn](); } catch {}
      }
    }
  }
  return data;
}
globalThis.display = (v) => emit({ type: 'result', main: false, data: represent(v) });
const queue = [];
let busy = false;
async function runOne(req) {
  current = req.id === undefined ? null : req.id;
  const env = req.env || {};
  const saved = {};
  for (const k of Object.keys(env)) { saved[k] = process.env[k]; process.env[k] = env[k]; }
  count += 1;
  emit({ type: 'number_of_executions', execution_count: count });
  try {
    let value = vm.runInThisContext(String(req.code || ''), { filename: 'cell' + count + '.js', breakOnSigint: true, displayErrors: false });
    if (value && typeof value.then === 'function') value = await value;
    if (value !== undefined) emit({ type: 'result', main: true, data: represent(value) });
  } catch (e) {
    if (!req.timedOut) emit(errorEvent(e));
  } finally {
    for (const k of Object.keys(saved)) { if (saved[k] === undefined) delete process.env[k]; else process.env[k] = saved[k]; }
    emit({ type: 'done' });
    current = null;
  }
}
async function pump() {
  if (busy) return;
  busy = true;
  while (queue.length > 0) await runOne(queue.shift());
  busy = false;
}
const rl = readline.createInterface({ input: process.stdin, terminal: false });
rl.on('line', (line) => {
  let req;
  try { req = JSON.parse(line); } catch { return; }
  queue.push(req);
  pump();
});
rl.on('close', () => process.exit(0));
emit({ type: 'ready', pid: process.pid });
`;
