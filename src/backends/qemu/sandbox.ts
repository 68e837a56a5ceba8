/** A running QEMU sandbox as the core sees it (BackendSandbox). */
import { readFile } from 'node:fs/promises';
import type { BackendSandbox, SandboxUsage } from '../../core/backend.js';
import { ExitSignal } from '../../core/exit-signal.js';
import type { AgentClient } from '../../protocol/agent-client.js';
import type { RunningVm } from './vm.js';

export class QemuSandbox implements BackendSandbox {
  readonly agent: AgentClient;
  private readonly exit = new ExitSignal();
  private destroying: Promise<void> | undefined;

  constructor(readonly id: string, private readonly vm: RunningVm, readonly details: Record<string, unknown>, private readonly onDestroyed: () => void) {
    this.agent = vm.agent;
    void vm.proc.exited.then((x) => {
      if (this.destroying) return;
      const tail = vm.proc.console.tail(10).join('\n');
      const reason = `the VM exited on its own (code ${x.code}, signal ${x.signal})${tail ? `; last console lines:\n${tail}` : ''}`;
      this.exit.fire(reason);
      void this.destroy();
    });
    // A dropped control connection leaves the VM unusable: report it like a death.
    this.agent.onClose((err) => { if (!this.destroying) this.exit.fire(err.message); });
  }

  get pid(): number {
    return this.vm.proc.pid;
  }

  /** QEMU's pid and, when jailed, its bwrap's. */
  get pids(): number[] {
    return this.vm.proc.pids;
  }

  /**
   * Memory is the proportional set size (a clone's share of the template RAM counts only for what
   * it touched). OOM kills are the guest kernel's own count (/proc/vmstat `oom_kill`): the guest's
   * RAM is the sandbox's memory limit, and its OOM killer is what ends a process over it. The core
   * reads this only after an exec died of SIGKILL, so the guest round trip is off every other path.
   */
  async usage(): Promise<SandboxUsage> {
    const [smaps, oomKills] = await Promise.all([
      readFile(`/proc/${this.vm.proc.pid}/smaps_rollup`, 'utf8').catch(() => ''),
      this.guestOomKills().catch(() => undefined),
    ]);
    const pss = /^Pss:\s+(\d+) kB/m.exec(smaps);
    return { memoryBytes: pss ? Number(pss[1]) * 1024 : undefined, oomKills };
  }

  private async guestOomKills(): Promise<number | undefined> {
    const m = /^oom_kill (\d+)$/m.exec(await this.agent.readText('/proc/vmstat'));
    return m ? Number(m[1]) : undefined;
  }

  onExit(listener: (reason: string) => void): void {
    this.exit.on(listener);
  }

  destroy(): Promise<void> {
    this.destroying ??= this.vm.cleanup.run().finally(() => this.onDestroyed());
    return this.destroying;
  }
}
