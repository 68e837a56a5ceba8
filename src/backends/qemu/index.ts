/** The QEMU microVM backend. Only the composition root imports this. */

export { type AccelMode, chooseAccel, hostTscKhz } from './accel.js';
export { createQemuBackend, type QemuBackendOptions } from './backend.js';
export type { QemuLog } from './process.js';
