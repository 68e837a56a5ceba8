/**
 * The kernel command line contract between the host and the agent's `--init` mode. Both microVM
 * backends use it so the guest side stays VMM-neutral.
 */
export interface GuestCmdlineOptions {
  /** Size of the tmpfs upper layer of the root overlay. */
  diskMib: number;
  /** Host TSC rate; without it TCG guests hang at "APIC: Switch to symmetric I/O mode" on a busy host. */
  tscKhz?: number;
  /** Default uid/gid for exec inside the VM. */
  execUid?: number;
  /** Appended verbatim (backendOptions.bootArgs). */
  extra?: string;
}

export function guestCmdline(o: GuestCmdlineOptions): string {
  const args = ['console=ttyS0', 'reboot=t', 'panic=-1', 'quiet', 'cryptomgr.notests', 'random.trust_cpu=on'];
  // Pressure-stall accounting: nothing in a sandbox reads it, and it runs on every task switch
  // (under TCG, in every clone's fresh translation too).
  args.push('psi=0');
  // Periodic guest work a sandbox does not need: it wakes idle guests, and what falls due in a
  // template clone's first milliseconds is translated afresh in every clone under TCG. Here,
  // the soft/hard lockup detectors (a 4 s hrtimer; under emulation on a busy host they also
  // report false soft lockups).
  args.push('nowatchdog');
  // Skip the IO-APIC timer check at boot: it busy-waits for ticks (16+ ms under emulation, and
  // on a loaded host it may retry other pin set-ups). microvm's routing is known to work.
  args.push('no_timer_check');
  // Boot work with no use in a guest whose modules are unsigned (src/vmimage strips them): the
  // built-in module-signing certificates and a key-derivation self-test, ~40 ms under TCG.
  args.push('initcall_blacklist=load_system_certificate_list,crypto_kdf108_init');
  if (o.tscKhz) args.push(`tsc_early_khz=${o.tscKhz}`, 'tsc=reliable');
  args.push(`kiln.disk_mib=${o.diskMib}`);
  if (o.execUid !== undefined) args.push(`kiln.exec_uid=${o.execUid}`);
  // KEY=value words without a dot become init's environment, which the Go runtime reads at its
  // first instruction (init goes on as the agent without a re-exec). No signal-based preemption:
  // the runtime would preempt whatever runs over 10 ms, which under software emulation is most
  // things, and each such signal is kernel and runtime code a template clone translates afresh.
  // Before `extra`, so boot arguments can override it (the later duplicate wins).
  args.push('GODEBUG=asyncpreemptoff=1');
  if (o.extra) args.push(o.extra);
  // Words after "--" become init's argv: the agent in the initramfs runs in --init mode.
  args.push('--', '--init');
  return args.join(' ');
}
