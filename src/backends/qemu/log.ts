/** How the qemu backend's pieces report what they do; the composition root passes the service's logger. */
export type QemuLog = (level: 'debug' | 'info' | 'warn', message: string, fields?: Record<string, unknown>) => void;
