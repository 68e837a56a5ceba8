/**
 * A sandbox's network: its policy, address and allow list, byte counters, the live audit trail
 * (DNS queries and connections, polled every second with after=<last seq>, newest first, refused
 * rows marked) and the proposed allowlist to copy. #/network?sandbox=ID; without an id, a picker.
 */
import { useCallback, useEffect, useRef, useState } from 'react';
import type { NetworkEvent, NetworkEvents, SandboxInfo } from '../../../sdk/src/index.ts';
import { ErrorBox } from '../components/ErrorBox.tsx';
import { useApi } from '../lib/api.tsx';
import { useSandboxes } from '../lib/catalog.ts';
import { bytes } from '../lib/format.ts';
import { eventAddress, filterEvents, mergeEvents, type VerdictFilter } from '../lib/network.ts';
import { usePoll } from '../lib/usePoll.ts';

export function NetworkPage({ sandbox }: { sandbox?: string }) {
  return sandbox ? <Network key={sandbox} id={sandbox} /> : <Picker />;
}

function Network({ id }: { id: string }) {
  const { client, report } = useApi();
  const [info, setInfo] = useState<SandboxInfo>();
  const [answer, setAnswer] = useState<Omit<NetworkEvents, 'events'>>();
  const [events, setEvents] = useState<NetworkEvent[]>([]);
  const [filter, setFilter] = useState<VerdictFilter>('all');
  const [error, setError] = useState<string>();
  const last = useRef(0);

  useEffect(() => {
    client.sandboxes.get(id).then(setInfo, (e: unknown) => setError(report(e)));
  }, [client, id, report]);

  const poll = useCallback(async () => {
    try {
      const r = await client.sandboxes.networkEvents(id, { after: last.current || undefined });
      const newest = r.events.at(-1)?.seq;
      if (newest !== undefined) last.current = Math.max(last.current, newest);
      setEvents((old) => mergeEvents(old, r.events));
      setAnswer({ policy: r.policy, counters: r.counters, proposal: r.proposal });
      setError(undefined);
    } catch (e) {
      setError(report(e));
    }
  }, [client, id, report]);
  usePoll(poll, 1000, [poll]);

  const net = info?.network;
  const shown = filterEvents(events, filter);
  return (
    <section className="network-page">
      <div className="card network-head">
        <h2>
          Network <span className="mono">{id}</span>
        </h2>
        <dl className="network-facts" data-testid="network-facts">
          <dt>policy</dt>
          <dd data-testid="policy">
            {answer?.policy ?? net?.policy ?? '–'}
            {net?.learn && <span className="badge">learn</span>}
          </dd>
          <dt>address</dt>
          <dd className="mono">{net?.address ?? '–'}</dd>
          <dt>bandwidth</dt>
          <dd>{net ? (net.bandwidthMbit ? `${net.bandwidthMbit} Mbit/s` : 'unlimited') : '–'}</dd>
          <dt>sent</dt>
          <dd data-testid="bytes-out">{bytes(answer?.counters.bytesOut)}</dd>
          <dt>received</dt>
          <dd data-testid="bytes-in">{bytes(answer?.counters.bytesIn)}</dd>
          <dt>refused</dt>
          <dd data-testid="refused-count" className={answer?.counters.refused ? 'error-text' : undefined}>
            {answer?.counters.refused ?? '–'}
          </dd>
        </dl>
        {net && net.policy === 'allowlist' && (
          <div className="small">
            <span className="muted">allow list</span>{' '}
            {net.allow.length ? (
              <ul className="allow-list mono" data-testid="allow-list">
                {net.allow.map((a) => (
                  <li key={a}>{a}</li>
                ))}
              </ul>
            ) : (
              <span className="muted">(empty)</span>
            )}
          </div>
        )}
      </div>
      <ErrorBox error={error} />
      {answer && <Proposal allow={answer.proposal.allow} />}
      <div className="section-head">
        <h2>
          Events <span className="count">{shown.length}</span>
        </h2>
        <label className="inline-label">
          show
          <select name="verdict" value={filter} onChange={(e) => setFilter(e.target.value as VerdictFilter)}>
            <option value="all">all</option>
            <option value="allowed">allowed</option>
            <option value="refused">refused</option>
          </select>
        </label>
      </div>
      {shown.length === 0 ? (
        <p className="muted empty">{events.length ? 'No event matches the filter.' : 'No network activity yet.'}</p>
      ) : (
        <table className="grid network-events">
          <thead>
            <tr>
              <th>Time</th>
              <th>Kind</th>
              <th>Verdict</th>
              <th>Name</th>
              <th>Address</th>
              <th>Protocol</th>
              <th>Reason</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((e) => (
              <tr key={e.seq} data-seq={e.seq} data-verdict={e.verdict} className={e.verdict === 'refused' ? 'refused' : undefined}>
                <td className="small mono" title={e.at}>
                  {e.at.slice(11, 23)}
                </td>
                <td>{e.kind}</td>
                <td>
                  <span className={`verdict verdict-${e.verdict}`}>{e.verdict === 'refused' ? '✕ refused' : e.verdict}</span>
                </td>
                <td className="mono">{e.name ?? ''}</td>
                <td className="mono">{eventAddress(e)}</td>
                <td>{e.protocol ?? ''}</td>
                <td className="small">{e.reason ?? ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function Proposal({ allow }: { allow: string[] }) {
  const [copied, setCopied] = useState<string>();
  const text = allow.join('\n');
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
      setCopied('copied');
    } catch {
      setCopied('the browser refused the clipboard: select the list and copy it');
    }
  };
  return (
    <div className="card proposal">
      <div className="section-head">
        <h3>Proposed allowlist</h3>
        <button type="button" className="ghost" disabled={!allow.length} onClick={() => void copy()}>
          Copy
        </button>
        {copied && (
          <span className="small muted" role="status">
            {copied}
          </span>
        )}
      </div>
      {allow.length ? <pre data-testid="proposal">{text}</pre> : <p className="muted small">Nothing reached yet.</p>}
    </div>
  );
}

function Picker() {
  const sandboxes = useSandboxes(3000);
  const withNetwork = sandboxes.data?.filter((s) => s.network && s.network.policy !== 'none') ?? [];
  return (
    <section className="network-page">
      <ErrorBox error={sandboxes.error} />
      <h2>Networked sandboxes</h2>
      {sandboxes.data && withNetwork.length === 0 && <p className="muted empty">No live sandbox has a network. Create one with a network policy (allowlist or open).</p>}
      {withNetwork.length > 0 && (
        <table className="grid">
          <tbody>
            {withNetwork.map((s) => (
              <tr key={s.id} data-sandbox={s.id}>
                <td className="mono">{s.id}</td>
                <td>{s.network!.policy}</td>
                <td className="mono small">{s.network!.address}</td>
                <td className="actions">
                  <a className="button ghost" href={`#/network?sandbox=${encodeURIComponent(s.id)}`}>
                    Network
                  </a>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
