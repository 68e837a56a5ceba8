/** The QEMU microVM backend. Only the composition root imports this. */
export { createQemuBackend, type QemuBackendOptions } from './backend.js';
export { chooseAccel, hostTscKhz, type AccelMode } from './accel.js';
export type { QemuLog } from './process.js';
