/** Which backends can run here (and why not), what they can do, and which pack images are built. */
import type { BackendInfo } from '../../../sdk/src/index.ts';
import { ErrorBox } from '../components/ErrorBox.tsx';
import { useBackends, usePacks } from '../lib/catalog.ts';
import { bytes, short } from '../lib/format.ts';

export function BackendsPage() {
  const backends = useBackends();
  const packs = usePacks();
  return (
    <section>
      <div className="section-head">
        <h2>Backends</h2>
        <button type="button" className="ghost" onClick={() => { void backends.reload(); void packs.reload(); }}>Refresh</button>
      </div>
      <ErrorBox error={backends.error} />
      <div className="cards">
        {backends.data?.backends.map((b) => <BackendCard key={b.name} b={b} isDefault={b.name === backends.data?.default} />)}
      </div>

      <h2>Language packs</h2>
      <ErrorBox error={packs.error} />
      {packs.data && (
        <table className="grid packs">
          <thead><tr><th>Pack</th><th>Description</th><th>Image</th><th>Size</th><th>Snippet command</th><th>Project command</th></tr></thead>
          <tbody>
            {packs.data.map((p) => (
              <tr key={p.name} data-pack={p.name}>
                <td><strong>{p.name}</strong></td>
                <td>{p.description}</td>
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
      {packs.data?.some((p) => !p.imageReady) && <p className="muted small">Build missing images with <code>kiln images build &lt;pack&gt;</code>.</p>}
    </section>
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
          <dl className="kv">{caps.map(([k, v]) => <Entry key={k} k={k} v={v} />)}</dl>
        </>
      )}
      {info.length > 0 && (
        <>
          <h4>Host</h4>
          <dl className="kv">{info.map(([k, v]) => <Entry key={k} k={k} v={v} />)}</dl>
        </>
      )}
    </article>
  );
}

function Entry({ k, v }: { k: string; v: unknown }) {
  const text = typeof v === 'boolean' ? (v ? 'yes' : 'no') : short(v);
  return (<><dt>{k}</dt><dd className={typeof v === 'boolean' ? (v ? 'yes' : 'no') : ''}>{text}</dd></>);
}
