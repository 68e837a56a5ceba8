/** Guest kernel + initramfs shared by the microVM backends (QEMU, Firecracker). */
export { buildVmArtifacts, type BuildVmArtifactsOptions, type VmArtifacts } from './build.js';
export { findHostKernel, extractVmlinux, type HostKernel } from './kernel.js';
export { GUEST_MODULES, resolveModules } from './modules.js';
export { guestCmdline, type GuestCmdlineOptions } from './cmdline.js';
