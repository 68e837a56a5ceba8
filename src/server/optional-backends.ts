/**
 * The microVM backends. They are constructed cheaply (no boot, no kernel build) so a host without
 * QEMU or Firecracker starts fine; their probe() says why one is unavailable. The guest kernel +
 * initramfs are built on first use and shared by both (VMM-neutral).
 */
import type { Backend } from '../core/backend.js';
import type { KilnConfig } from '../core/config.js';
import { createFirecrackerBackend } from '../backends/firecracker/index.js';
import { createQemuBackend } from '../backends/qemu/index.js';
import { buildVmArtifacts, type VmArtifacts } from '../vmimage/index.js';

export async function optionalBackends(config: KilnConfig, log: (msg: string, fields?: Record<string, unknown>) => void): Promise<Backend[]> {
  let artifacts: Promise<VmArtifacts> | undefined;
  const vmImage = (): Promise<VmArtifacts> => {
    artifacts ??= buildVmArtifacts({ dataDir: config.dataDir, agentPath: config.agentPath, onProgress: (m) => log('vm image', { step: m }) });
    artifacts.catch(() => { artifacts = undefined; });
    return artifacts;
  };
  return [
    createQemuBackend({
      dataDir: config.dataDir, runDir: config.runDir, agentPath: config.agentPath, accel: config.qemuAccel,
      log: (level, msg, fields) => log(`qemu ${level}: ${msg}`, fields),
    }),
    createFirecrackerBackend({
      runDir: config.runDir,
      vmImage,
      firecrackerPath: config.firecrackerPath,
      kvm: config.firecrackerKvm,
    }),
  ];
}

// The optional backends' host tools for the CLI (kiln doctor, kiln firecracker): the CLI reaches
// them through here, so only the composition root imports backend modules (.dependency-cruiser.cjs).
export { firecrackerDoctor, installFirecracker } from '../backends/firecracker/index.js';
export { DEFAULT_VERSION as FIRECRACKER_DEFAULT_VERSION } from '../backends/firecracker/install.js';
