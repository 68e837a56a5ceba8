/** Live sandboxes: create, watch, open in Run, Terminal or (with a workspace) Review, delete. */
import { useEffect, useState } from 'react';
import { type BackendName, type CreateSandboxOptions, type SandboxInfo, workspaceOf } from '../../../sdk/src/index.ts';
import { ErrorBox } from '../components/ErrorBox.tsx';
import { OpenPort } from '../components/OpenPort.tsx';
import { useApi } from '../lib/api.tsx';
import { useBackends, usePacks, useSandboxes } from '../lib/catalog.ts';
import { age, ms, short } from '../lib/format.ts';
import { allowLines } from '../lib/network.ts';

export function SandboxesPage() {
  const sandboxes = useSandboxes(2000);
  const now = useNow(1000);
  return (
    <section>
      <CreateForm onCreated={() => void sandboxes.reload()} />
      <div className="section-head">
        <h2>
          Live sandboxes <span className="count">{sandboxes.data?.length ?? ''}</span>
        </h2>
        <button type="button" className="ghost" onClick={() => void sandboxes.reload()}>
          Refresh
        </button>
      </div>
      <ErrorBox error={sandboxes.error} />
      {sandboxes.data && sandboxes.data.length === 0 && <p className="muted empty">No sandboxes. Create one above.</p>}
      {sandboxes.data && sandboxes.data.length > 0 && (
        <table className="grid sandboxes">
          <thead>
            <tr>
              <th>ID</th>
              <th>Pack</th>
              <th>Backend</th>
              <th>State</th>
              <th>Age</th>
              <th>Ready in</th>
              <th>Size</th>
              <th>Execs</th>
              <th>Details</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {sandboxes.data.map((sb) => (
              <SandboxRow key={sb.id} sb={sb} now={now} onDeleted={() => void sandboxes.reload()} />
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function SandboxRow({ sb, now, onDeleted }: { sb: SandboxInfo; now: number; onDeleted(): void }) {
  const { client, report } = useApi();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const remove = async () => {
    setBusy(true);
    setError(undefined);
    try {
      await client.sandboxes.delete(sb.id);
      onDeleted();
    } catch (e) {
      setError(report(e));
      setBusy(false);
    }
  };
  const details = Object.entries(sb.details ?? {});
  const workspace = workspaceOf(sb);
  return (
    <tr data-sandbox={sb.id}>
      <td className="mono">{sb.id}</td>
      <td>
        {sb.pack}
        {workspace && (
          <div className="mono small muted" title="workspace: the host directory under /workspace">
            {workspace.path}
          </div>
        )}
      </td>
      <td>{sb.backend}</td>
      <td>
        <span className={`state state-${sb.state}`}>{sb.state}</span>
        {sb.exitReason && <div className="muted small">{sb.exitReason}</div>}
      </td>
      <td title={`created ${sb.createdAt}, expires ${sb.expiresAt}`}>{age(sb.createdAt, now)}</td>
      <td>
        {ms(sb.readyMs)}
        {sb.fromPool && <span className="badge">pool</span>}
      </td>
      <td className="small">
        {sb.cpus} cpu · {sb.memoryMib} MiB · {sb.diskMib} MiB disk
        {sb.network && sb.network.policy !== 'none' && (
          <div className="muted" data-testid="sandbox-network">
            net {sb.network.policy} <span className="mono">{sb.network.address}</span>
          </div>
        )}
      </td>
      <td>{sb.execsRunning}</td>
      <td className="small details">
        {details.length === 0 ? (
          <span className="muted">–</span>
        ) : (
          details.map(([k, v]) => (
            <div key={k}>
              <span className="muted">{k}</span> {short(v)}
            </div>
          ))
        )}
      </td>
      <td className="actions">
        <a className="button ghost" href={`#/run?sandbox=${encodeURIComponent(sb.id)}`}>
          Run
        </a>
        <a className="button ghost" href={`#/terminal?sandbox=${encodeURIComponent(sb.id)}`}>
          Terminal
        </a>
        {sb.network && sb.network.policy !== 'none' && (
          <a className="button ghost" href={`#/network?sandbox=${encodeURIComponent(sb.id)}`} title={`${sb.network.policy} · ${sb.network.address}`}>
            Network
          </a>
        )}
        {workspace && (
          <a className="button ghost" href={`#/review?sandbox=${encodeURIComponent(sb.id)}`}>
            Review
            {workspace.changes ? <span className="badge">{workspace.changes}</span> : null}
          </a>
        )}
        {sb.state === 'ready' && <OpenPort id={sb.id} />}
        <button type="button" className="danger" disabled={busy} onClick={() => void remove()} aria-label={`Delete ${sb.id}`}>
          {busy ? 'Deleting…' : 'Delete'}
        </button>
        {error && <div className="error small">{error}</div>}
      </td>
    </tr>
  );
}

function CreateForm({ onCreated }: { onCreated(sb: SandboxInfo): void }) {
  const { client, report } = useApi();
  const packs = usePacks();
  const backends = useBackends();
  const [pack, setPack] = useState('');
  const [backend, setBackend] = useState('');
  const [cpus, setCpus] = useState('');
  const [memoryMib, setMemoryMib] = useState('');
  const [diskMib, setDiskMib] = useState('');
  const [policy, setPolicy] = useState('');
  const [allow, setAllow] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const [created, setCreated] = useState<SandboxInfo>();

  useEffect(() => {
    if (!pack && packs.data?.length) setPack(packs.data.find((p) => p.name === 'python')?.name ?? packs.data[0]!.name);
  }, [packs.data, pack]);

  const submit = async () => {
    setBusy(true);
    setError(undefined);
    setCreated(undefined);
    try {
      const o: CreateSandboxOptions = { pack };
      if (backend) o.backend = backend as BackendName;
      if (cpus) o.cpus = Number(cpus);
      if (memoryMib) o.memoryMib = Number(memoryMib);
      if (diskMib) o.diskMib = Number(diskMib);
      if (policy === 'none' || policy === 'open') o.network = { policy };
      else if (policy === 'allowlist' || policy === 'learn') o.network = { policy: 'allowlist', allow: allowLines(allow), learn: policy === 'learn' || undefined };
      const sb = await client.sandboxes.create(o);
      setCreated(sb);
      onCreated(sb);
    } catch (e) {
      setError(report(e));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form
      className="card create"
      noValidate
      onSubmit={(e) => {
        e.preventDefault();
        void submit();
      }}
    >
      <h2>New sandbox</h2>
      <div className="row">
        <label>
          Pack
          <select name="pack" value={pack} onChange={(e) => setPack(e.target.value)} required>
            {packs.data?.map((p) => (
              <option key={p.name} value={p.name} disabled={!p.imageReady}>
                {p.name}
                {p.imageReady ? '' : ' (image not built)'}
              </option>
            ))}
          </select>
        </label>
        <label>
          Backend
          <select name="backend" value={backend} onChange={(e) => setBackend(e.target.value)}>
            <option value="">default{backends.data ? ` (${backends.data.default})` : ''}</option>
            {backends.data?.backends.map((b) => (
              <option key={b.name} value={b.name} disabled={!b.available}>
                {b.name}
                {b.available ? '' : ' (unavailable)'}
              </option>
            ))}
          </select>
        </label>
        <label>
          CPUs
          <input name="cpus" type="number" min="1" step="1" placeholder="default" value={cpus} onChange={(e) => setCpus(e.target.value)} />
        </label>
        <label>
          Memory MiB
          <input name="memoryMib" type="number" min="16" step="1" placeholder="default" value={memoryMib} onChange={(e) => setMemoryMib(e.target.value)} />
        </label>
        <label>
          Disk MiB
          <input name="diskMib" type="number" min="1" step="1" placeholder="default" value={diskMib} onChange={(e) => setDiskMib(e.target.value)} />
        </label>
        <label>
          Network
          <select name="networkPolicy" value={policy} onChange={(e) => setPolicy(e.target.value)}>
            <option value="">default</option>
            <option value="none">none (loopback only)</option>
            <option value="allowlist">allowlist</option>
            <option value="learn">allowlist, learn mode</option>
            <option value="open">open</option>
          </select>
        </label>
        <button type="submit" className="primary" disabled={busy || !pack}>
          {busy ? 'Creating…' : 'Create'}
        </button>
      </div>
      {(policy === 'allowlist' || policy === 'learn') && (
        <label className="allow-entry">
          Allow (one entry per line: example.org, *.example.org, example.org:5432, 198.51.100.0/24)
          <textarea name="networkAllow" rows={3} className="mono" value={allow} onChange={(e) => setAllow(e.target.value)} placeholder={'pypi.org\n*.pythonhosted.org'} />
        </label>
      )}
      <ErrorBox error={error ?? packs.error ?? backends.error} />
      {created && (
        <p className="ok small" role="status">
          Created <span className="mono">{created.id}</span> in {ms(created.readyMs)}
        </p>
      )}
    </form>
  );
}

function useNow(intervalMs: number): number {
  const [now, setNow] = useState(Date.now);
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), intervalMs);
    return () => clearInterval(t);
  }, [intervalMs]);
  return now;
}
