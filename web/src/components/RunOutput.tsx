/** Streamed stdout/stderr as it arrives, then the result: exit, time, CPU, memory and limits hit. */
import { useEffect, useRef } from 'react';
import type { ExecEvent } from '../../../sdk/src/index.ts';
import { bytes, ms } from '../lib/format.ts';

export type ResultEvent = Extract<ExecEvent, { type: 'result' }>;

export interface OutputChunk {
  stream: 'stdout' | 'stderr' | 'status';
  text: string;
}

export function RunOutput({ chunks, running }: { chunks: OutputChunk[]; running: boolean }) {
  const box = useRef<HTMLPreElement>(null);
  useEffect(() => {
    const el = box.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [chunks]);
  return (
    <pre className={running ? 'output running' : 'output'} ref={box} data-testid="run-output" aria-live="polite">
      {chunks.length === 0 && <span className="muted">{running ? 'waiting for output…' : 'Output appears here as the program writes it.'}</span>}
      {chunks.map((c, i) => (
        <span key={i} className={c.stream}>
          {c.text}
        </span>
      ))}
    </pre>
  );
}

export function RunResult({ r }: { r: ResultEvent }) {
  const ok = r.exitCode === 0 && !r.timedOut && !r.oomKilled;
  const flags = [r.timedOut && 'timed out', r.oomKilled && 'killed: out of memory', r.outputTruncated && 'output truncated', r.signal && `signal ${r.signal}`].filter(Boolean) as string[];
  return (
    <div className={ok ? 'result ok' : 'result bad'} data-testid="run-result">
      <div className="result-main">
        <span className="result-label">exit</span>
        <span className="result-exit" data-testid="exit-code">
          {r.exitCode ?? '–'}
        </span>
      </div>
      <dl className="result-stats">
        <div>
          <dt>duration</dt>
          <dd>{ms(r.durationMs)}</dd>
        </div>
        <div>
          <dt>cpu</dt>
          <dd title={`user ${ms(r.usage.cpuUserMs)}, system ${ms(r.usage.cpuSystemMs)}`}>{ms(r.usage.cpuUserMs + r.usage.cpuSystemMs)}</dd>
        </div>
        <div>
          <dt>peak memory</dt>
          <dd>{bytes(r.usage.peakMemoryBytes)}</dd>
        </div>
        {r.createMs !== undefined && (
          <div>
            <dt>sandbox create</dt>
            <dd>{ms(r.createMs)}</dd>
          </div>
        )}
        <div>
          <dt>timed out</dt>
          <dd className={r.timedOut ? 'bad' : ''}>{r.timedOut ? 'yes' : 'no'}</dd>
        </div>
        <div>
          <dt>OOM</dt>
          <dd className={r.oomKilled ? 'bad' : ''}>{r.oomKilled ? 'yes' : 'no'}</dd>
        </div>
        <div>
          <dt>truncated</dt>
          <dd className={r.outputTruncated ? 'bad' : ''}>{r.outputTruncated ? 'yes' : 'no'}</dd>
        </div>
      </dl>
      {flags.length > 0 && <div className="result-flags">{flags.join(' · ')}</div>}
    </div>
  );
}
