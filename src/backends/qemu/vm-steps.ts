/**
 * The steps of one QEMU VM's start, as data run by core/steps.ts: directory, jail, process (with
 * its boot watchdog), or a spare taken over instead; for a clone QMP, the control socket, the
 * state load and `cont`; last the agent handshake. Each step's end is a timing mark in
 * `details.steps` (ms since launch), under the step's name.
 */
import { mkdir, open, rm } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CleanupStack } from '../../core/cleanup.js';
import { newTapName } from '../../core/host-taps.js';
import type { Step, StepTimings } from '../../core/steps.js';
import { AgentClient } from '../../protocol/agent-client.js';
import { type QemuArgsOptions, qemuArgs, type VmPaths } from './cmdline.js';
import { EMPTY_ROOT, type VmJail, type VmmJails } from './jail.js';
import { type QemuLog, QemuProcess } from './process.js';
import { QmpClient } from './qmp.js';

/** Step names; also the keys of `details.steps` (`caps` is a mark inside `incoming`, `cont` inside a spare's `hello`). */
export const QEMU_STEP = {
  makeDir: 'dir',
  jail: 'jail',
  spawn: 'spawn',
  adopt: 'adopt',
  qmp: 'qmp',
  ctl: 'ctl',
  ctlAccepted: 'ctlAccepted',
  caps: 'caps',
  incoming: 'incoming',
  migrated: 'migrated',
  cont: 'cont',
  hello: 'hello',
} as const;

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
  /** Its TAP's host name (core/host-taps.ts), when it has a NIC. */
  tap?: string;
  /** While the spare is idle: closes QMP, stops QEMU, removes its directory. */
  cleanup: CleanupStack;
}

/** What the steps make, filled in as they run; the VM takes it over after start. */
export class QemuBoot {
  proc: QemuProcess | undefined;
  jail: VmJail | undefined;
  /** The host name of the VM's TAP (made at spawn, gone with QEMU). */
  tap: string | undefined;
  qmp: QmpClient | undefined;
  ctl: Socket | undefined;
  agent: AgentClient | undefined;
  /** The pipelined `migrate-set-capabilities` reply, awaited by the `incoming` step. */
  caps: Promise<unknown> | undefined;
  /** Watchdog deadline of the handshake and the state load. */
  deadline = 0;
  /** Set by the `adopt` step: `cont` goes out alongside the hello. */
  spare: SpareVm | undefined;

  constructor(
    readonly o: LaunchOptions,
    readonly paths: VmPaths,
    readonly timings: StepTimings,
  ) {}

  get p(): QemuProcess {
    return this.proc!;
  }
}

type QemuStep = Step<QemuBoot>;

/** Directory, jail (when `o.jails`), QEMU: a jail is released after QEMU is stopped, on every path. */
export function spawnSteps(o: LaunchOptions): QemuStep[] {
  const steps: QemuStep[] = [
    {
      name: QEMU_STEP.makeDir,
      run: async () => {
        await mkdir(o.dir, { recursive: true, mode: 0o700 });
        // Searchable by the VM's uid: a pause's migration socket is made here (machine-state.ts).
        await mkdir(`${o.dir}/mig`, { mode: 0o755 });
      },
      undo: () => rm(o.dir, { recursive: true, force: true }),
    },
  ];
  const jails = o.jails;
  if (jails) {
    steps.push({
      name: QEMU_STEP.jail,
      run: async (ctx) => {
        const files = {
          readOnly: [o.kernelPath, o.initrdPath, o.diskImage, ...(o.workspace ? [o.workspace.lowerImage] : [])],
          // QEMU 7.2 must open a clone's RAM file writable (it hangs otherwise), even with share=off.
          readWrite: [o.dir, ...(o.memFile ? [o.memFile.path] : []), ...(o.workspace ? [o.workspace.upperImage] : [])],
          migDir: `${o.dir}/mig`,
        };
        ctx.jail = await jails.acquire(o.id, { guestMib: o.memoryMib, cpus: o.cpus, accel: o.accel, templateBacked: !!o.memFile }, files, o.binary);
      },
      undo: (ctx) => ctx.jail?.release(),
    });
  }
  steps.push({
    name: QEMU_STEP.spawn,
    run: async (ctx) => {
      const j = ctx.jail;
      const confine = j ? { ...o.confine, runAs: `${j.uid}:${j.gid}`, chroot: EMPTY_ROOT } : o.confine;
      // The migration stream is handed over as an open file: QEMU (unprivileged, seccomp-confined)
      // needs no path access and no shell.
      const migrationFile = o.restoreFrom ? await open(o.restoreFrom, 'r') : undefined;
      // Not persistent: the TAP goes with the last process holding it (QEMU and its bwrap).
      ctx.tap = o.nic ? newTapName() : undefined;
      try {
        ctx.proc = await QemuProcess.spawn(o.binary, qemuArgs({ ...o, confine, paths: ctx.paths, incoming: o.restoreFrom !== undefined }), ctx.paths.conSock, migrationFile?.fd, j, ctx.tap);
      } finally {
        await migrationFile?.close();
      }
      startWatch(ctx);
    },
    undo: (ctx) => ctx.proc?.stop(),
  });
  return steps;
}

/**
 * Takes over a spare already moved into the VM's directory. Its sockets are bound to inodes, not
 * paths: after the rename the open QMP connection keeps working and ctl.sock is reached under the
 * sandbox's directory.
 */
export function adoptSteps(spare: SpareVm): QemuStep[] {
  return [
    {
      name: QEMU_STEP.adopt,
      run: (ctx) => {
        Object.assign(ctx, { spare, proc: spare.proc, jail: spare.jail, tap: spare.tap, qmp: spare.qmp, ctl: spare.ctl });
        startWatch(ctx);
      },
      undo: async (ctx) => {
        try {
          await spare.proc.stop();
        } finally {
          spare.ctl.destroy();
          spare.qmp.close();
          try {
            await spare.jail?.release();
          } finally {
            await rm(ctx.o.dir, { recursive: true, force: true });
          }
        }
      },
    },
  ];
}

/**
 * A fresh clone (or a spare in the making): QMP, the control socket connected and accepted before
 * the state loads (the guest resumes mid-connection: no port event, no reconnect), the state, and
 * for a clone `cont`.
 */
export function restoreSteps(o: { cont: boolean }): QemuStep[] {
  const steps: QemuStep[] = [
    {
      name: QEMU_STEP.qmp,
      run: async (ctx, signal) => {
        ctx.qmp = await untilExit(ctx.p, QmpClient.connect(ctx.paths.qmpSock, { timeoutMs: ctx.deadline - Date.now(), signal }));
        // Pipelined: QMP runs commands in order and replies in order.
        ctx.caps = ctx.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
        ctx.caps.catch(() => undefined);
      },
      undo: (ctx) => ctx.qmp?.close(),
    },
    connectCtlStep(),
    {
      name: QEMU_STEP.ctlAccepted,
      run: (ctx) => waitChardevConnected(ctx.qmp!, ctx.p, 'ctl', ctx.deadline),
    },
    {
      name: QEMU_STEP.incoming,
      run: async (ctx) => {
        const incoming = ctx.qmp!.execute('migrate-incoming', { uri: 'fd:3' });
        incoming.catch(() => undefined);
        await untilExit(ctx.p, ctx.caps!);
        ctx.timings.mark(QEMU_STEP.caps);
        await untilExit(ctx.p, incoming);
      },
    },
    { name: QEMU_STEP.migrated, run: (ctx, signal) => waitMigration(ctx.qmp!, ctx.p, ctx.deadline, signal) },
  ];
  if (o.cont) {
    steps.push({
      name: QEMU_STEP.cont,
      run: async (ctx) => {
        await untilExit(ctx.p, ctx.qmp!.execute('cont'));
        ctx.qmp!.close();
      },
    });
  }
  return steps;
}

/** Connects to the ctl socket (QEMU listens on it from start-up). */
export function connectCtlStep(): QemuStep {
  return {
    name: QEMU_STEP.ctl,
    run: async (ctx, signal) => {
      ctx.ctl = await untilExit(ctx.p, connectSocket(ctx.paths.ctlSock, ctx.deadline, signal));
    },
    undo: (ctx) => {
      ctx.ctl?.destroy();
    },
  };
}

/**
 * The protocol handshake on the connected control socket; the guest answers once its agent runs.
 * The hello carries fresh entropy and the time: a clone shares its RNG state and a stale clock
 * with the template and every sibling, and the agent fixes both before it answers. A spare's
 * `cont` goes out without waiting: while the VM is paused QEMU does not read the port's socket,
 * so the hello waits there for the guest.
 */
export function helloStep(): QemuStep {
  return {
    name: QEMU_STEP.hello,
    run: async (ctx, signal) => {
      const { p, spare } = ctx;
      const stop = new AbortController();
      const resumed = spare
        ? untilExit(p, spare.qmp.execute('cont')).then(() => {
            spare.qmp.close();
            ctx.timings.mark(QEMU_STEP.cont);
          })
        : undefined;
      const s = ctx.ctl!;
      const agentP = untilExit(
        p,
        AgentClient.connect(
          { readable: s, writable: s, destroy: () => s.destroy() },
          {
            signal: AbortSignal.any([signal, stop.signal]),
            timeoutMs: Math.max(1, ctx.deadline - Date.now()),
            sync: true,
          },
        ),
      );
      try {
        await resumed;
        ctx.agent = await agentP;
      } catch (e) {
        // A handshake that still completes after `cont` failed is closed, not leaked.
        stop.abort();
        agentP.then(
          (c) => c.close(),
          () => undefined,
        );
        throw e;
      }
    },
    undo: (ctx) => ctx.agent?.close(),
  };
}

/** A guest that hangs burns a whole core: the watchdog kills QEMU unless the start completes in time. */
function startWatch(ctx: QemuBoot): void {
  const { o, p } = ctx;
  p.armWatchdog(o.readyTimeoutMs);
  ctx.deadline = Date.now() + o.readyTimeoutMs;
  o.log?.('debug', 'qemu started', { pid: p.pid, dir: o.dir, restore: o.restoreFrom !== undefined, spare: ctx.spare?.id });
}

/**
 * QEMU accepts a chardev connection in its main loop, after our connect() returned: wait until it
 * has, so the guest resumes with its control port already connected.
 */
export async function waitChardevConnected(qmp: QmpClient, proc: QemuProcess, label: string, deadline: number): Promise<void> {
  for (;;) {
    const devs = (await untilExit(proc, qmp.execute('query-chardev'))) as Array<{ label: string; filename: string }>;
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
    const st = (await untilExit(proc, qmp.execute('query-migrate'))) as { status?: string; 'error-desc'?: string };
    if (st.status === 'completed') return;
    if (st.status === 'failed' || st.status === 'cancelled') throw new Error(`migration ${st.status}: ${st['error-desc'] ?? 'no reason given'}`);
    if (Date.now() > deadline) throw new Error(`migration still "${st.status}" at the deadline`);
    await sleep(1);
  }
}

async function connectSocket(path: string, deadline: number, signal?: AbortSignal): Promise<Socket> {
  let socket: Socket | undefined;
  while (!socket) {
    signal?.throwIfAborted();
    socket = await new Promise<Socket | undefined>((resolve) => {
      const s = createConnection(path);
      // Until the agent client reads it (after a restore, or when a spare is taken), a socket
      // error must not be an unhandled event: it surfaces as a closed stream in the handshake.
      s.once('connect', () => {
        s.removeAllListeners('error');
        s.on('error', () => undefined);
        resolve(s);
      });
      s.once('error', () => resolve(undefined));
    });
    if (!socket) {
      if (Date.now() > deadline) throw new Error(`control socket ${path} never appeared`);
      await sleep(1);
    }
  }
  return socket;
}

/** Rejects as soon as QEMU exits, so a dead guest is not waited for until the timeout. */
export function untilExit<T>(proc: QemuProcess, work: Promise<T>): Promise<T> {
  const died = proc.exited.then((x) => {
    throw new Error(`qemu exited (code ${x.code}, signal ${x.signal})`);
  });
  died.catch(() => undefined);
  return Promise.race([work, died]);
}
