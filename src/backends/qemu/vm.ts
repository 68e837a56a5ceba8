/**
 * Starting one VM as a list of steps, each with its undo: directory, QEMU process (with boot
 * watchdog), optional snapshot restore, control connection and agent handshake. A failure unwinds
 * what was done and reports BOOT_FAILED with the tail of the guest console.
 */
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { CleanupStack } from '../../core/cleanup.js';
import { KilnError } from '../../core/errors.js';
import { AgentClient } from '../../protocol/agent-client.js';
import { qemuArgs, vmPaths, type QemuArgsOptions, type VmPaths } from './cmdline.js';
import { EMPTY_ROOT, type VmJail, type VmmJails } from './jail.js';
import { QemuProcess, type QemuLog } from './process.js';
import { QmpClient } from './qmp.js';

export interface LaunchOptions extends Omit<QemuArgsOptions, 'paths' | 'incoming'> {
  binary: string;
  dir: string;
  /** Restore from this migration state file instead of booting. */
  restoreFrom?: string;
  /** Watchdog and handshake budget for this launch. */
  readyTimeoutMs: number;
  signal?: AbortSignal;
  log?: QemuLog;
  /**
   * A pre-started QEMU of the same template (startSpare): its directory is renamed to `dir` and
   * only migrate-incoming, cont and the handshake remain. Must match `restoreFrom`.
   */
  spare?: SpareVm;
  /** Confine this QEMU in its own uid, cgroup and namespaces (jail.ts); templates run without. */
  jails?: VmmJails;
}

/**
 * A confined QEMU past its start-up and past loading the template's device state: paused, QMP
 * connected, control socket connected. No guest code has run; the taker sends `cont` and the
 * handshake (which carries the reseed and the clock).
 */
export interface SpareVm {
  id: string;
  dir: string;
  proc: QemuProcess;
  qmp: QmpClient;
  /** The control socket, connected and accepted by QEMU before any state is loaded. */
  ctl: Socket;
  /** Its uid, cgroup and namespaces; released by whoever owns the spare's QEMU. */
  jail?: VmJail;
  /** While the spare is idle: closes QMP, stops QEMU, removes its directory. */
  cleanup: CleanupStack;
}

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
}

/** sun_path holds 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH = 107;

export async function launchVm(o: LaunchOptions): Promise<RunningVm> {
  const t0 = performance.now();
  const steps: Record<string, number> = {};
  const mark = (name: string) => { steps[name] = Math.round((performance.now() - t0) * 10) / 10; };
  const cleanup = new CleanupStack();
  const paths = vmPaths(o.dir);
  let proc: QemuProcess | undefined;
  let jail: VmJail | undefined;
  try {
    checkSocketPath(paths);
  } catch (e) {
    await o.spare?.cleanup.run().catch(() => undefined);
    throw e;
  }
  try {
    const spare = o.spare ? await adopt(o.spare, o.dir, o.log) : undefined;
    if (spare) {
      // The spare's sockets are bound to inodes, not paths: after the rename the already open QMP
      // connection keeps working and ctl.sock is reached under the sandbox's directory.
      cleanup.push('remove vm dir', () => rm(o.dir, { recursive: true, force: true }));
      if (spare.jail) cleanup.push('release jail', () => spare.jail!.release());
      proc = spare.proc;
      cleanup.push('close qmp', () => spare.qmp.close());
      cleanup.push('close ctl', () => { spare.ctl.destroy(); });
      mark('adopt');
    } else {
      await mkdir(o.dir, { recursive: true, mode: 0o700 });
      cleanup.push('remove vm dir', () => rm(o.dir, { recursive: true, force: true }));
      ({ proc, jail } = await spawnQemu(o, paths, cleanup));
      mark('spawn');
    }
    const p = proc;
    cleanup.push('stop qemu', () => p.stop());
    p.armWatchdog(o.readyTimeoutMs);
    o.log?.('debug', 'qemu started', { pid: p.pid, dir: o.dir, restore: o.restoreFrom !== undefined, spare: spare?.id });
    const deadline = Date.now() + o.readyTimeoutMs;
    const stopConnecting = new AbortController();
    cleanup.push('stop connecting', () => stopConnecting.abort());
    const connectSignal = o.signal ? AbortSignal.any([o.signal, stopConnecting.signal]) : stopConnecting.signal;
    // A template is snapshotted with its host end connected and the agent blocked reading it. A
    // clone whose control socket QEMU has accepted before the state loads resumes mid-connection:
    // the guest sees no port event at all (a hang-up and reconnect there costs a clone tens of ms
    // of translation under TCG).
    let ctl: Socket | undefined = spare?.ctl;
    let resumed: Promise<void> | undefined;
    if (spare) {
      // The hello goes out without waiting for `cont` to answer: while the VM is paused QEMU does
      // not read the port's socket, so the bytes wait there for the guest.
      resumed = untilExit(p, spare.qmp.execute('cont')).then(() => { spare.qmp.close(); mark('cont'); });
    } else if (o.restoreFrom) {
      await restore(paths.qmpSock, p, deadline, mark, o.signal, async (q) => {
        ctl = await untilExit(p, connectSocket(paths.ctlSock, deadline, mark, connectSignal));
        cleanup.push('close ctl', () => { ctl?.destroy(); });
        await waitChardevConnected(q, p, 'ctl', deadline);
      });
    }
    const agentP = untilExit(p, handshake(ctl ?? await connectSocket(paths.ctlSock, deadline, mark, connectSignal), deadline, connectSignal));
    agentP.then((c) => { if (stopConnecting.signal.aborted) c.close(); else cleanup.push('close agent', () => c.close()); }, () => undefined);
    await resumed;
    const agent = await agentP;
    p.disarmWatchdog();
    mark('hello');
    return { proc: p, agent, paths, readyMs: performance.now() - t0, steps, cleanup, spare: spare?.id, jail: spare?.jail ?? jail };
  } catch (e) {
    const err = await bootError(e, proc, o);
    await cleanup.run().catch((ce: unknown) => o.log?.('warn', 'cleanup after failed boot', { error: String(ce) }));
    throw err;
  }
}

/**
 * Starts a spare for a template clone: the same confined command line a clone gets, the control
 * socket connected, the template's state loaded, paused before `cont`. Throws (after cleaning up)
 * when QEMU does not get that far.
 */
export async function startSpare(o: LaunchOptions & { restoreFrom: string }): Promise<SpareVm> {
  const cleanup = new CleanupStack();
  const paths = vmPaths(o.dir);
  checkSocketPath(paths);
  try {
    await mkdir(o.dir, { recursive: true, mode: 0o700 });
    cleanup.push('remove spare dir', () => rm(o.dir, { recursive: true, force: true }));
    const { proc, jail } = await spawnQemu(o, paths, cleanup);
    cleanup.push('stop qemu', () => proc.stop());
    proc.armWatchdog(o.readyTimeoutMs);
    const qmp = await untilExit(proc, QmpClient.connect(paths.qmpSock, { timeoutMs: o.readyTimeoutMs }));
    cleanup.push('close qmp', () => qmp.close());
    await untilExit(proc, qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] }));
    const deadline = Date.now() + o.readyTimeoutMs;
    const ctl = await untilExit(proc, connectSocket(paths.ctlSock, deadline, () => undefined));
    cleanup.push('close ctl', () => { ctl.destroy(); });
    await waitChardevConnected(qmp, proc, 'ctl', deadline);
    // The guest resumes mid-connection because QEMU accepted ctl before the state loads.
    await untilExit(proc, qmp.execute('migrate-incoming', { uri: 'fd:3' }));
    await waitMigration(qmp, proc, deadline, o.signal);
    proc.disarmWatchdog();
    return { id: o.id, dir: o.dir, proc, qmp, ctl, cleanup, jail };
  } catch (e) {
    await cleanup.run().catch(() => undefined);
    throw e;
  }
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

/**
 * Starts QEMU, jailed when `o.jails` is set: the jail's release (cgroup, then uid) is pushed on
 * `cleanup` before the process exists, so it runs after QEMU is stopped on every path.
 */
async function spawnQemu(o: LaunchOptions, paths: VmPaths, cleanup: CleanupStack): Promise<{ proc: QemuProcess; jail?: VmJail }> {
  let jail: VmJail | undefined;
  let confine = o.confine;
  if (o.jails) {
    const files = {
      readOnly: [o.kernelPath, o.initrdPath, o.diskImage],
      // QEMU 7.2 must open a clone's RAM file writable (it hangs otherwise), even with share=off.
      readWrite: [o.dir, ...(o.memFile ? [o.memFile.path] : [])],
    };
    const j = await o.jails.acquire(o.id, { guestMib: o.memoryMib, cpus: o.cpus, accel: o.accel, templateBacked: !!o.memFile }, files, o.binary);
    cleanup.push('release jail', () => j.release());
    jail = j;
    confine = { ...o.confine, runAs: `${j.uid}:${j.gid}`, chroot: EMPTY_ROOT };
  }
  // The migration stream is handed over as an open file: QEMU (unprivileged, seccomp-confined)
  // needs no path access and no shell.
  const migrationFile = o.restoreFrom ? await open(o.restoreFrom, 'r') : undefined;
  try {
    const proc = await QemuProcess.spawn(o.binary, qemuArgs({ ...o, confine, paths, incoming: o.restoreFrom !== undefined }), migrationFile?.fd, jail);
    return { proc, jail };
  } finally {
    await migrationFile?.close();
  }
}

function checkSocketPath(paths: VmPaths): void {
  if (paths.qmpSock.length > MAX_SOCKET_PATH) {
    throw new KilnError('INVALID_REQUEST', `the VM socket path ${paths.qmpSock} exceeds ${MAX_SOCKET_PATH} characters (a Unix socket limit): use a shorter runDir or sandbox id`);
  }
}

/** Restores a fresh clone QEMU (no spare): capabilities, `beforeLoad`, state, `cont`. */
async function restore(qmpSock: string, proc: QemuProcess, deadline: number, mark: (step: string) => void, signal: AbortSignal | undefined, beforeLoad: (qmp: QmpClient) => Promise<void>): Promise<void> {
  const qmp = await untilExit(proc, QmpClient.connect(qmpSock, { timeoutMs: deadline - Date.now(), signal }));
  mark('qmp');
  try {
    // Pipelined: QMP runs commands in order and replies in order.
    const caps = qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
    await beforeLoad(qmp);
    const incoming = qmp.execute('migrate-incoming', { uri: 'fd:3' });
    await untilExit(proc, caps);
    mark('caps');
    await untilExit(proc, incoming);
    mark('incoming');
    await waitMigration(qmp, proc, deadline, signal);
    mark('migrated');
    await untilExit(proc, qmp.execute('cont'));
    mark('cont');
  } finally {
    qmp.close();
  }
}

/**
 * QEMU accepts a chardev connection in its main loop, after our connect() returned: wait until it
 * has, so the guest resumes with its control port already connected.
 */
export async function waitChardevConnected(qmp: QmpClient, proc: QemuProcess, label: string, deadline: number): Promise<void> {
  for (;;) {
    const devs = await untilExit(proc, qmp.execute('query-chardev')) as Array<{ label: string; filename: string }>;
    const dev = devs.find((d) => d.label === label);
    if (!dev) throw new Error(`QEMU has no chardev "${label}"`);
    if (!dev.filename.startsWith('disconnected:')) return;
    if (Date.now() > deadline) throw new Error(`QEMU did not accept the connection to chardev "${label}"`);
    await sleep(0.2);
  }
}

/** Polls `query-migrate` until it completes (works for both directions). */
export async function waitMigration(qmp: QmpClient, proc: QemuProcess, deadline: number, signal?: AbortSignal): Promise<void> {
  for (;;) {
    signal?.throwIfAborted();
    const st = await untilExit(proc, qmp.execute('query-migrate')) as { status?: string; 'error-desc'?: string };
    if (st.status === 'completed') return;
    if (st.status === 'failed' || st.status === 'cancelled') throw new Error(`migration ${st.status}: ${st['error-desc'] ?? 'no reason given'}`);
    if (Date.now() > deadline) throw new Error(`migration still "${st.status}" at the deadline`);
    await sleep(1);
  }
}

/** Connects to the ctl socket (QEMU listens on it from start-up). */
async function connectSocket(path: string, deadline: number, mark: (step: string) => void, signal?: AbortSignal): Promise<Socket> {
  let socket: Socket | undefined;
  while (!socket) {
    signal?.throwIfAborted();
    socket = await new Promise<Socket | undefined>((resolve) => {
      const s = createConnection(path);
      // Until the agent client reads it (after a restore, or when a spare is taken), a socket
      // error must not be an unhandled event: it surfaces as a closed stream in the handshake.
      s.once('connect', () => { s.removeAllListeners('error'); s.on('error', () => undefined); resolve(s); });
      s.once('error', () => resolve(undefined));
    });
    if (!socket) {
      if (Date.now() > deadline) throw new Error(`control socket ${path} never appeared`);
      await sleep(1);
    }
  }
  mark('ctl');
  return socket;
}

/**
 * The protocol handshake on a connected control socket; the guest answers once its agent runs.
 * The hello carries fresh entropy and the time: a clone shares its RNG state and a stale clock
 * with the template and every sibling, and the agent fixes both before it answers.
 */
async function handshake(s: Socket, deadline: number, signal?: AbortSignal): Promise<AgentClient> {
  return AgentClient.connect({ readable: s, writable: s, destroy: () => s.destroy() }, {
    signal, timeoutMs: Math.max(1, deadline - Date.now()),
    sync: true,
  });
}

/** Rejects as soon as QEMU exits, so a dead guest is not waited for until the timeout. */
export function untilExit<T>(proc: QemuProcess, work: Promise<T>): Promise<T> {
  const died = proc.exited.then((x) => { throw new Error(`qemu exited (code ${x.code}, signal ${x.signal})`); });
  died.catch(() => undefined);
  return Promise.race([work, died]);
}

async function bootError(e: unknown, proc: QemuProcess | undefined, o: LaunchOptions): Promise<KilnError> {
  if (o.signal?.aborted) return new KilnError('TIMEOUT', 'sandbox creation was aborted', { cause: e });
  let stoppedOnItsOwn = false;
  if (proc) {
    // A dying guest resets the control socket a moment before QEMU exits: give it that moment,
    // then stop it and read the console to the end (the interesting lines, a panic, come last).
    stoppedOnItsOwn = await proc.waitExit(500) && !proc.watchdogFired;
    proc.signal('SIGKILL');
    await proc.waitExit(3000);
  }
  const reason = proc?.watchdogFired
    ? `the guest did not answer within ${o.readyTimeoutMs} ms and was killed`
    : stoppedOnItsOwn ? `the guest stopped during start-up (QEMU ${proc?.exit?.signal ? `killed by ${proc.exit.signal}` : `exit code ${proc?.exit?.code}`})`
    : e instanceof Error ? e.message : String(e);
  const tail = proc ? proc.console.failure().join('\n') : '';
  const what = o.restoreFrom ? 'restore from template' : 'boot';
  return new KilnError('BOOT_FAILED', `the QEMU microVM failed to ${what}: ${reason}.${tail ? `\nLast console lines:\n${tail}` : ' (no console output)'}`, { cause: e });
}
