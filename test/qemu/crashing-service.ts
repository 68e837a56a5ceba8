/**
 * A stand-in for a kiln service that crashes (test/qemu/jail.test.ts): creates one cold-booted
 * QEMU sandbox under the given dirs, prints its details as one JSON line and waits to be killed.
 *   node --import tsx test/qemu/crashing-service.ts <dataDir> <runDir> <shmDir>
 */
import { createQemuBackend } from '../../src/backends/qemu/index.js';
import { AGENT_PATH, findPack } from './fixture.js';

const [dataDir, runDir, shmDir] = process.argv.slice(2) as [string, string, string];
const backend = createQemuBackend({ dataDir, runDir, shmDir, agentPath: AGENT_PATH, templates: false });
const sb = await backend.create({ id: 'crashed', pack: await findPack(), cpus: 1, memoryMib: 256, diskMib: 64 }, { readyTimeoutMs: 60_000 });
process.stdout.write(`${JSON.stringify(sb.details)}\n`);
setInterval(() => undefined, 60_000);
