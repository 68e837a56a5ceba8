/**
 * Can this host run Firecracker? Needs a `firecracker` binary (PATH or configured) AND a KVM that
 * runs ordinary guests: /dev/kvm writable and vmx/svm in the CPU flags. A kvm-pvm host exposes
 * /dev/kvm without vmx/svm and ordinary guest kernels hang there. Every "no" says how to fix it.
 */
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access, readFile, stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import type { HostCheck } from '../../core/backend.js';
import { findExecutable } from './jailer.js';

const run = promisify(execFile);

export interface ProbeInputs {
  firecrackerPath?: string;
  jailerPath?: string;
  /** 'force' skips the vmx/svm check (hosts whose CPU flags lie, e.g. some nested setups). */
  kvm?: 'auto' | 'force';
  /** For tests: where to look instead of the real host files. */
  paths?: { kvm?: string; cpuinfo?: string; sysModule?: string; envPath?: string };
}

export interface HostFacts {
  firecrackerPath?: string;
  firecrackerVersion?: string;
  jailerPath?: string;
  kvmExists: boolean;
  kvmWritable: boolean;
  cpuVirtualisation?: 'vmx' | 'svm';
  kvmPvm: boolean;
}

export async function inspectHost(i: ProbeInputs = {}): Promise<HostFacts> {
  const kvm = i.paths?.kvm ?? '/dev/kvm';
  const envPath = i.paths?.envPath ?? process.env.PATH ?? '';
  const firecrackerPath = await findExecutable('firecracker', i.firecrackerPath, envPath);
  const jailerPath = await findExecutable('jailer', i.jailerPath, envPath);
  const cpuinfo = await readFile(i.paths?.cpuinfo ?? '/proc/cpuinfo', 'utf8').catch(() => '');
  const flag = /^flags\s*:.*\b(vmx|svm)\b/m.exec(cpuinfo)?.[1] as 'vmx' | 'svm' | undefined;
  let firecrackerVersion: string | undefined;
  if (firecrackerPath) {
    firecrackerVersion = await run(firecrackerPath, ['--version'], { timeout: 5_000 }).then(
      (r) => r.stdout.split('\n')[0]!.trim(),
      () => undefined,
    );
  }
  return {
    firecrackerPath,
    firecrackerVersion,
    jailerPath,
    kvmExists: await stat(kvm).then(
      () => true,
      () => false,
    ),
    kvmWritable: await access(kvm, constants.R_OK | constants.W_OK).then(
      () => true,
      () => false,
    ),
    cpuVirtualisation: flag,
    kvmPvm: await stat(`${i.paths?.sysModule ?? '/sys/module'}/kvm_pvm`).then(
      () => true,
      () => false,
    ),
  };
}

/** The checks behind probe() (which `kiln doctor` prints), each with what to do when it fails. */
export function hostChecks(f: HostFacts, kvmMode: 'auto' | 'force' = 'auto'): HostCheck[] {
  const checks: HostCheck[] = [];
  checks.push(
    f.firecrackerPath
      ? { name: 'firecracker binary', ok: true, detail: `${f.firecrackerPath}${f.firecrackerVersion ? ` (${f.firecrackerVersion})` : ''}` }
      : {
          name: 'firecracker binary',
          ok: false,
          detail:
            'no firecracker binary on PATH or configured (KILN_FIRECRACKER): install one with "kiln firecracker install" on a host with internet access, or copy a release binary to /usr/local/bin/firecracker',
        },
  );
  if (!f.kvmExists) {
    checks.push({ name: 'KVM device', ok: false, detail: '/dev/kvm does not exist: load kvm_intel or kvm_amd (modprobe kvm_intel), or on a cloud VM enable nested virtualisation; see docs/hosts.md' });
  } else if (!f.kvmWritable) {
    checks.push({ name: 'KVM device', ok: false, detail: '/dev/kvm is not readable+writable by this user: add the service user to the "kvm" group or run as root; see docs/hosts.md' });
  } else {
    checks.push({ name: 'KVM device', ok: true, detail: '/dev/kvm is readable and writable' });
  }
  if (f.cpuVirtualisation) {
    checks.push({ name: 'CPU virtualisation', ok: true, detail: `${f.cpuVirtualisation} in /proc/cpuinfo` });
  } else if (kvmMode === 'force') {
    checks.push({ name: 'CPU virtualisation', ok: true, detail: 'no vmx/svm in /proc/cpuinfo, but KVM use is forced by configuration (KILN_FIRECRACKER_KVM=force)' });
  } else {
    const pvm = f.kvmPvm ? 'this is a kvm-pvm host (the kvm_pvm module is loaded): /dev/kvm exists but ordinary guest kernels hang under it, and Firecracker has no software fallback. ' : '';
    checks.push({
      name: 'CPU virtualisation',
      ok: false,
      detail: `${pvm}no vmx/svm flag in /proc/cpuinfo: use a host with Intel VT-x or AMD-V (bare metal, or a cloud VM with nested virtualisation enabled); set KILN_FIRECRACKER_KVM=force only if you know KVM works here. See docs/hosts.md`,
    });
  }
  checks.push(
    f.jailerPath
      ? { name: 'jailer', ok: true, detail: `${f.jailerPath}: microVMs run chrooted under dedicated uids with cgroup limits` }
      : { name: 'jailer', ok: true, detail: 'not found (optional): microVMs run unjailed as the service user; install the jailer from the same release for chroot, uid and cgroup isolation' },
  );
  return checks;
}
