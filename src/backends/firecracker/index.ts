/** Public surface of the Firecracker backend (only the composition root and the CLI import it). */

export { FirecrackerApi, FirecrackerApiError, type FirecrackerApiOptions } from './api-client.js';
export { createFirecrackerBackend, type FirecrackerBackendOptions, type VmImage } from './backend.js';
export { type InstallOptions, type InstallResult, installFirecracker, PINNED_RELEASES } from './install.js';
export { type HostFacts, hostChecks, inspectHost, type ProbeInputs } from './probe.js';
export { type FirecrackerSandboxOptions, parseSandboxOptions, type RateLimitOption } from './sandbox-options.js';
export { AGENT_VSOCK_PORT, connectHybridVsock, type HybridVsockOptions } from './vsock.js';
