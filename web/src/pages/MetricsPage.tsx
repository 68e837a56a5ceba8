/** Charts of what the sampler saw since the dashboard opened, and the warm pools right now. */
import { ErrorBox } from '../components/ErrorBox.tsx';
import { LineChart } from '../components/LineChart.tsx';
import { ms } from '../lib/format.ts';
import type { MetricsHistory } from '../lib/metrics.ts';

export function MetricsPage({ samples: history }: { samples: MetricsHistory }) {
  const s = history.samples;
  const times = s.map((x) => x.atMs);
  const latest = s[s.length - 1];
  return (
    <section>
      <div className="section-head">
        <h2>Metrics</h2>
        <span className="muted small">
          sampled every 2 s from{' '}
          <a href="/metrics" target="_blank" rel="noreferrer">
            /metrics
          </a>{' '}
          and /v1/pools since this page opened ({s.length} samples)
        </span>
      </div>
      <ErrorBox error={history.error} />
      <div className="stats">
        <Stat label="Active sandboxes" value={latest ? String(latest.activeSandboxes) : '–'} />
        <Stat label="Creates" value={latest ? String(latest.createsTotal) : '–'} />
        <Stat label="Mean create latency" value={ms(latest?.createMeanAllMs)} />
        <Stat label="Capacity in use" value={latest ? String(latest.capacityInUse) : '–'} />
        <Stat label="Queued creates" value={latest ? String(latest.queueDepth) : '–'} />
        <Stat label="Errors returned" value={latest ? String(latest.errorsTotal) : '–'} />
      </div>
      <div className="charts">
        <LineChart testId="chart-create" title="Create latency (mean per interval)" unit="ms" times={times} series={[{ label: 'create', color: '#c2410c', values: s.map((x) => x.createMeanMs) }]} />
        <LineChart
          testId="chart-pool"
          title="Warm pool size vs target"
          unit=""
          times={times}
          series={[
            { label: 'ready', color: '#15803d', values: s.map((x) => x.poolReady) },
            { label: 'starting', color: '#ca8a04', values: s.map((x) => x.poolStarting) },
            { label: 'target', color: '#64748b', values: s.map((x) => x.poolTarget), dashed: true },
          ]}
        />
        <LineChart
          testId="chart-active"
          title="Active sandboxes"
          unit=""
          times={times}
          series={[
            { label: 'sandboxes', color: '#2563eb', values: s.map((x) => x.activeSandboxes) },
            { label: 'queued', color: '#dc2626', values: s.map((x) => x.queueDepth) },
          ]}
        />
        <LineChart testId="chart-load" title="Host load (1 min)" unit="" times={times} series={[{ label: 'load1', color: '#7c3aed', values: s.map((x) => x.hostLoad1) }]} />
      </div>

      <h2>Warm pools</h2>
      {history.pools.length === 0 ? (
        <p className="muted small">
          No warm pools configured (set <code>KILN_POOL</code>, e.g. <code>python=2,node=1</code>).
        </p>
      ) : (
        <table className="grid">
          <thead>
            <tr>
              <th>Backend</th>
              <th>Pack</th>
              <th>Size</th>
              <th>Ready / target</th>
              <th>Starting</th>
              <th>Hits</th>
              <th>Misses</th>
              <th>Failures</th>
            </tr>
          </thead>
          <tbody>
            {history.pools.map((p) => (
              <tr key={`${p.key.backend}/${p.key.pack}/${p.key.cpus}/${p.key.memoryMib}/${p.key.diskMib}`}>
                <td>{p.key.backend}</td>
                <td>{p.key.pack}</td>
                <td className="small">
                  {p.key.cpus} cpu · {p.key.memoryMib} MiB · {p.key.diskMib} MiB disk
                </td>
                <td>
                  <meter min={0} max={Math.max(1, p.target)} value={p.ready} /> {p.ready} / {p.target}
                </td>
                <td>{p.starting}</td>
                <td>{p.hits}</td>
                <td>{p.misses}</td>
                <td>{p.failures}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function Stat({ label, value }: { label: string; value: string }) {
  return (
    <div className="stat">
      <div className="stat-value">{value}</div>
      <div className="stat-label">{label}</div>
    </div>
  );
}
