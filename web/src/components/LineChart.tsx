/** A small multi-series line chart in plain SVG; gaps where a value is undefined. */

export interface Series {
  label: string;
  color: string;
  values: Array<number | undefined>;
  dashed?: boolean;
}

const W = 360;
const H = 140;
const PAD = { l: 40, r: 8, t: 8, b: 18 };

export function LineChart({ title, series, times, unit, testId }: { title: string; series: Series[]; times: number[]; unit: string; testId?: string }) {
  const all = series.flatMap((s) => s.values.filter((v): v is number => v !== undefined && Number.isFinite(v)));
  const max = niceMax(all.length ? Math.max(...all) : 1);
  const n = times.length;
  const x = (i: number) => PAD.l + (n <= 1 ? 0 : (i / (n - 1)) * (W - PAD.l - PAD.r));
  const y = (v: number) => PAD.t + (1 - v / max) * (H - PAD.t - PAD.b);
  const span = n > 1 ? Math.round((times[n - 1]! - times[0]!) / 1000) : 0;

  return (
    <figure className="chart" data-testid={testId}>
      <figcaption>
        <span>{title}</span>
        <span className="legend">
          {series.map((s) => (
            <span key={s.label}>
              <i style={{ background: s.color }} />
              {s.label}{' '}
              <b>
                {fmt(last(s.values))}
                {unit && last(s.values) !== undefined ? ` ${unit}` : ''}
              </b>
            </span>
          ))}
        </span>
      </figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={title}>
        {[0, 0.5, 1].map((f) => (
          <g key={f}>
            <line x1={PAD.l} x2={W - PAD.r} y1={y(max * f)} y2={y(max * f)} className="gridline" />
            <text x={PAD.l - 4} y={y(max * f) + 3} textAnchor="end" className="axis">
              {fmt(max * f)}
            </text>
          </g>
        ))}
        <text x={PAD.l} y={H - 4} className="axis">
          {span ? `−${span}s` : ''}
        </text>
        <text x={W - PAD.r} y={H - 4} textAnchor="end" className="axis">
          now
        </text>
        {series.map((s) => (
          <g key={s.label}>
            <path d={path(s.values, x, y)} fill="none" stroke={s.color} strokeWidth={1.8} strokeDasharray={s.dashed ? '4 3' : undefined} />
            {s.values.map((v, i) => (v !== undefined && isolated(s.values, i) ? <circle key={i} cx={x(i)} cy={y(v)} r={2.2} fill={s.color} /> : null))}
          </g>
        ))}
        {n === 0 && (
          <text x={W / 2} y={H / 2} textAnchor="middle" className="axis">
            waiting for samples…
          </text>
        )}
      </svg>
    </figure>
  );
}

function path(values: Array<number | undefined>, x: (i: number) => number, y: (v: number) => number): string {
  let d = '';
  let pen = false;
  values.forEach((v, i) => {
    if (v === undefined || !Number.isFinite(v)) {
      pen = false;
      return;
    }
    d += `${pen ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
    pen = true;
  });
  return d;
}

/** A point with no defined neighbour would draw no line: show it as a dot. */
function isolated(values: Array<number | undefined>, i: number): boolean {
  return values[i - 1] === undefined && values[i + 1] === undefined;
}

function last(values: Array<number | undefined>): number | undefined {
  for (let i = values.length - 1; i >= 0; i--) if (values[i] !== undefined) return values[i];
  return undefined;
}

function niceMax(v: number): number {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmt(v: number | undefined): string {
  if (v === undefined) return '–';
  if (Number.isInteger(v)) return String(v);
  return v < 10 ? v.toFixed(1) : String(Math.round(v));
}
