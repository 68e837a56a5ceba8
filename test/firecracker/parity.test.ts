/**
 * Against REAL Firecracker: runs only where a firecracker binary and a vmx/svm KVM exist, plus the
 * guest kernel/initramfs and a pack image (KILN_FC_VMLINUX, KILN_FC_INITRD, KILN_FC_PACK). Elsewhere
 * it is skipped with the exact reason.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createFirecrackerBackend } from '../../src/backends/firecracker/backend.js';

const { checks } = await createFirecrackerBackend({
  runDir: '/nonexistent',
  firecrackerPath: process.env.KILN_FIRECRACKER || undefined,
  vmImage: async () => {
    throw new Error('unused');
  },
}).probe();
const failed = checks.filter((c) => !c.ok);
const files = { vmlinux: process.env.KILN_FC_VMLINUX, initrd: process.env.KILN_FC_INITRD, pack: process.env.KILN_FC_PACK };
const missingFiles = Object.entries(files)
  .filter(([, p]) => !p || !existsSync(p))
  .map(([k]) => k);
const skip = failed.length
  ? `Firecracker cannot run on this host: ${failed.map((c) => `${c.name}: ${c.detail}`).join('; ')}`
  : missingFiles.length
    ? `set KILN_FC_VMLINUX, KILN_FC_INITRD and KILN_FC_PACK (missing: ${missingFiles.join(', ')}) to run the real-Firecracker suite`
    : false;

for (const snapshots of [false, true]) {
  test(`real Firecracker: boot, exec ping, destroy (snapshots ${snapshots ? 'on' : 'off'})`, { skip }, async () => {
    const runDir = await mkdtemp(join(tmpdir(), 'kfc-real-'));
    const backend = createFirecrackerBackend({
      runDir,
      snapshots,
      jailer: 'never',
      vmImage: async () => ({ vmlinuxPath: files.vmlinux!, initrdPath: files.initrd!, hash: 'parity' }),
    });
    try {
      const spec = { id: `parity-${snapshots ? 's' : 'c'}`, pack: { name: 'p', imagePath: files.pack!, hash: 'p', env: {} }, cpus: 1, memoryMib: 256, diskMib: 128 };
      const sb = await backend.create(spec, { readyTimeoutMs: 30_000 });
      assert.equal(sb.agent.hello.transport, 'vsock');
      assert.ok((await sb.agent.ping()).rttMs < 1_000);
      const again = await backend.create({ ...spec, id: `${spec.id}2` }, { readyTimeoutMs: 30_000 });
      assert.ok((await again.agent.ping()).rttMs < 1_000);
      await Promise.all([sb.destroy(), again.destroy()]);
    } finally {
      await backend.close();
      await rm(runDir, { recursive: true, force: true });
    }
  });
}
