/**
 * The host's side of `kiln-agent host net-inside` (agent/host_netinside_linux.go): one long-lived
 * root helper that sets up eth0 inside a namespace sandbox's network namespace (address, MAC, up,
 * default route). It replaces an `nsenter ip -batch` spawn per sandbox: a fork of the service
 * costs more than the whole setup. Started at the first use; it ends at close() or with the
 * service (end of its input).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { SandboxNetworkPlan } from '../../core/backend.js';

interface Pending {
  resolve: () => void;
  reject: (e: Error) => void;
}

export class NetInside {
  private child: ChildProcess | undefined;
  private readonly pending = new Map<number, Pending>();
  private next = 1;
  private stderr = '';

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
    this.stderr = '';
    // Never what keeps the service running: it is idle between sandboxes.
    child.unref();
    for (const s of [child.stdin, child.stdout, child.stderr] as Array<{ unref?: () => void } | null>) s?.unref?.();
    child.stdin!.on('error', () => undefined); // its exit, below, says why
    child.stderr!.on('data', (c: Buffer) => {
      this.stderr = (this.stderr + c.toString()).slice(-2000);
    });
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let r: { id?: number; error?: string };
      try {
        r = JSON.parse(line) as typeof r;
      } catch {
        return;
      }
      const p = this.pending.get(r.id ?? 0);
      if (!p) return;
      this.pending.delete(r.id!);
      r.error ? p.reject(new Error(`sandbox eth0: ${r.error}`)) : p.resolve();
    });
    const gone = (why: string): void => {
      if (this.child === child) this.child = undefined;
      for (const p of this.pending.values()) p.reject(new Error(`kiln-agent host net-inside ${why}${this.stderr.trim() ? `: ${this.stderr.trim()}` : ''}`));
      this.pending.clear();
    };
    child.on('error', (e) => gone(`could not run (${e.message})`));
    child.on('exit', (code, sig) => gone(`exited (${sig ?? `code ${code}`})`));
    return child;
  }
}
