/**
 * The microVM backends, loaded only if their modules exist in this build (they are developed
 * alongside) and constructed lazily so a host without QEMU or Firecracker starts fine.
 */
import type { Backend } from '../core/backend.js';
import type { KilnConfig } from '../core/config.js';

export async function optionalBackends(_config: KilnConfig, _log: (msg: string, fields?: Record<string, unknown>) => void): Promise<Backend[]> {
  return [];
}
