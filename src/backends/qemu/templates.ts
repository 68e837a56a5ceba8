/**
 * Template VMs: boot once per key with guest RAM in a shared file, wait for the agent, snapshot
 * the device state (x-ignore-shared: RAM stays in the file), quit. Clones map the file
 * copy-on-write (share=off) and load the small state file. The RAM file of a template version is
 * never written after the snapshot, and each version gets a new path, so live clones are safe.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, rm, stat, statfs } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { type TemplateWarmup, warmTemplate } from '../../core/warmup.js';
import type { AgentClient } from '../../protocol/agent-client.js';
import type { QemuLog } from './process.js';
import { QmpClient } from './qmp.js';
import { launchVm, untilExit, waitMigration } from './vm.js';

export interface TemplateInputs {
  packName: string;
  packHash: string;
  imagePath: string;
  cpus: number;
  memoryMib: number;
  diskMib: number;
  kernelPath: string;
  initrdPath: string;
  /** Content hash of kernel + initramfs (vmimage). */
  artifactsHash: string;
  cmdline: string;
  accel: 'kvm' | 'tcg';
  qemuVersion: string;
  binary: string;
  /** The VMs have a NIC (cmdline.ts): part of the key, clones must have the template's devices. */
  nic: boolean;
  /** Run once in the template before its snapshot (core/warmup.ts). */
  warmup?: TemplateWarmup;
}

export interface Template {
  id: string;
  key: string;
  memFile: string;
  stateFile: string;
  inputs: TemplateInputs;
  bootMs: number;
}

export interface TemplateManagerOptions {
  /** Where state files live: `<runDir>/qemu/templates`. */
  stateDir: string;
  /** Where RAM files live (tmpfs): `/dev/shm/kiln-qemu-<tag>`. */
  memDir: string;
  readyTimeoutMs: number;
  log?: QemuLog;
  /** Called before a template's files go (invalidated, retired, closed): stop its spares. */
  onDrop?: (t: Template) => Promise<void>;
}

const CLOCKSOURCE = '/sys/devices/system/clocksource/clocksource0/current_clocksource';
/** How long a template waits for its guest to settle before the snapshot. */
const SETTLE_TIMEOUT_MS = 5000;
const QUIET_BEFORE_SNAPSHOT_MS = 500;
/** From the template's last wake-up to the snapshot: enough for the guest to go idle again. */
const IDLE_AFTER_WAKE_MS = 20;
/**
 * No guest timer may be due this soon after the snapshot: a clone's first ~50-150 ms (guest time
 * runs on from the snapshot) would run it, translated afresh in every clone under TCG.
 */
const TIMER_FREE_AFTER_SNAPSHOT_MS = 250;
const TIMER_LIST = '/proc/timer_list';

/** After a failed template boot, cold boots are used for this long before trying again. */
const RETRY_AFTER_FAILURE_MS = 60_000;

export class TemplateManager {
  private readonly templates = new Map<string, Promise<Template>>();
  private readonly failures = new Map<string, number>();
  private closed = false;

  constructor(private readonly o: TemplateManagerOptions) {}

  static key(i: TemplateInputs, imageStat: { size: number; mtimeMs: number }): string {
    return createHash('sha256')
      .update(JSON.stringify({ ...i, imageSize: imageStat.size, imageMtimeMs: imageStat.mtimeMs }))
      .digest('hex')
      .slice(0, 20);
  }

  /** The template for these inputs, booting it if needed; undefined when templating is failing. */
  async get(inputs: TemplateInputs): Promise<Template | undefined> {
    if (this.closed) return undefined;
    const key = TemplateManager.key(inputs, await stat(inputs.imagePath));
    const failedAt = this.failures.get(key);
    if (failedAt !== undefined && Date.now() - failedAt < RETRY_AFTER_FAILURE_MS) return undefined;
    let p = this.templates.get(key);
    if (!p) {
      this.retireFamily(inputs);
      p = this.build(key, inputs);
      this.templates.set(key, p);
      p.catch((e: unknown) => {
        this.templates.delete(key);
        this.failures.set(key, Date.now());
        this.o.log?.('warn', 'template boot failed; using cold boots', { pack: inputs.packName, error: e instanceof Error ? e.message : String(e) });
      });
    }
    return p.catch(() => undefined);
  }

  get memDir(): string {
    return this.o.memDir;
  }

  /** Templates that are built (or being built) now; scan() keeps their files. */
  async current(): Promise<Template[]> {
    const all = await Promise.all([...this.templates.values()].map((p) => p.catch(() => undefined)));
    return all.filter((t): t is Template => t !== undefined);
  }

  /** Drops the template after a clone of it failed, so the next create builds a fresh one. */
  async invalidate(t: Template): Promise<void> {
    if (this.templates.get(t.key) && (await this.templates.get(t.key)!.catch(() => undefined)) === t) this.templates.delete(t.key);
    await this.drop(t);
  }

  /** Removes every template's files. Live clones keep their private mappings. */
  async close(): Promise<void> {
    this.closed = true;
    const all = await Promise.all([...this.templates.values()].map((p) => p.catch(() => undefined)));
    this.templates.clear();
    await Promise.all(all.map((t) => t && this.drop(t)));
    await rm(this.o.memDir, { recursive: true, force: true });
    await rm(this.o.stateDir, { recursive: true, force: true });
  }

  /** A newer template for the same pack and shape makes older ones useless: free their RAM. */
  private retireFamily(inputs: TemplateInputs): void {
    for (const [key, p] of this.templates) {
      void p.then(
        async (t) => {
          const same = t.inputs.packName === inputs.packName && t.inputs.cpus === inputs.cpus && t.inputs.memoryMib === inputs.memoryMib && t.inputs.diskMib === inputs.diskMib;
          if (same && this.templates.get(key) === p) {
            this.templates.delete(key);
            await this.drop(t);
          }
        },
        () => undefined,
      );
    }
  }

  private async drop(t: Template): Promise<void> {
    await this.o.onDrop?.(t).catch((e: unknown) => this.o.log?.('warn', 'stopping the spares of a template', { template: t.id, error: String(e) }));
    await removeTemplateFiles(t);
  }

  private async build(key: string, inputs: TemplateInputs): Promise<Template> {
    const id = `tpl-${key.slice(0, 12)}-${randomBytes(3).toString('hex')}`;
    const stateDir = `${this.o.stateDir}/${id}`;
    await mkdir(this.o.memDir, { recursive: true, mode: 0o700 });
    await mkdir(stateDir, { recursive: true, mode: 0o700 });
    // A RAM file on a full tmpfs kills QEMU with SIGBUS mid-boot (containers often have a 64 MiB
    // /dev/shm): then keep it next to the state file instead, in the page cache.
    const memDir = (await hasRoom(this.o.memDir, inputs.memoryMib)) ? this.o.memDir : stateDir;
    const t: Template = { id, key, memFile: `${memDir}/${id}.mem`, stateFile: `${stateDir}/state`, inputs, bootMs: 0 };
    this.o.log?.('info', 'booting template', { template: id, pack: inputs.packName });
    try {
      const vm = await launchVm({
        ...inputs,
        id,
        diskImage: inputs.imagePath,
        dir: `${stateDir}/vm`,
        memFile: { path: t.memFile, share: true },
        readyTimeoutMs: this.o.readyTimeoutMs,
        log: this.o.log,
      });
      try {
        t.bootMs = vm.readyMs;
        await settleGuest(vm.agent, Date.now() + SETTLE_TIMEOUT_MS, this.o.log);
        if (inputs.warmup) await warmTemplate(vm.agent, inputs.warmup, (message, fields) => this.o.log?.('warn', message, fields));
        // A quiet moment: deferred work the start-up left behind (RCU callbacks, queued work)
        // drains here once instead of in every clone.
        await sleep(QUIET_BEFORE_SNAPSHOT_MS);
        // The host end stays connected through the snapshot: the agent is left blocked reading
        // it, and a clone connected before it resumes carries on from there (launchVm).
        const deadline = Date.now() + 30_000;
        const qmp = await untilExit(vm.proc, QmpClient.connect(vm.paths.qmpSock, { timeoutMs: 5000 }));
        try {
          await untilExit(vm.proc, awaitTimerGap(vm.agent, Date.now() + SETTLE_TIMEOUT_MS, this.o.log));
          await qmp.execute('stop');
          await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
          // QEMU 7.2 takes only a monitor-passed fd (SCM_RIGHTS) for outgoing migration, so the template
          // writes through `exec:`. It runs no user code, so it is not confined like sandboxes are.
          await qmp.execute('migrate', { uri: `exec:cat > ${t.stateFile}` });
          await waitMigration(qmp, vm.proc, deadline);
          await qmp.execute('quit').catch(() => undefined);
        } finally {
          qmp.close();
        }
        await vm.proc.waitExit(3000);
      } finally {
        await vm.cleanup.run();
      }
      if (this.closed) throw new Error('backend closed while the template booted');
      this.o.log?.('info', 'template ready', { template: id, bootMs: Math.round(t.bootMs) });
      return t;
    } catch (e) {
      await removeTemplateFiles(t);
      throw e;
    }
  }
}

/**
 * Brings a fresh template guest to the state every clone should start from, so no clone repeats
 * work that happens once per boot. Under TCG every code path a clone runs is translated afresh
 * in its QEMU process: work left for the clones is paid by each of them.
 * - The kernel refines its TSC calibration ~1 s after the TSC starts and then switches the
 *   clocksource from tsc-early to tsc under stop_machine; until then it ticks periodically
 *   (no NO_HZ idle). Wait for that switch (kvm-clock and others are final at once).
 */
async function settleGuest(agent: AgentClient, deadline: number, log?: QemuLog): Promise<void> {
  for (;;) {
    const source = (await agent.readText(CLOCKSOURCE).catch(() => '')).trim();
    if (source !== '' && source !== 'tsc-early') break;
    if (Date.now() > deadline) {
      log?.('warn', 'the template guest still runs on its early clocksource; clones will each finish the switch', { clocksource: source });
      break;
    }
    await sleep(50);
  }
}

/**
 * Returns at a moment the guest is idle and none of its timers is due within
 * TIMER_FREE_AFTER_SNAPSHOT_MS, so the snapshot that follows leaves its clones no periodic work
 * (vmstat, the memory cgroup's stats flush, …) in their first milliseconds.
 * - Each look is a read of /proc/timer_list, which wakes the guest: deferrable timers (which do
 *   not wake an idle guest, but run at its next wake-up: for a clone, at once) run there.
 * - `.next_timer` is the next timer as of the guest's last idle entry, `now at` the guest clock.
 *   While one is due soon, wait until it has run and look again.
 */
async function awaitTimerGap(agent: AgentClient, deadline: number, log?: QemuLog): Promise<void> {
  for (;;) {
    const list = await agent.readText(TIMER_LIST);
    await sleep(IDLE_AFTER_WAKE_MS);
    const now = /^now at (\d+) nsecs/m.exec(list)?.[1];
    const next = /^\s*\.next_timer\s*:\s*(\d+)/m.exec(list)?.[1];
    if (now === undefined || next === undefined) {
      log?.('warn', `cannot read the template guest's timers from ${TIMER_LIST}; snapshotting without waiting for a quiet moment`);
      return;
    }
    const aheadMs = Number((BigInt(next) - BigInt(now)) / 1_000_000n);
    if (aheadMs >= TIMER_FREE_AFTER_SNAPSHOT_MS + IDLE_AFTER_WAKE_MS * 2) return;
    if (Date.now() + aheadMs > deadline) {
      log?.('warn', 'the template guest has no quiet moment; its clones will run a due timer', { aheadMs });
      return;
    }
    await sleep(Math.max(0, aheadMs) + IDLE_AFTER_WAKE_MS);
  }
}

async function removeTemplateFiles(t: Template): Promise<void> {
  await rm(t.memFile, { force: true });
  await rm(t.stateFile.replace(/\/state$/, ''), { recursive: true, force: true });
}

async function hasRoom(dir: string, memoryMib: number): Promise<boolean> {
  const fs = await statfs(dir).catch(() => undefined);
  return fs !== undefined && fs.bavail * fs.bsize >= (memoryMib + 64) * 2 ** 20;
}

/** True when the template's files are still in place (a clone of a missing RAM file boots garbage). */
export async function templateFilesPresent(t: Template): Promise<boolean> {
  const [mem, state] = await Promise.all([stat(t.memFile).catch(() => undefined), stat(t.stateFile).catch(() => undefined)]);
  return mem !== undefined && state !== undefined && mem.size === t.inputs.memoryMib * 2 ** 20 && state.size > 0;
}
