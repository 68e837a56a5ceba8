/**
 * The shared sandbox contract on the QEMU backend (through the real server). Skipped until the
 * composition root builds a qemu backend, or where QEMU cannot run.
 */
import { tmpdir } from 'node:os';
import { loadConfig } from '../../src/core/config.js';
import { createBackends } from '../../src/server/backends.js';
import { paritySuite } from '../parity/contract.js';
import { skipReason } from './fixture.js';

async function why(): Promise<string | undefined> {
  const backends = await createBackends(loadConfig({ ...process.env, KILN_RUN_DIR: tmpdir(), KILN_TOKEN: '' }));
  if (!backends.has('qemu')) return 'the server does not compose a qemu backend yet (src/server/backends.ts)';
  return skipReason();
}

// TCG is several times slower than the host: scale the contract's timeouts.
paritySuite({ backend: 'qemu', skip: await why(), slow: 3 });
