/**
 * Choosing the accelerator and measuring the host TSC rate. KVM is only trusted when /dev/kvm is
 * writable AND the CPU advertises vmx/svm: on kvm-pvm hosts /dev/kvm exists but ordinary guest
 * kernels hang under it. TCG guests need `tsc_early_khz=` or they hang at boot on a busy host.
 */
import { execFile } from 'node:child_process';
import { access, constants, readFile } from 'node:fs/promises';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export type AccelMode = 'auto' | 'kvm' | 'tcg';

export interface AccelChoice {
  accel: 'kvm' | 'tcg';
  /** Why this accelerator was chosen (shown by probe()). */
  reason: string;
}

export async function chooseAccel(mode: AccelMode): Promise<AccelChoice> {
  if (mode === 'kvm') return { accel: 'kvm', reason: 'forced by configuration' };
  if (mode === 'tcg') return { accel: 'tcg', reason: 'forced by configuration' };
  const writable = await access('/dev/kvm', constants.R_OK | constants.W_OK).then(
    () => true,
    () => false,
  );
  if (!writable) return { accel: 'tcg', reason: '/dev/kvm is missing or not writable' };
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  if (!/^flags\s*:.*\b(vmx|svm)\b/m.test(cpuinfo)) {
    return { accel: 'tcg', reason: 'the CPU shows no vmx/svm (nested or paravirtual KVM host): ordinary guests hang under KVM here' };
  }
  return { accel: 'kvm', reason: '/dev/kvm is writable and the CPU has hardware virtualisation' };
}

let tscPromise: Promise<number | undefined> | undefined;

/** Host TSC rate in kHz, measured once per process; undefined when it cannot be found. */
export function hostTscKhz(): Promise<number | undefined> {
  tscPromise ??= measureTscKhz();
  return tscPromise;
}

async function measureTscKhz(): Promise<number | undefined> {
  const sysfs = await readFile('/sys/devices/system/cpu/cpu0/tsc_freq_khz', 'utf8').catch(() => '');
  if (/^\d+$/.test(sysfs.trim())) return Number(sysfs.trim());
  const dmesg = await execFileAsync('dmesg', [], { maxBuffer: 16 << 20 }).then(
    (r) => r.stdout,
    () => '',
  );
  const refined = /Refined TSC clocksource calibration: (\d+\.\d+) MHz/.exec(dmesg);
  if (refined) return Math.round(Number(refined[1]) * 1000);
  const detected = /tsc: Detected (\d+\.\d+) MHz processor/.exec(dmesg);
  if (detected) return Math.round(Number(detected[1]) * 1000);
  // Intel's nominal frequency in the model name is the TSC rate; under a hypervisor "cpu MHz" is
  // the TSC rate it advertises (on bare metal it may be the current, scaled frequency).
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const nominal = /^model name\s*:.*@ (\d+(\.\d+)?)GHz/m.exec(cpuinfo);
  if (nominal) return Math.round(Number(nominal[1]) * 1_000_000);
  const mhz = /^cpu MHz\s*:\s*(\d+(\.\d+)?)/m.exec(cpuinfo);
  return mhz ? Math.round(Number(mhz[1]) * 1000) : undefined;
}

let versionPromise: Promise<string> | undefined;

/** "7.2.22" from `qemu-system-x86_64 --version`; part of every template key. */
export function qemuVersion(binary: string): Promise<string> {
  versionPromise ??= execFileAsync(binary, ['--version']).then((r) => {
    const m = /version (\S+)/.exec(r.stdout);
    return m ? m[1]! : r.stdout.split('\n')[0]!.trim();
  });
  versionPromise.catch(() => {
    versionPromise = undefined;
  });
  return versionPromise;
}
