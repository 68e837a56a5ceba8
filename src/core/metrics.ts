/** Prometheus metrics (prom-client), one registry per service instance so tests stay isolated. */
import os from 'node:os';
import client from 'prom-client';
import { isKilnError } from './errors.js';

export class Metrics {
  readonly registry = new client.Registry();
  private readonly sandboxes: client.Gauge<'backend' | 'pack'>;
  private readonly createLatency: client.Histogram<'backend' | 'pack' | 'pool'>;
  private readonly execLatency: client.Histogram<'backend'>;
  private readonly errors: client.Counter<'code'>;
  readonly bootSeconds: client.Histogram<'backend' | 'kind'>;
  readonly agentRtt: client.Histogram<'backend'>;
  readonly poolSize: client.Gauge<'key'>;
  readonly poolTarget: client.Gauge<'key'>;

  constructor(gauges: { queueDepth: () => number; inUse: () => number }) {
    const r = [this.registry];
    this.sandboxes = new client.Gauge({ name: 'kiln_sandboxes', help: 'Live sandboxes by backend and pack', labelNames: ['backend', 'pack'], registers: r });
    this.createLatency = new client.Histogram({
      name: 'kiln_create_seconds',
      help: 'Sandbox create latency (request to ready), by pool hit or miss',
      labelNames: ['backend', 'pack', 'pool'],
      buckets: [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: r,
    });
    this.execLatency = new client.Histogram({
      name: 'kiln_exec_seconds',
      help: 'Exec latency (request to result)',
      labelNames: ['backend'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers: r,
    });
    this.bootSeconds = new client.Histogram({
      name: 'kiln_boot_seconds',
      help: 'Backend boot or snapshot-restore time',
      labelNames: ['backend', 'kind'],
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8],
      registers: r,
    });
    this.agentRtt = new client.Histogram({
      name: 'kiln_agent_rtt_seconds',
      help: 'Host to agent ping round trip',
      labelNames: ['backend'],
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05],
      registers: r,
    });
    this.errors = new client.Counter({ name: 'kiln_errors_total', help: 'Errors returned, by code', labelNames: ['code'], registers: r });
    this.poolSize = new client.Gauge({ name: 'kiln_pool_ready', help: 'Ready sandboxes in each warm pool', labelNames: ['key'], registers: r });
    this.poolTarget = new client.Gauge({ name: 'kiln_pool_target', help: 'Configured warm pool target', labelNames: ['key'], registers: r });
    new client.Gauge({
      name: 'kiln_create_queue_depth',
      help: 'Creates waiting for capacity',
      registers: r,
      collect() {
        this.set(gauges.queueDepth());
      },
    });
    new client.Gauge({
      name: 'kiln_capacity_in_use',
      help: 'Admission slots held',
      registers: r,
      collect() {
        this.set(gauges.inUse());
      },
    });
    new client.Gauge({
      name: 'kiln_host_memory_used_bytes',
      help: 'Host memory in use',
      registers: r,
      collect() {
        this.set(os.totalmem() - os.freemem());
      },
    });
    new client.Gauge({
      name: 'kiln_host_load1',
      help: 'Host 1-minute load average',
      registers: r,
      collect() {
        this.set(os.loadavg()[0] ?? 0);
      },
    });
    client.collectDefaultMetrics({ register: this.registry, prefix: 'kiln_process_' });
  }

  sandboxAdded(backend: string, pack: string): void {
    this.sandboxes.inc({ backend, pack });
  }
  sandboxRemoved(backend: string, pack: string): void {
    this.sandboxes.dec({ backend, pack });
  }
  observeCreate(backend: string, pack: string, pooled: boolean, ms: number): void {
    this.createLatency.observe({ backend, pack, pool: pooled ? 'hit' : 'miss' }, ms / 1000);
  }
  observeExec(backend: string, ms: number): void {
    this.execLatency.observe({ backend }, ms / 1000);
  }
  /**
   * kiln_workspace_upper_bytes{sandbox} and kiln_workspace_limit_bytes{sandbox}: what each workspace
   * sandbox has written over its project, read when scraped (statfs of the upper layer).
   */
  workspaceGauges(sizes: () => Promise<Array<{ sandbox: string; upperBytes: number; limitBytes: number }>>): void {
    const limit = new client.Gauge({ name: 'kiln_workspace_limit_bytes', help: "Size limit of each workspace sandbox's upper layer", labelNames: ['sandbox'], registers: [this.registry] });
    new client.Gauge({
      name: 'kiln_workspace_upper_bytes',
      help: 'Bytes each workspace sandbox has written over its project (its upper layer)',
      labelNames: ['sandbox'],
      registers: [this.registry],
      async collect() {
        this.reset();
        limit.reset();
        for (const w of await sizes()) {
          this.set({ sandbox: w.sandbox }, w.upperBytes);
          limit.set({ sandbox: w.sandbox }, w.limitBytes);
        }
      },
    });
  }

  /** Per networked sandbox: bytes each way (its host link's counters) and refused attempts. */
  networkGauges(counters: () => Promise<Array<{ id: string; bytesOut: number; bytesIn: number; refused: number }>>): void {
    const bytesIn = new client.Gauge({ name: 'kiln_sandbox_network_received_bytes', help: 'Bytes each networked sandbox received', labelNames: ['sandbox'], registers: [this.registry] });
    const refused = new client.Gauge({
      name: 'kiln_sandbox_network_refused_total',
      help: 'DNS queries and connections refused to each networked sandbox',
      labelNames: ['sandbox'],
      registers: [this.registry],
    });
    new client.Gauge({
      name: 'kiln_sandbox_network_sent_bytes',
      help: 'Bytes each networked sandbox sent',
      labelNames: ['sandbox'],
      registers: [this.registry],
      async collect() {
        this.reset();
        bytesIn.reset();
        refused.reset();
        for (const c of await counters()) {
          this.set({ sandbox: c.id }, c.bytesOut);
          bytesIn.set({ sandbox: c.id }, c.bytesIn);
          refused.set({ sandbox: c.id }, c.refused);
        }
      },
    });
  }

  /** kiln_port_bytes_total{sandbox,direction}: bytes through each live sandbox's port proxy and tunnels (in: to the sandbox). */
  portBytes(counts: () => Array<{ sandbox: string; in: number; out: number }>): void {
    new client.Counter({
      name: 'kiln_port_bytes_total',
      help: "Bytes through each live sandbox's port proxy and tunnels, by direction (in: to the sandbox's server)",
      labelNames: ['sandbox', 'direction'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const c of counts()) {
          if (c.in > 0) this.inc({ sandbox: c.sandbox, direction: 'in' }, c.in);
          if (c.out > 0) this.inc({ sandbox: c.sandbox, direction: 'out' }, c.out);
        }
      },
    });
  }

  countError(e: unknown): void {
    this.errors.inc({ code: isKilnError(e) ? e.code : 'INTERNAL' });
  }
}
