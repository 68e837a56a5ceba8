/** One running namespace sandbox: its bwrap process, cgroup, agent connection and teardown. */

import { once } from 'node:events';
import type { BackendSandbox, SandboxNetworkPlan, SandboxUsage } from '../../core/backend.js';
import type { SandboxCgroup } from '../../core/cgroups.js';
import type { CleanupStack } from '../../core/cleanup.js';
import { KilnError } from '../../core/errors.js';
import { ExitSignal } from '../../core/exit-signal.js';
import { settlesWithin } from '../../core/kill-ladder.js';
import { bridgePortCommands } from '../../net/link.js';
import { runTool } from '../../net/run.js';
import type { AgentClient } from '../../protocol/agent-client.js';
import type { BwrapChild } from './bwrap.js';
import type { NetInside } from './net-inside.js';

export class NamespaceSandbox implements BackendSandbox {
  readonly details: Record<string, unknown>;
  private readonly exit = new ExitSignal();
  private destroying: Promise<void> | undefined;
  private detached = false;

  constructor(
    readonly id: string,
    readonly agent: AgentClient,
    /** Undefined for a sandbox taken over from an earlier run of the service (not our child). */
    child: BwrapChild | undefined,
    private readonly cgroup: SandboxCgroup,
    private readonly cleanup: CleanupStack,
    details: Record<string, unknown>,
    /** Called once destroy() has finished the whole teardown, or at detach() (the backend deregisters it then). */
    private readonly onDestroyed: (detached: boolean) => void,
    /** Sets up eth0 inside the sandbox (connectNetwork). */
    private readonly netInside: NetInside,
  ) {
    this.details = details;
    child?.once('exit', (code, sig) => {
      if (!this.detached) this.exit.fire(`sandbox process exited (${sig ?? `code ${code}`})`);
    });
    agent.onClose((err) => {
      if (!this.detached) this.exit.fire(err.message);
    });
  }

  async detach(): Promise<void> {
    if (this.destroying) return this.destroying;
    this.detached = true;
    this.agent.close();
    this.onDestroyed(true);
  }

  /**
   * A veth pair: `plan.hostIf` stays on the host, its peer goes into the sandbox's network
   * namespace as eth0 and is set up there from the host (the agent has no capabilities left), by
   * the backend's net-inside helper.
   */
  async connectNetwork(plan: SandboxNetworkPlan): Promise<void> {
    const pid = this.details.pid as number;
    // The peer is made in the sandbox's namespace (never moved there: a move waits out the kernel's grace periods).
    await runTool(
      'ip',
      ['-batch', '-'],
      `${[`link add ${plan.hostIf} type veth peer name eth0 netns ${pid}`, ...(plan.bridge ? bridgePortCommands(plan.hostIf, plan.bridge) : [`link set ${plan.hostIf} up`])].join('\n')}\n`,
    );
    try {
      await this.netInside.configure(pid, plan);
      // The sandbox has no capabilities: it cannot lift a limit set on its own eth0.
      if (plan.sendMbit)
        await runTool('nsenter', [`--net=/proc/${pid}/ns/net`, '--', 'tc', 'qdisc', 'replace', 'dev', 'eth0', 'root', 'tbf', 'rate', `${plan.sendMbit}mbit`, 'burst', '256kb', 'latency', '100ms']);
    } catch (e) {
      await runTool('ip', ['link', 'del', plan.hostIf]).catch(() => undefined);
      throw e;
    }
  }

  onExit(listener: (reason: string) => void): void {
    this.exit.on(listener);
  }

  async usage(): Promise<SandboxUsage> {
    const [memoryBytes, oomKills, pids] = await Promise.all([this.cgroup.memoryBytes(), this.cgroup.oomKills(), this.cgroup.pids()]);
    return { memoryBytes, oomKills, pids };
  }

  destroy(): Promise<void> {
    this.destroying ??= this.cleanup.run().finally(() => this.onDestroyed(false));
    return this.destroying;
  }
}

/**
 * Bounded kill ladder for the bwrap process tree: SIGKILL the sandbox's PID 1 (the kernel then
 * kills the whole pid namespace), wait, SIGKILL bwrap itself, wait, then give up loudly.
 */
export async function killSandboxProcess(child: BwrapChild, sandboxPid: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  tryKill(sandboxPid);
  if (await settlesWithin(exited, 2000)) return;
  child.kill('SIGKILL'); // bwrap itself (the spawner's child: only it knows whether it was reaped)
  if (await settlesWithin(exited, 2000)) return;
  throw new KilnError('INTERNAL', `bwrap process ${child.pid} did not exit after SIGKILL`);
}

function tryKill(pid: number | undefined): void {
  if (!pid) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone already */
  }
}
