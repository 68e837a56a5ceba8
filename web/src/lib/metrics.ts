/**
 * Samples /metrics and /v1/pools on an interval and keeps a short history in memory, so the
 * Metrics page can draw how create latency, pools and active sandboxes move while it is open.
 */
import { useEffect, useRef, useState } from 'react';
import type { PoolStats } from '../../../sdk/src/index.ts';
import { useApi } from './api.tsx';
import { parsePrometheus, sum } from './prometheus.ts';

export type { PoolStats };

export interface MetricsSample {
  atMs: number;
  /** Mean create latency of the creates finished since the previous sample; undefined when none. */
  createMeanMs?: number;
  createsTotal: number;
  createMeanAllMs?: number;
  activeSandboxes: number;
  poolReady: number;
  poolTarget: number;
  poolStarting: number;
  capacityInUse: number;
  queueDepth: number;
  hostLoad1: number;
  errorsTotal: number;
}

export interface MetricsHistory {
  samples: MetricsSample[];
  pools: PoolStats[];
  error?: string;
}

const KEEP = 180;

export function useMetricsSampler(intervalMs: number): MetricsHistory {
  const { client, report } = useApi();
  const [history, setHistory] = useState<MetricsHistory>({ samples: [], pools: [] });
  const prev = useRef<{ sum: number; count: number } | undefined>(undefined);

  useEffect(() => {
    let stopped = false;
    const tick = async () => {
      if (document.hidden) return;
      try {
        const [text, pools] = await Promise.all([client.metricsText(), client.pools()]);
        if (stopped) return;
        const m = parsePrometheus(text);
        const createSum = sum(m, 'kiln_create_seconds_sum');
        const createCount = sum(m, 'kiln_create_seconds_count');
        const last = prev.current;
        prev.current = { sum: createSum, count: createCount };
        const dCount = last ? createCount - last.count : 0;
        const stats = pools.pools;
        const sample: MetricsSample = {
          atMs: Date.now(),
          createMeanMs: dCount > 0 ? ((createSum - last!.sum) / dCount) * 1000 : undefined,
          createsTotal: createCount,
          createMeanAllMs: createCount > 0 ? (createSum / createCount) * 1000 : undefined,
          activeSandboxes: sum(m, 'kiln_sandboxes'),
          poolReady: stats.reduce((a, p) => a + p.ready, 0),
          poolTarget: stats.reduce((a, p) => a + p.target, 0),
          poolStarting: stats.reduce((a, p) => a + p.starting, 0),
          capacityInUse: sum(m, 'kiln_capacity_in_use'),
          queueDepth: sum(m, 'kiln_create_queue_depth'),
          hostLoad1: sum(m, 'kiln_host_load1'),
          errorsTotal: sum(m, 'kiln_errors_total'),
        };
        setHistory((h) => ({ samples: [...h.samples, sample].slice(-KEEP), pools: stats }));
      } catch (e) {
        if (!stopped) setHistory((h) => ({ ...h, error: report(e) }));
      }
    };
    void tick();
    const t = setInterval(() => void tick(), intervalMs);
    return () => {
      stopped = true;
      clearInterval(t);
    };
  }, [client, report, intervalMs]);

  return history;
}
