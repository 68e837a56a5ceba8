/**
 * Spares: per live template, a few confined QEMU processes started ahead of time, with QMP and the
 * control socket connected and the template's device state loaded, left paused: a clone skips
 * QEMU's start-up (~30-60 ms) and the state load (~5 ms). A spare runs no guest code until it is
 * taken; the taker sends `cont` and the handshake, which carries the reseed + clock sync like any
 * clone's. A consumed or dead spare is replaced in the background; spares die with their template
 * and with the backend.
 */
import { randomBytes } from 'node:crypto';
import type { VmmJails } from './jail.js';
import type { QemuLog } from './process.js';
import type { Template } from './templates.js';
import { type SpareVm, startSpare } from './vm.js';

export interface SpareManagerOptions {
  /** Spares kept per live template (0 disables). */
  count: number;
  /** Spare directories: `<runDir>/qemu/spares/<spare id>` until taken. */
  dir: string;
  binary: string;
  confine: { runAs?: string } | undefined;
  jails: VmmJails | undefined;
  /** Budget for a spare to get to its loaded, paused state (it is killed after this). */
  startTimeoutMs: number;
  log?: QemuLog;
}

interface Slot {
  id: string;
  template: Template;
  state: 'starting' | 'idle' | 'taken' | 'dead';
  vm?: SpareVm;
  ready: Promise<SpareVm | undefined>;
}

/** After a spare failed to start or died idle, wait this long (doubling, capped) before the next. */
const RETRY_BASE_MS = 1000;
const RETRY_MAX_MS = 60_000;

export class SpareManager {
  private readonly slots = new Map<string, Slot[]>();
  private readonly dropped = new WeakSet<Template>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  /** Taken spares whose directory may not be renamed yet (scan() must leave it). */
  private readonly handedOut = new Map<string, SpareVm | undefined>();
  private closed = false;

  constructor(private readonly o: SpareManagerOptions) {}

  /**
   * A spare of this template: an idle one, else one still starting (waited for: it is further
   * along than a fresh QEMU would be). Undefined when there is none or it failed.
   */
  async take(t: Template): Promise<SpareVm | undefined> {
    const list = this.slots.get(t.id);
    const slot = list?.find((s) => s.state === 'idle') ?? list?.find((s) => s.state === 'starting');
    if (!list || !slot) return undefined;
    slot.state = 'taken';
    list.splice(list.indexOf(slot), 1);
    this.handedOut.set(slot.id, undefined);
    const vm = await slot.ready;
    if (vm && !vm.proc.alive) {
      await vm.cleanup.run().catch(() => undefined);
      this.handedOut.delete(slot.id);
      return undefined;
    }
    if (vm) {
      this.failures.delete(t.id);
      this.handedOut.set(slot.id, vm);
    } else {
      this.handedOut.delete(slot.id);
    }
    return vm;
  }

  /** The taker is done with the spare's directory (renamed, or removed with the spare). */
  release(spare: SpareVm): void {
    this.handedOut.delete(spare.id);
  }

  /** Starts spares until the template has `count` (in the background; never awaited by a create). */
  replenish(t: Template): void {
    if (this.closed || this.dropped.has(t) || this.o.count <= 0 || this.timers.has(t.id)) return;
    let list = this.slots.get(t.id);
    if (!list) this.slots.set(t.id, (list = []));
    while (list.length < this.o.count) list.push(this.launch(t));
  }

  /** Stops the template's spares (it was invalidated, retired or the backend closes). */
  async drop(t: Template): Promise<void> {
    this.dropped.add(t);
    clearTimeout(this.timers.get(t.id));
    this.timers.delete(t.id);
    this.failures.delete(t.id);
    const list = this.slots.get(t.id) ?? [];
    this.slots.delete(t.id);
    await Promise.all(
      list.map(async (s) => {
        const wasIdle = s.state === 'idle';
        s.state = 'dead';
        if (wasIdle) await s.vm?.cleanup.run().catch(() => undefined);
        else await s.ready; // a starting spare stops itself once it sees `dead`
      }),
    );
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.slots.values()].map((list) => list[0] && this.drop(list[0].template)));
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
  }

  /** Pids of spares alive now (scan() must not take them for leftovers). */
  pids(): Set<number> {
    const vms = [...this.slots.values()]
      .flat()
      .map((s) => s.vm)
      .concat([...this.handedOut.values()]);
    return new Set(vms.flatMap((vm) => (vm ? vm.proc.pids : [])));
  }

  /** Directory names of current spares. */
  ids(): Set<string> {
    return new Set(
      [...this.slots.values()]
        .flat()
        .map((s) => s.id)
        .concat([...this.handedOut.keys()]),
    );
  }

  /** Waits until no spare is between spawn and registration. */
  async settled(): Promise<void> {
    await Promise.all([...this.slots.values()].flat().map((s) => s.ready));
  }

  private launch(t: Template): Slot {
    const id = `sp-${randomBytes(5).toString('hex')}`;
    const slot: Slot = { id, template: t, state: 'starting', ready: Promise.resolve(undefined) };
    slot.ready = (async () => {
      let vm: SpareVm;
      try {
        vm = await startSpare({
          ...t.inputs,
          binary: this.o.binary,
          id,
          dir: `${this.o.dir}/${id}`,
          diskImage: t.inputs.imagePath,
          restoreFrom: t.stateFile,
          memFile: { path: t.memFile, share: false },
          confine: this.o.confine,
          jails: this.o.jails,
          readyTimeoutMs: this.o.startTimeoutMs,
          log: this.o.log,
        });
      } catch (e) {
        this.remove(slot);
        if (slot.state !== 'dead') this.failed(t, `a spare did not start: ${(e as Error).message}`);
        return undefined;
      }
      if (slot.state === 'dead') {
        await vm.cleanup.run().catch(() => undefined);
        return undefined;
      }
      slot.vm = vm;
      if (slot.state === 'starting') slot.state = 'idle';
      this.o.log?.('debug', 'spare ready', { spare: id, template: t.id, pid: vm.proc.pid });
      void vm.proc.exited.then(async (x) => {
        if (slot.state !== 'idle') return;
        slot.state = 'dead';
        this.remove(slot);
        await vm.cleanup.run().catch(() => undefined);
        this.failed(t, `an idle spare exited (code ${x.code}, signal ${x.signal})`);
      });
      return vm;
    })();
    return slot;
  }

  private remove(slot: Slot): void {
    const list = this.slots.get(slot.template.id);
    const i = list?.indexOf(slot) ?? -1;
    if (i >= 0) list!.splice(i, 1);
  }

  /** Replaces a failed spare after a back-off, so a broken set-up does not spin. */
  private failed(t: Template, message: string): void {
    const n = (this.failures.get(t.id) ?? 0) + 1;
    this.failures.set(t.id, n);
    const delay = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** (n - 1));
    this.o.log?.('warn', `${message}; replacing it in ${delay} ms`, { template: t.id });
    if (this.closed || this.dropped.has(t) || this.timers.has(t.id)) return;
    const timer = setTimeout(() => {
      this.timers.delete(t.id);
      this.replenish(t);
    }, delay);
    timer.unref();
    this.timers.set(t.id, timer);
  }
}
