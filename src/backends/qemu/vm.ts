/**
 * Starting one VM through core/steps.ts (the steps are in vm-steps.ts): a cold boot, a clone of a
 * template (fresh QEMU, or a spare taken over), or a spare itself. A failure unwinds what was done
 * and reports BOOT_FAILED with the tail of the guest console.
 */
import { rename } from 'node:fs/promises';
import { CleanupStack } from '../../core/cleanup.js';
import { KilnError } from '../../core/errors.js';
import { runSteps, StepTimings } from '../../core/steps.js';
import type { AgentClient } from '../../protocol/agent-client.js';
import { type VmPaths, vmPaths } from './cmdline.js';
import type { VmJail } from './jail.js';
import type { QemuLog, QemuProcess } from './process.js';
import { adoptSteps, connectCtlStep, helloStep, type LaunchOptions, QemuBoot, restoreSteps, type SpareVm, spawnSteps } from './vm-steps.js';

export { type LaunchOptions, QEMU_STEP, type SpareVm, untilExit, waitChardevConnected, waitMigration } from './vm-steps.js';

export interface RunningVm {
  proc: QemuProcess;
  agent: AgentClient;
  paths: VmPaths;
  /** Boot (or restore) to agent handshake, ms. */
  readyMs: number;
  /** Milliseconds since launch at which each start-up step ended (profiling). */
  steps: Record<string, number>;
  /** Stops QEMU and removes the VM's files. Idempotent. */
  cleanup: CleanupStack;
  /** The id of the spare this VM was started from, if it was. */
  spare?: string;
  jail?: VmJail;
  /** The host name of its TAP when it has a NIC (vm-steps.ts); renamed by connectNetwork. */
  tap?: string;
}

/** sun_path holds 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH = 107;

export async function launchVm(o: LaunchOptions): Promise<RunningVm> {
  const timings = new StepTimings();
  const paths = vmPaths(o.dir);
  try {
    checkSocketPath(paths);
  } catch (e) {
    await o.spare?.cleanup.run().catch(() => undefined);
    throw e;
  }
  const spare = o.spare ? await adopt(o.spare, o.dir, o.log) : undefined;
  // A template is snapshotted with its host end connected and the agent blocked reading it. A
  // clone whose control socket QEMU has accepted before the state loads resumes mid-connection:
  // the guest sees no port event at all (a hang-up and reconnect there costs a clone tens of ms
  // of translation under TCG). A spare got that far before it was taken.
  const steps = spare ? [...adoptSteps(spare), helloStep()] : o.restoreFrom ? [...spawnSteps(o), ...restoreSteps({ cont: true }), helloStep()] : [...spawnSteps(o), connectCtlStep(), helloStep()];
  const ctx = new QemuBoot(o, paths, timings);
  const cleanup = new CleanupStack();
  await runSteps(steps, ctx, cleanup, {
    signal: o.signal,
    timings,
    explain: (e) => bootError(e, ctx.proc, o),
    onUndoError: (ce) => o.log?.('warn', 'cleanup after failed boot', { error: String(ce) }),
  });
  ctx.p.disarmWatchdog();
  return { proc: ctx.p, agent: ctx.agent!, paths, readyMs: timings.elapsedMs(), steps: timings.marks, cleanup, spare: spare?.id, jail: ctx.jail, tap: ctx.tap };
}

/**
 * Starts a spare for a template clone: the same confined command line a clone gets, the control
 * socket connected, the template's state loaded, paused before `cont`. Throws (after cleaning up)
 * when QEMU does not get that far.
 */
export async function startSpare(o: LaunchOptions & { restoreFrom: string }): Promise<SpareVm> {
  const paths = vmPaths(o.dir);
  checkSocketPath(paths);
  const ctx = new QemuBoot(o, paths, new StepTimings());
  const cleanup = new CleanupStack();
  // The guest resumes mid-connection because QEMU accepted ctl before the state loads.
  await runSteps([...spawnSteps(o), ...restoreSteps({ cont: false })], ctx, cleanup, { signal: o.signal });
  ctx.p.disarmWatchdog();
  return { id: o.id, dir: o.dir, proc: ctx.p, qmp: ctx.qmp!, ctl: ctx.ctl!, cleanup, jail: ctx.jail, tap: ctx.tap };
}

/** Moves a live spare into the sandbox's directory; undefined (spare stopped) when it cannot. */
async function adopt(spare: SpareVm, dir: string, log?: QemuLog): Promise<SpareVm | undefined> {
  try {
    if (!spare.proc.alive) throw new Error('the spare exited');
    await rename(spare.dir, dir);
    return spare;
  } catch (e) {
    log?.('warn', 'cannot use the spare; starting a fresh QEMU', { spare: spare.id, error: (e as Error).message });
    await spare.cleanup.run().catch(() => undefined);
    return undefined;
  }
}

function checkSocketPath(paths: VmPaths): void {
  if (paths.qmpSock.length > MAX_SOCKET_PATH) {
    throw new KilnError('INVALID_REQUEST', `the VM socket path ${paths.qmpSock} exceeds ${MAX_SOCKET_PATH} characters (a Unix socket limit): use a shorter runDir or sandbox id`);
  }
}

/** Runs before the failed start is undone: QEMU may still be alive, and its console still filling. */
async function bootError(e: unknown, proc: QemuProcess | undefined, o: LaunchOptions): Promise<KilnError> {
  if (o.signal?.aborted) return new KilnError('TIMEOUT', 'sandbox creation was aborted', { cause: e });
  let stoppedOnItsOwn = false;
  if (proc) {
    // A dying guest resets the control socket a moment before QEMU exits: give it that moment,
    // then stop it and read the console to the end (the interesting lines, a panic, come last).
    stoppedOnItsOwn = (await proc.waitExit(500)) && !proc.watchdogFired;
    proc.signal('SIGKILL');
    await proc.waitExit(3000);
  }
  const reason = proc?.watchdogFired
    ? `the guest did not answer within ${o.readyTimeoutMs} ms and was killed`
    : stoppedOnItsOwn
      ? `the guest stopped during start-up (QEMU ${proc?.exit?.signal ? `killed by ${proc.exit.signal}` : `exit code ${proc?.exit?.code}`})`
      : e instanceof Error
        ? e.message
        : String(e);
  const tail = proc ? proc.console.failure().join('\n') : '';
  const what = o.restoreFrom ? 'restore from template' : 'boot';
  return new KilnError('BOOT_FAILED', `the QEMU microVM failed to ${what}: ${reason}.${tail ? `\nLast console lines:\n${tail}` : ' (no console output)'}`, { cause: e });
}
