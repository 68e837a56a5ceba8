/**
 * A namespace sandbox starts as named steps (core/steps.ts): their timings are reported in
 * `details.steps`, and a start that fails at its last step undoes every earlier one (process,
 * cgroup, uid) before BOOT_FAILED is returned.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { createNamespaceBackend, NS_STEP } from '../../src/backends/namespace/namespace-backend.js';
import { detectCgroupLayout } from '../../src/core/cgroups.js';
import { REPO_ROOT } from '../../src/core/config.js';
import { resolveImage } from '../../src/images/index.js';

describe('namespace backend start steps', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 120_000 }, () => {
  it("reports each step's end in order; a failed handshake unwinds the process, cgroup and uid", async () => {
    const runDir = await mkdtemp(join(tmpdir(), 'kiln-ns-start-'));
    await chmod(runDir, 0o755); // sandbox uids traverse it to their agent copy
    const cgroupName = `kiln-test-${runDir.split('-').pop()}`;
    const img = await resolveImage('shell', process.env.KILN_DATA_DIR ?? '/var/lib/kiln');
    const spec = (id: string) => ({ id, pack: { name: img.name, hash: img.hash, imagePath: img.imagePath, env: img.env }, cpus: 1, memoryMib: 64, diskMib: 64 });
    // An "agent" that cannot run in the sandbox: the sandbox ends and the handshake step fails.
    const broken = join(runDir, 'broken-agent');
    await writeFile(broken, '#!/bin/sh\necho "broken agent here" >&2\nexit 3\n', { mode: 0o755 });
    const good = createNamespaceBackend({ runDir: join(runDir, 'good'), agentPath: resolve(REPO_ROOT, 'build/kiln-agent'), maxPids: 256, cgroupName, uidBase: 260_000, uidCount: 1 });
    const bad = createNamespaceBackend({ runDir: join(runDir, 'bad'), agentPath: broken, maxPids: 256, cgroupName: `${cgroupName}b`, uidBase: 261_000, uidCount: 1 });
    try {
      const sb = await good.create(spec('steps'), { readyTimeoutMs: 30_000 });
      assert.deepEqual(Object.keys(sb.details.steps as object), Object.values(NS_STEP));
      const marks = Object.values(sb.details.steps as Record<string, number>);
      assert.deepEqual(
        [...marks].sort((a, b) => a - b),
        marks,
        'cumulative: each step ends after the one before',
      );
      await sb.destroy();

      const t0 = Date.now();
      const err = await bad.create(spec('broken'), { readyTimeoutMs: 30_000 }).then(
        () => undefined,
        (e: { code: string; message: string }) => e,
      );
      assert.equal(err?.code, 'BOOT_FAILED');
      assert.ok(Date.now() - t0 < 15_000, 'failed when the sandbox ended, not at the 30 s ready timeout');
      // The sandbox's root has no /bin/sh: bwrap cannot run it, and says so in the sandbox's log;
      // the start fails as soon as the sandbox ends (at the state or the handshake step), not at its timeout.
      assert.match(
        err!.message,
        /^namespace sandbox failed to start: the sandbox (exited \(code 1\) before its agent answered|process exited right after its start).*; sandbox log: .*bwrap: execvp \/\.kiln\/agent/s,
      );
      for (const dir of Object.values(detectCgroupLayout(`${cgroupName}b`).parents)) assert.equal(existsSync(join(dir, 'broken')), false, `${dir}/broken is left`);
      // The range holds one uid: a second start gets it only if the failed one gave it back.
      const again = await bad.create(spec('broken2'), { readyTimeoutMs: 30_000 }).then(
        () => undefined,
        (e: { message: string }) => e,
      );
      assert.doesNotMatch(again!.message, /no free sandbox uid/);
    } finally {
      await good.close().catch(() => undefined);
      await bad.close().catch(() => undefined);
      await rm(runDir, { recursive: true, force: true });
    }
  });
});
