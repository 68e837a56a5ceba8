/** scan(): orphaned Firecracker processes of THIS service are killed and their dirs removed; others are left alone. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createFirecrackerBackend } from '../../src/backends/firecracker/backend.js';

test('scan kills orphans pointing into our run dir, removes VM dirs and incomplete templates only', async () => {
  const root = await mkdtemp(join(tmpdir(), 'kfc-scan-'));
  const runDir = join(root, 'run');
  const vmDir = join(runDir, 'firecracker/vms/old-sb');
  await mkdir(vmDir, { recursive: true });
  await mkdir(join(runDir, 'firecracker/templates/complete1'), { recursive: true });
  await writeFile(join(runDir, 'firecracker/templates/complete1/complete'), 'x');
  await mkdir(join(runDir, 'firecracker/templates/.tmp-half'), { recursive: true });
  // A process whose argv[0] is named "firecracker" (a symlink to node) like a real leftover VMM.
  await symlink(process.execPath, join(root, 'firecracker'));
  const spin = ['-e', 'setInterval(() => {}, 1e6)', '--'];
  const ours = spawn(join(root, 'firecracker'), [...spin, '--api-sock', join(vmDir, 'api.sock')], { stdio: 'ignore' });
  const foreign = spawn(join(root, 'firecracker'), [...spin, '--api-sock', '/tmp/someone-else/api.sock'], { stdio: 'ignore' });
  await Promise.all([once(ours, 'spawn'), once(foreign, 'spawn')]);
  try {
    const backend = createFirecrackerBackend({
      runDir,
      vmImage: async () => {
        throw new Error('unused');
      },
    });
    const oursExit = once(ours, 'exit');
    const report = await backend.scan();
    await oursExit;
    assert.equal(ours.signalCode, 'SIGKILL');
    assert.equal(foreign.exitCode, null, 'a firecracker of someone else is untouched');
    assert.ok(
      report.removed.some((l) => l.startsWith(`killed orphaned Firecracker process ${ours.pid}`)),
      report.removed.join('\n'),
    );
    assert.equal(existsSync(vmDir), false);
    assert.equal(existsSync(join(runDir, 'firecracker/templates/complete1')), true);
    assert.equal(existsSync(join(runDir, 'firecracker/templates/.tmp-half')), false);
  } finally {
    ours.kill('SIGKILL');
    foreign.kill('SIGKILL');
    await rm(root, { recursive: true, force: true });
  }
});
