/**
 * The namespace backend's spawner (`kiln-agent host spawner`, backends/namespace/spawner.ts) starts
 * every sandbox's bwrap. When the helper dies, the sandboxes it started run on and are still
 * deleted whole (their bwrap's end found by its pid); the next create starts a new helper.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { createNamespaceBackend } from '../../src/backends/namespace/namespace-backend.js';
import type { BackendSandbox } from '../../src/core/backend.js';
import { detectCgroupLayout } from '../../src/core/cgroups.js';
import { REPO_ROOT } from '../../src/core/config.js';
import { resolveImage } from '../../src/images/index.js';
import { alive, until } from '../parity/leaks.js';

/** This process's children running `kiln-agent host spawner`. */
function spawners(): number[] {
  const kids = readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  return kids.filter((k) => {
    try {
      return readFileSync(`/proc/${k}/cmdline`, 'utf8').split('\0').slice(-3).join(' ') === 'host spawner ';
    } catch {
      return false;
    }
  });
}

async function echo(sb: BackendSandbox, text: string): Promise<string> {
  let out = '';
  const r = await sb.agent.exec({ argv: ['/bin/echo', text], cwd: '/', timeoutMs: 30_000 }, { onStdout: (c) => (out += c.toString()) }).result;
  assert.equal(r.exitCode, 0);
  return out;
}

describe('namespace backend spawner', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 120_000 }, () => {
  it('sandboxes outlive a dead spawner and are still deleted whole; the next create starts a new one', async () => {
    const runDir = await mkdtemp(join(tmpdir(), 'kiln-ns-spawner-'));
    await chmod(runDir, 0o755);
    const cgroupName = `kiln-test-${runDir.split('-').pop()}`;
    const backend = createNamespaceBackend({ runDir, agentPath: resolve(REPO_ROOT, 'build/kiln-agent'), maxPids: 256, cgroupName, uidBase: 262_000, uidCount: 4 });
    const img = await resolveImage('shell', process.env.KILN_DATA_DIR ?? '/var/lib/kiln');
    const spec = (id: string) => ({ id, pack: { name: img.name, hash: img.hash, imagePath: img.imagePath, env: img.env }, cpus: 1, memoryMib: 64, diskMib: 64 });
    try {
      const a = await backend.create(spec('a'), { readyTimeoutMs: 30_000 });
      const [helper, ...others] = spawners();
      assert.ok(helper, 'a spawner runs');
      assert.deepEqual(others, []);
      process.kill(helper, 'SIGKILL');
      await until(() => !alive(helper), 5000);

      assert.equal(await echo(a, 'still here'), 'still here\n', 'the sandbox runs on');
      const b = await backend.create(spec('b'), { readyTimeoutMs: 30_000 });
      const [again] = spawners();
      assert.ok(again && again !== helper, 'a new spawner started b');
      assert.equal(await echo(b, 'b'), 'b\n');

      const pids = [a.details.pid as number, b.details.pid as number];
      const t0 = Date.now();
      await a.destroy(); // its bwrap is no child of a live spawner: its end is found by pid
      assert.ok(Date.now() - t0 < 3000, `a's delete waited ${Date.now() - t0} ms`);
      await b.destroy();
      assert.deepEqual(pids.filter(alive), [], 'no sandbox process is left');
      for (const dir of Object.values(detectCgroupLayout(cgroupName).parents)) {
        for (const id of ['a', 'b']) assert.equal(existsSync(join(dir, id)), false, `${dir}/${id} is left`);
      }
    } finally {
      await backend.close().catch(() => undefined);
      await rm(runDir, { recursive: true, force: true });
    }
    await until(() => spawners().length === 0, 5000);
    assert.deepEqual(spawners(), [], 'close() ends the spawner');
  });
});
