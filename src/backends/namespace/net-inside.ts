/**
 * The host's side of `kiln-agent host net-inside` (agent/host_netinside_linux.go): one long-lived
 * root helper that sets up eth0 inside a namespace sandbox's network namespace (address, MAC, up,
 * default route). It replaces an `nsenter ip -batch` spawn per sandbox: a fork of the service
 * costs more than the whole setup. Started at the first use; it ends at close() or with the
 * service (end of its input).
 */
import { type ChildProcess, spawn } from 'node:child_process';

import type { SandboxNetworkPlan } from '../../core/backend.js';
import { attachLineHelper } from './line-helper.js';

interface Pending {
  resolve: () => void;
  reject: (e: Error) => void;
}

export class NetInside {
  private child: ChildProcess | undefined;
  private readonly pending = new Map<number, Pending>();
  private next = 1;

  constructor(private readonly agentPath: string) {}

  /** Sets up eth0 (already made there by `ip`) in the network namespace of process `pid`. */
  configure(pid: number, plan: Pick<SandboxNetworkPlan, 'mac' | 'address' | 'prefix' | 'gateway'>): Promise<void> {
    const child = this.start();
    const id = this.next++;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      child.stdin!.write(`${JSON.stringify({ id, pid, mac: plan.mac, address: plan.address, prefix: plan.prefix, gateway: plan.gateway })}\n`);
    });
  }

  close(): void {
    this.child?.stdin?.end();
    this.child = undefined;
  }

  private start(): ChildProcess {
    if (this.child) return this.child;
    const child = spawn(this.agentPath, ['host', 'net-inside'], { stdio: ['pipe', 'pipe', 'pipe'], env: {} });
    this.child = child;
    attachLineHelper(
      'net-inside',
      child,
      (m) => {
        const r = m as { id?: number; error?: string };
        const p = this.pending.get(r.id ?? 0);
        if (!p) return;
        this.pending.delete(r.id!);
        r.error ? p.reject(new Error(`sandbox eth0: ${r.error}`)) : p.resolve();
      },
      (err) => {
        if (this.child === child) this.child = undefined;
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
      },
    );
    return child;
  }
}
