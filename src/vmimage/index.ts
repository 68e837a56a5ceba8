/** Guest kernel + initramfs shared by the microVM backends (QEMU, Firecracker). */
export { type BuildVmArtifactsOptions, buildVmArtifacts, type VmArtifacts } from './build.js';
export { type GuestCmdlineOptions, guestCmdline } from './cmdline.js';
export { extractVmlinux, findHostKernel, type HostKernel } from './kernel.js';
export { GUEST_MODULES, resolveModules } from './modules.js';
