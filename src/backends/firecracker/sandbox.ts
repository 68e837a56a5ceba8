/**
 * One running Firecracker sandbox: the VMM process, the agent connection (reconnected once when it
 * drops while the VM lives), usage accounting and teardown through the boot's cleanup stack.
 */
import type { BackendSandbox, SandboxNetworkPlan, SandboxUsage } from '../../core/backend.js';
import type { CleanupStack } from '../../core/cleanup.js';
import { KilnError } from '../../core/errors.js';
import { ExitSignal } from '../../core/exit-signal.js';
import { connectVmNetwork } from '../../core/host-taps.js';
import { microVmUsage } from '../../core/vm-usage.js';
import type { AgentClient } from '../../protocol/agent-client.js';
import { reconnectAgent } from './agent-link.js';
import { saveFirecrackerState } from './machine-state.js';
import { connectJailNetwork } from './netns.js';
import { sendRateLimiter } from './sandbox-options.js';
import { KILN_IFACE, VM_FILES, type VmContext } from './vm-steps.js';

export interface FirecrackerSandboxOptions {
  reconnectTimeoutMs?: number;
  /** Called once destroy() has finished the whole teardown (the backend deregisters it then). */
  onDestroyed?: () => void;
  /** What a restore of its saved state needs (backend.ts restoreMachine); absent: it cannot be saved. */
  machine?: Record<string, unknown>;
  /** Its record for a restart of the service was written (kept.ts): detach() lets it run on. */
  kept?: boolean;
}

export class FirecrackerSandbox implements BackendSandbox {
  /** Present when the VM has kiln's NIC (the backend's `network` option). */
  readonly connectNetwork?: (plan: SandboxNetworkPlan) => Promise<void>;
  private current: AgentClient;
  private readonly exit = new ExitSignal();
  private destroying: Promise<void> | undefined;
  private reconnecting = false;
  private detached = false;
  /** Present when the VM can outlive the service (its record is written, kept.ts). */
  readonly detach?: () => Promise<void>;

  constructor(
    readonly id: string,
    private readonly vm: VmContext,
    private readonly cleanup: CleanupStack,
    readonly details: Record<string, unknown>,
    private readonly o: FirecrackerSandboxOptions = {},
  ) {
    this.current = vm.agent!;
    if (vm.tap) {
      this.details.tap = vm.tap;
      if (vm.spec.netns) this.details.netns = vm.spec.netns;
      this.connectNetwork = (plan) => this.connect(plan);
    }
    void vm.proc!.exited.then((why) => this.markExited(`Firecracker ${why}`));
    this.watch(this.current);
    if (o.kept) this.detach = () => this.letGo();
  }

  /** The service stops and keeps its sandboxes: the agent connection closes, Firecracker runs on. */
  private async letGo(): Promise<void> {
    if (this.destroying) return this.destroying;
    this.detached = true;
    this.current.close();
    this.vm.proc?.release?.();
    this.o.onDestroyed?.();
  }

  /** The VM's own network namespace (netns.ts), when it has one. */
  get netns(): string | undefined {
    return this.vm.spec.netns;
  }

  /** Firecracker's pid and, when confined, its bwrap's: the start-up scan leaves them alone. */
  get pids(): number[] {
    return [...new Set([...(this.vm.proc?.pid !== undefined ? [this.vm.proc.pid] : []), ...(this.vm.confine?.pids ?? [])])];
  }

  get agent(): AgentClient {
    return this.current;
  }

  async saveMachine(dir: string, o: { keepRunning: boolean; signal?: AbortSignal }): Promise<{ machine: Record<string, unknown> }> {
    if (!this.o.machine) throw new Error('this VM cannot be saved (it has a network interface: host state a snapshot would pin)');
    if (this.destroying || this.exit.fired) throw new Error('the VM has stopped');
    this.details.lastSave = await saveFirecrackerState(this.vm, dir, o);
    return { machine: { ...this.o.machine } };
  }

  /**
   * In the host's namespace as QEMU's (core/host-taps.ts: the TAP renamed to the plan's name, on
   * the bridge). In the VM's own namespace (jailed): a veth pair whose host end takes the plan's
   * name and joins the bridge, the inner end bridged to the TAP there (netns.ts).
   */
  private async connect(plan: SandboxNetworkPlan): Promise<void> {
    if (this.destroying || this.exit.fired) throw new KilnError('SANDBOX_GONE', 'the VM has stopped; its network cannot be connected');
    // What the sandbox sends: Firecracker's limiter on the guest's transmit queue, out of its reach.
    if (plan.sendMbit) await this.vm.api.patchNetworkInterface({ iface_id: KILN_IFACE, tx_rate_limiter: sendRateLimiter(plan.sendMbit) });
    const netns = this.vm.spec.netns;
    if (netns) {
      this.details.network = await connectJailNetwork({ netns, tap: this.vm.tap!, plan, agent: this.current });
      this.details.hostInterface = plan.hostIf;
      return;
    }
    this.details.network = await connectVmNetwork({
      tap: this.vm.tap!,
      plan,
      agent: this.current,
      renamed: (name) => {
        this.vm.tap = name;
        this.details.tap = name;
      },
    });
  }

  get consoleTail(): string[] {
    return this.vm.proc?.console.tail() ?? [];
  }

  private watch(agent: AgentClient): void {
    agent.onClose((err) => {
      if (this.destroying || this.detached || this.exit.fired || this.reconnecting) return;
      void this.reconnect(err.message);
    });
  }

  /** A dropped connection with a living VM is worth one more handshake (the agent accepts again). */
  private async reconnect(why: string): Promise<void> {
    if (!this.vm.alive()) return this.markExited(why);
    this.reconnecting = true;
    try {
      const agent = await reconnectAgent({
        udsPath: this.vm.host(VM_FILES.vsock),
        timeoutMs: this.o.reconnectTimeoutMs ?? 5_000,
        isAlive: () => this.vm.alive() && !this.destroying,
      });
      if (this.destroying) {
        agent.close();
        return;
      }
      this.current = agent;
      this.vm.agent = agent;
      this.details.agentReconnects = Number(this.details.agentReconnects ?? 0) + 1;
      this.watch(agent);
    } catch (e) {
      this.markExited(`${why}; ${(e as Error).message}`);
    } finally {
      this.reconnecting = false;
    }
  }

  private markExited(reason: string): void {
    if (!this.destroying && !this.detached) this.exit.fire(reason);
  }

  onExit(listener: (reason: string) => void): void {
    this.exit.on(listener);
  }

  /** The same accounting as QEMU's (core/vm-usage.ts): PSS of Firecracker, OOM kills counted by the guest kernel. */
  usage(): Promise<SandboxUsage> {
    return microVmUsage(this.vm.proc?.pid, this.current);
  }

  destroy(): Promise<void> {
    this.destroying ??= this.cleanup.run().finally(() => this.o.onDestroyed?.());
    return this.destroying;
  }
}
