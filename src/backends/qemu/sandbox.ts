/** A running QEMU sandbox as the core sees it (BackendSandbox). */
import type { BackendSandbox, SandboxNetworkPlan, SandboxUsage } from '../../core/backend.js';
import { KilnError } from '../../core/errors.js';
import { ExitSignal } from '../../core/exit-signal.js';
import { connectVmNetwork } from '../../core/host-taps.js';
import { microVmUsage } from '../../core/vm-usage.js';
import type { AgentClient } from '../../protocol/agent-client.js';
import { saveVmState } from './machine-state.js';
import type { RunningVm } from './vm.js';

/**
 * What a restore of this VM's saved state needs: the same command line, kernel, initramfs, shape
 * and accelerator (migration compares devices and RAM), and the pack image it ran on.
 */
export interface QemuMachineFacts {
  cmdline: string;
  kernelPath: string;
  initrdPath: string;
  /** Guest RAM (`-m`), not the sandbox's memoryMib. */
  vmMemoryMib: number;
  cpus: number;
  accel: 'kvm' | 'tcg';
  /** The RAM block is the `mem` backend (a template clone, or a restore of one). */
  ramBackend: boolean;
  /** The VM had a NIC (a restore must have the same devices); absent in states saved before NICs. */
  nic?: boolean;
  packHash: string;
  qemuVersion: string;
}

export class QemuSandbox implements BackendSandbox {
  readonly agent: AgentClient;
  /** Present when the VM has a NIC (its TAP): see connect(). */
  readonly connectNetwork?: (plan: SandboxNetworkPlan) => Promise<void>;
  private readonly exit = new ExitSignal();
  private destroying: Promise<void> | undefined;
  private detached = false;
  /** The TAP's current host name (`kq…` from the spawn, then the plan's). */
  private tap: string | undefined;

  constructor(
    readonly id: string,
    private readonly vm: RunningVm,
    readonly details: Record<string, unknown>,
    private readonly onDestroyed: () => void,
    /** Runs before the VM is stopped, bounded and best effort (a workspace's flush of its upper drive). */
    private readonly beforeStop?: () => Promise<void>,
    /** For saveMachine: what a restore needs, and whether QEMU is jailed (chrooted). */
    private readonly machine?: { facts: QemuMachineFacts; jailed: boolean },
    /** Writes the VM's record for a restart (kept.ts) again, with the details as they are now. */
    readonly persist?: () => Promise<void>,
  ) {
    this.agent = vm.agent;
    this.tap = vm.tap;
    if (vm.tap) this.connectNetwork = (plan) => this.connect(plan);
    void vm.proc.exited.then((x) => {
      if (this.destroying || this.detached) return;
      const tail = vm.proc.console.tail(10).join('\n');
      const reason = `the VM exited on its own (code ${x.code}, signal ${x.signal})${tail ? `; last console lines:\n${tail}` : ''}`;
      this.exit.fire(reason);
      void this.destroy();
    });
    // A dropped control connection leaves the VM unusable: report it like a death.
    this.agent.onClose((err) => {
      if (!this.destroying && !this.detached) this.exit.fire(err.message);
    });
  }

  /** The TAP's current host name (absent: the VM has no NIC). */
  get tapName(): string | undefined {
    return this.tap;
  }

  get pid(): number {
    return this.vm.proc.pid;
  }

  /** QEMU's pid and, when jailed, its bwrap's. */
  get pids(): number[] {
    return this.vm.proc.pids;
  }

  /** The same accounting as Firecracker's (core/vm-usage.ts): PSS of QEMU, OOM kills counted by the guest kernel. */
  usage(): Promise<SandboxUsage> {
    return microVmUsage(this.vm.proc.pid, this.agent);
  }

  async saveMachine(dir: string, o: { keepRunning: boolean }): Promise<{ machine: Record<string, unknown> }> {
    if (!this.machine) throw new Error('this VM cannot be saved (a workspace VM keeps its changes in the workspace)');
    if (this.destroying || this.exit.fired) throw new Error('the VM has stopped');
    const r = await saveVmState(this.vm, dir, { keepRunning: o.keepRunning, jailed: this.machine.jailed });
    this.details.lastSave = r;
    return { machine: { ...this.machine.facts } };
  }

  /**
   * The TAP gets the plan's name and comes up; the guest gets its address (core/host-taps.ts).
   * Then the record is written again: a restart after a SIGKILL reattaches the VM with its TAP's
   * new name (the network manager restores the rest from its own state file).
   */
  private async connect(plan: SandboxNetworkPlan): Promise<void> {
    if (this.destroying || this.exit.fired) throw new KilnError('SANDBOX_GONE', 'the VM has stopped; its network cannot be connected');
    this.details.network = await connectVmNetwork({
      tap: this.tap!,
      plan,
      agent: this.agent,
      renamed: (name) => {
        this.tap = name;
        this.details.tap = name;
      },
    });
    await this.persist?.().catch((e: Error) => {
      throw new KilnError('INTERNAL', `the VM's record for a restart of the service could not be written after its network was connected: ${e.message}`, { cause: e });
    });
  }

  onExit(listener: (reason: string) => void): void {
    this.exit.on(listener);
  }

  /**
   * The service stops and keeps its sandboxes: the record (kept.ts) is written again with the
   * details as they are now, the control connection closes (the agent waits for the next host),
   * QEMU runs on, and the next start's reattach finds it by the record.
   */
  async detach(): Promise<void> {
    if (this.destroying) return this.destroying;
    // Best effort: the record written at the start is enough to reattach by.
    await this.persist?.().catch(() => undefined);
    this.detached = true;
    this.agent.close();
    this.vm.proc.release();
    this.onDestroyed();
  }

  destroy(): Promise<void> {
    this.destroying ??= this.stop().finally(() => this.onDestroyed());
    return this.destroying;
  }

  private async stop(): Promise<void> {
    // Not on a VM that already exited: its agent cannot answer.
    if (this.beforeStop && !this.exit.fired) await this.beforeStop().catch(() => undefined);
    await this.vm.cleanup.run();
  }
}
