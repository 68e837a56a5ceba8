/** Which backends can run here (and why not), what they can do, and which packs there are and what they contain. */
import { useEffect } from 'react';
import type { BackendInfo, PackInfo } from '../../../sdk/src/index.ts';
import { ErrorBox } from '../components/ErrorBox.tsx';
import { useBackends, usePacks } from '../lib/catalog.ts';
import { bytes, short } from '../lib/format.ts';

export function BackendsPage() {
  const backends = useBackends();
  const packs = usePacks();
  // While a custom pack builds (POST /v1/packs, kiln packs create), follow its progress.
  const building = packs.data?.some((p) => p.build && (p.build.state === 'queued' || p.build.state === 'building'));
  const reloadPacks = packs.reload;
  useEffect(() => {
    if (!building) return undefined;
    const timer = setInterval(() => {
      void reloadPacks();
    }, 2000);
    return () => clearInterval(timer);
  }, [building, reloadPacks]);
  return (
    <section>
      <div className="section-head">
        <h2>Backends</h2>
        <button
          type="button"
          className="ghost"
          onClick={() => {
            void backends.reload();
            void packs.reload();
          }}
        >
          Refresh
        </button>
      </div>
      <ErrorBox error={backends.error} />
      <div className="cards">
        {backends.data?.backends.map((b) => (
          <BackendCard key={b.name} b={b} isDefault={b.name === backends.data?.default} />
        ))}
      </div>

      <h2>Language packs</h2>
      <ErrorBox error={packs.error} />
      {packs.data && (
        <table className="grid packs">
          <thead>
            <tr>
              <th>Pack</th>
              <th>Description</th>
              <th>Contents</th>
              <th>Image</th>
              <th>Size</th>
              <th>Snippet command</th>
              <th>Project command</th>
            </tr>
          </thead>
          <tbody>
            {packs.data.map((p) => (
              <tr key={p.name} data-pack={p.name}>
                <td>
                  <strong>{p.name}</strong>
                  {p.source === 'custom' && (
                    <div className="small muted">
                      custom, from {p.base}, v{p.version}
                    </div>
                  )}
                </td>
                <td>
                  {p.description}
                  <BuildLine p={p} />
                </td>
                <td className="contents">
                  {p.languageVersion && <div className="mono small">{p.languageVersion}</div>}
                  {p.tools && <div className="small muted">{p.tools.join(' ')}</div>}
                </td>
                <td>
                  <span className={p.imageReady ? 'pill ok' : 'pill bad'}>{p.imageReady ? 'built' : 'not built'}</span>
                  {p.imageHash && <div className="mono small muted">{p.imageHash}</div>}
                </td>
                <td>{bytes(p.imageSizeBytes)}</td>
                <td className="mono small">{p.run.command.join(' ')}</td>
                <td className="mono small">{p.run.projectCommand.join(' ')}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {packs.data?.some((p) => !p.imageReady) && (
        <p className="muted small">
          Build missing images with <code>kiln images build &lt;pack&gt;</code>; make your own packs with <code>kiln packs create</code> (see images/packs/README.md).
        </p>
      )}
    </section>
  );
}

/** The latest custom build of a pack: its phase and message while running, its error if it failed. */
function BuildLine({ p }: { p: PackInfo }) {
  const b = p.build;
  if (!b || b.state === 'done') return null;
  if (b.state === 'failed')
    return (
      <div className="small build failed" data-build="failed">
        build v{b.version} failed: {b.error?.message}
      </div>
    );
  const pr = b.progress;
  return (
    <div className="small build" data-build={b.state}>
      {b.state} v{b.version}
      {pr ? `: ${pr.phase}${pr.percent === undefined ? '' : ` ${pr.percent}%`} · ${pr.message}` : ''}
    </div>
  );
}

function BackendCard({ b, isDefault }: { b: BackendInfo; isDefault: boolean }) {
  const caps = Object.entries(b.capabilities ?? {});
  const info = Object.entries(b.info ?? {});
  return (
    <article className={b.available ? 'card backend' : 'card backend unavailable'} data-backend={b.name}>
      <header>
        <h3>{b.name}</h3>
        {isDefault && <span className="badge">default</span>}
        <span className={b.available ? 'pill ok' : 'pill bad'}>{b.available ? 'available' : 'unavailable'}</span>
      </header>
      {b.reason && <p className="reason">{b.reason}</p>}
      {caps.length > 0 && (
        <>
          <h4>Capabilities</h4>
          <dl className="kv">
            {caps.map(([k, v]) => (
              <Entry key={k} k={k} v={v} />
            ))}
          </dl>
        </>
      )}
      {info.length > 0 && (
        <>
          <h4>Host</h4>
          <dl className="kv">
            {info.map(([k, v]) => (
              <Entry key={k} k={k} v={v} />
            ))}
          </dl>
        </>
      )}
    </article>
  );
}

function Entry({ k, v }: { k: string; v: unknown }) {
  const text = typeof v === 'boolean' ? (v ? 'yes' : 'no') : short(v);
  return (
    <>
      <dt>{k}</dt>
      <dd className={typeof v === 'boolean' ? (v ? 'yes' : 'no') : ''}>{text}</dd>
    </>
  );
}
