/** Public surface of the Firecracker backend (only the composition root and the CLI import it). */
export { createFirecrackerBackend, type FirecrackerBackendOptions, type VmImage } from './backend.js';
export { inspectHost, hostChecks, type HostFacts, type ProbeInputs } from './probe.js';
export { FirecrackerApi, FirecrackerApiError, type FirecrackerApiOptions } from './api-client.js';
export { connectHybridVsock, AGENT_VSOCK_PORT, type HybridVsockOptions } from './vsock.js';
export { parseSandboxOptions, type FirecrackerSandboxOptions, type RateLimitOption } from './sandbox-options.js';
export { installFirecracker, PINNED_RELEASES, type InstallOptions, type InstallResult } from './install.js';
