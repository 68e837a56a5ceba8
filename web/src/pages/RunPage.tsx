/** Edit a multi-file project (or pick an archive: tar.gz, tar or zip), run it, watch output stream in, read the result. */
import { useEffect, useMemo, useRef, useState } from 'react';
import type { PackInfo } from '../../../sdk/src/index.ts';
import { CodeEditor } from '../components/CodeEditor.tsx';
import { ErrorBox } from '../components/ErrorBox.tsx';
import { FileTabs } from '../components/FileTabs.tsx';
import { type OutputChunk, type ResultEvent, RunOutput, RunResult } from '../components/RunOutput.tsx';
import { useApi } from '../lib/api.tsx';
import { usePacks, useSandboxes } from '../lib/catalog.ts';
import { type ProjectFile, type RunEvent, runArchive, runInSandbox, runOneShot, starterFiles } from '../lib/runner.ts';

type Source = 'files' | 'archive';

export function RunPage({ initialSandbox }: { initialSandbox?: string }) {
  const { client, report } = useApi();
  const packs = usePacks();
  const sandboxes = useSandboxes(3000);
  const [target, setTarget] = useState(initialSandbox ?? '');
  const [packName, setPackName] = useState('');
  const project = useProject();
  const [source, setSource] = useState<Source>('files');
  const [archive, setArchive] = useState<File>();
  const [archiveEntry, setArchiveEntry] = useState('');
  const [stdin, setStdin] = useState('');
  const [timeoutSec, setTimeoutSec] = useState('');
  const [running, setRunning] = useState(false);
  const [chunks, setChunks] = useState<OutputChunk[]>([]);
  const [result, setResult] = useState<ResultEvent>();
  const [error, setError] = useState<string>();
  const abort = useRef<AbortController | undefined>(undefined);

  const live = sandboxes.data?.filter((s) => s.state === 'ready') ?? [];
  const targetSandbox = live.find((s) => s.id === target);
  // A live sandbox fixes the pack; a one-shot run uses the chosen one.
  const effectivePack = targetSandbox?.pack ?? packName;
  const pack: PackInfo | undefined = packs.data?.find((p) => p.name === effectivePack);

  useEffect(() => {
    if (!packName && packs.data?.length) setPackName(packs.data.find((p) => p.name === 'python')?.name ?? packs.data[0]!.name);
  }, [packs.data, packName]);
  // Keyed on the pack name only: re-running on every edit would throw the user's files away.
  useEffect(() => {
    if (pack) project.resetFor(pack);
  }, [pack?.name]);
  useEffect(() => {
    if (pack && !archiveEntry) setArchiveEntry(pack.run.fileName);
  }, [pack, archiveEntry]);

  const append = (stream: OutputChunk['stream'], text: string) =>
    setChunks((cs) => {
      const last = cs[cs.length - 1];
      if (last && last.stream === stream && stream !== 'status') return [...cs.slice(0, -1), { stream, text: last.text + text }];
      return [...cs, { stream, text }];
    });

  const run = async () => {
    if (!pack || running) return;
    const ac = new AbortController();
    abort.current = ac;
    setRunning(true);
    setChunks([]);
    setResult(undefined);
    setError(undefined);
    const settings = { pack, stdin, timeoutMs: timeoutSec ? Math.round(Number(timeoutSec) * 1000) : undefined };
    try {
      let events: AsyncGenerator<RunEvent>;
      if (source === 'archive') {
        if (!archive) throw new Error('choose a .tar.gz, .tar or .zip file first');
        events = runArchive(client, target || undefined, archive, { ...settings, entrypoint: archiveEntry || pack.run.fileName }, ac.signal);
      } else if (target) {
        events = runInSandbox(client, target, project.files, { ...settings, entrypoint: project.entrypoint }, ac.signal);
      } else {
        events = runOneShot(client, project.files, { ...settings, entrypoint: project.entrypoint }, ac.signal);
      }
      for await (const ev of events) {
        if (ev.type === 'status') append('status', `▸ ${ev.text}\n`);
        else if (ev.type === 'stdout' || ev.type === 'stderr') append(ev.type, ev.data);
        else if (ev.type === 'truncated') append('status', `\n▸ ${ev.droppedBytes} bytes of ${ev.stream} dropped here (over the output cap); its last bytes follow\n`);
        else if (ev.type === 'result') setResult(ev);
        else if (ev.type === 'error') setError(`${ev.code}: ${ev.message}`);
      }
    } catch (e) {
      setError(report(e));
    } finally {
      setRunning(false);
      abort.current = undefined;
    }
  };

  return (
    <section className="run-page">
      <div className="run-controls card">
        <label>
          Run in
          <select name="target" value={target} onChange={(e) => setTarget(e.target.value)}>
            <option value="">a new sandbox (one-shot)</option>
            {live.map((s) => (
              <option key={s.id} value={s.id}>
                {s.id} ({s.pack}, {s.backend})
              </option>
            ))}
            {target && !targetSandbox && <option value={target}>{target} (not live)</option>}
          </select>
        </label>
        <label>
          Pack
          <select name="pack" value={effectivePack} disabled={!!targetSandbox} onChange={(e) => setPackName(e.target.value)}>
            {packs.data?.map((p) => (
              <option key={p.name} value={p.name} disabled={!p.imageReady}>
                {p.name}
              </option>
            ))}
          </select>
        </label>
        <div className="segmented" role="radiogroup" aria-label="Source">
          {/* biome-ignore lint/a11y/useSemanticElements: a segmented control: buttons in a radiogroup, styled as one */}
          <button type="button" role="radio" aria-checked={source === 'files'} className={source === 'files' ? 'on' : ''} onClick={() => setSource('files')}>
            Editor
          </button>
          {/* biome-ignore lint/a11y/useSemanticElements: see above */}
          <button type="button" role="radio" aria-checked={source === 'archive'} className={source === 'archive' ? 'on' : ''} onClick={() => setSource('archive')}>
            Upload archive
          </button>
        </div>
        <label>
          Timeout s<input name="timeout" type="number" min="1" placeholder="30" value={timeoutSec} onChange={(e) => setTimeoutSec(e.target.value)} />
        </label>
        <div className="spacer" />
        {running ? (
          <button type="button" className="danger" onClick={() => abort.current?.abort()}>
            Stop
          </button>
        ) : (
          <button type="button" className="primary run" onClick={() => void run()} disabled={!pack} title="Ctrl+Enter">
            ▶ Run
          </button>
        )}
      </div>
      <ErrorBox error={packs.error ?? sandboxes.error} />

      <div className="run-body">
        <div className="run-left">
          {source === 'files' ? (
            <>
              <FileTabs paths={project.files.map((f) => f.path)} active={project.active} onSelect={project.setActive} onAdd={project.add} onRename={project.rename} onRemove={project.remove} />
              <CodeEditor path={project.active} value={project.files.find((f) => f.path === project.active)?.content ?? ''} onChange={project.edit} onRun={() => void run()} />
              <label className="inline-label">
                Entrypoint
                <select name="entrypoint" value={project.entrypoint} onChange={(e) => project.setEntrypoint(e.target.value)}>
                  {project.files.map((f) => (
                    <option key={f.path} value={f.path}>
                      {f.path}
                    </option>
                  ))}
                </select>
                {pack && <span className="muted small mono">{pack.run.projectCommand.join(' ').replace(/\{(entrypoint|file)\}/g, project.entrypoint)}</span>}
              </label>
            </>
          ) : (
            <div className="card archive">
              <p>
                Upload a <code>.tar.gz</code>, <code>.tar</code> or <code>.zip</code> of a whole project (the format is told from its first bytes). It is unpacked into <code>/workspace</code> of{' '}
                {target ? <span className="mono">{target}</span> : 'a sandbox created for this run (and deleted after)'}, then its entrypoint runs with the pack's project command.
              </p>
              <label>
                Project archive
                <input name="archive" type="file" accept=".tar.gz,.tgz,.tar,.zip,application/gzip,application/x-tar,application/zip" onChange={(e) => setArchive(e.target.files?.[0])} />
              </label>
              <label>
                Entrypoint
                <input name="archiveEntrypoint" value={archiveEntry} onChange={(e) => setArchiveEntry(e.target.value)} />
              </label>
              {pack && <p className="muted small mono">{pack.run.projectCommand.join(' ').replace(/\{(entrypoint|file)\}/g, archiveEntry)}</p>}
            </div>
          )}
          <label className="stdin">
            stdin
            <textarea name="stdin" rows={3} placeholder="input for the program (optional)" value={stdin} onChange={(e) => setStdin(e.target.value)} />
          </label>
        </div>
        <div className="run-right">
          <RunOutput chunks={chunks} running={running} />
          <ErrorBox error={error} />
          {result && <RunResult r={result} />}
        </div>
      </div>
    </section>
  );
}

/** The editor's files, the open tab and the entrypoint. */
function useProject() {
  const [files, setFiles] = useState<ProjectFile[]>([]);
  const [active, setActive] = useState('');
  const [entrypoint, setEntrypoint] = useState('');
  const [edited, setEdited] = useState(false);

  return useMemo(() => {
    const has = (p: string) => files.some((f) => f.path === p);
    const check = (p: string): string | undefined => {
      if (p.startsWith('/') || p.split('/').includes('..')) return 'use a relative path inside the project';
      if (has(p)) return `${p} already exists`;
      return undefined;
    };
    return {
      files,
      active,
      entrypoint,
      setActive,
      setEntrypoint,
      /** New starter files for a pack, unless the user already edited the project. */
      resetFor(pack: PackInfo) {
        if (edited && files.length) return;
        const start = starterFiles(pack);
        setFiles(start);
        setActive(start[0]!.path);
        setEntrypoint(pack.run.fileName);
      },
      edit(path: string, content: string) {
        setFiles((fs) => fs.map((f) => (f.path === path ? { ...f, content } : f)));
        setEdited(true);
      },
      add(path: string) {
        const err = check(path);
        if (err) return err;
        setFiles((fs) => [...fs, { path, content: '' }]);
        setActive(path);
        setEdited(true);
        return undefined;
      },
      rename(from: string, to: string) {
        const err = check(to);
        if (err) return err;
        setFiles((fs) => fs.map((f) => (f.path === from ? { ...f, path: to } : f)));
        if (active === from) setActive(to);
        if (entrypoint === from) setEntrypoint(to);
        setEdited(true);
        return undefined;
      },
      remove(path: string) {
        const rest = files.filter((f) => f.path !== path);
        if (!rest.length) return;
        setFiles(rest);
        if (active === path) setActive(rest[0]!.path);
        if (entrypoint === path) setEntrypoint(rest[0]!.path);
        setEdited(true);
      },
    };
  }, [files, active, entrypoint, edited]);
}
