/**
 * Workspace review on the QEMU backend over real HTTP (a real microVM: the project's snapshot and
 * the upper image as drives, the change list from the guest's scan, the sandbox's files read
 * through the agent): the same cases as on namespace — empty change set, text edit, binary file,
 * new and deleted file and directory, a deleted directory with contents, symlink created and
 * changed, mode change, a name with spaces, a gitignored node_modules — then a diff git applies, a
 * conflict refused and forced, a subset approved, a reject while the VM runs, `.git` read-only, and
 * nothing left behind after the delete.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { loadConfig } from '../../src/core/config.js';
import { createBackends } from '../../src/server/backends.js';
import { startTestServer, type TestServer } from '../parity/fixture.js';
import { skipReason } from './fixture.js';

const run = promisify(execFile);

async function why(): Promise<string | undefined> {
  const backends = await createBackends(loadConfig({ ...process.env, KILN_RUN_DIR: tmpdir(), KILN_TOKEN: '' }));
  if (!backends.has('qemu')) return 'the server does not compose a qemu backend';
  return skipReason();
}

describe('workspace review on qemu (real HTTP, real microVM)', { skip: await why(), timeout: 600_000 }, () => {
  let t: TestServer;
  let base: string;
  let project: string;
  let wsDir: string;

  before(async () => {
    base = await mkdtemp(join(tmpdir(), 'kiln-qws-api-'));
    await chmod(base, 0o755);
    const root = join(base, 'projects');
    project = join(root, 'demo');
    wsDir = join(base, 'workspaces');
    await mkdir(join(project, 'old', 'deep'), { recursive: true });
    await mkdir(join(project, 'src'));
    await writeFile(join(project, 'README.md'), '# demo\n');
    await writeFile(join(project, 'src', 'b.txt'), 'bravo\n');
    await writeFile(join(project, 'old', 'one.txt'), 'one\n');
    await writeFile(join(project, 'old', 'deep', 'two.txt'), 'two\n');
    await writeFile(join(project, 'run.sh'), '#!/bin/sh\n');
    await writeFile(join(project, '.gitignore'), 'node_modules/\n');
    await symlink('README.md', join(project, 'link'));
    const git = (...a: string[]) => run('git', ['-C', project, '-c', 'user.email=t@example.org', '-c', 'user.name=t', ...a]);
    await git('init', '-q');
    await git('add', '-A');
    await git('commit', '-qm', 'initial');
    t = await startTestServer({ KILN_WORKSPACE_ROOTS: root, KILN_WORKSPACES_DIR: wsDir });
  });

  after(async () => {
    await t?.close();
    await rm(base, { recursive: true, force: true });
  });

  it('lists, diffs, approves and rejects the changes a microVM made', async () => {
    const kiln = t.client;
    const sb = await kiln.json<{ id: string; backend: string; workspace: { path: string } }>('POST', '/v1/sandboxes', { pack: 'base', backend: 'qemu', workspace: { path: project } });
    assert.equal(sb.backend, 'qemu');
    const sh = async (script: string) => {
      const r = await kiln.sandboxes.exec(sb.id, { cmd: ['bash', '-c', script], cwd: '/workspace', timeoutMs: 120_000 });
      assert.equal(r.exitCode, 0, r.stdout + r.stderr);
      return r.stdout;
    };
    type Change = { path: string; status: string; type: string; binary: boolean; modeNew?: number };
    const changes = async () => (await kiln.json<{ changes: Change[] }>('GET', `/v1/sandboxes/${sb.id}/changes`)).changes;
    assert.deepEqual(await changes(), []);

    await sh(
      [
        'set -e',
        'echo "# demo, edited" > README.md',
        'printf "\\0\\1\\377" > new.bin',
        'mkdir -p newdir && echo hi > newdir/x.txt',
        'rm -r old src/b.txt',
        'ln -sfn run.sh link && ln -s README.md newlink',
        'chmod +x run.sh',
        'echo spaced > "with space.txt"',
        'mkdir -p node_modules/p && echo x > node_modules/p/i.js',
        'if git -c user.email=a@b -c user.name=a commit -qam nope 2>/tmp/e; then exit 1; fi',
      ].join('\n'),
    );
    const cs = await changes();
    assert.deepEqual(
      new Set(cs.map((c) => `${c.status[0]!.toUpperCase()} ${c.type} ${c.path}`)),
      new Set([
        'M file README.md',
        'A file new.bin',
        'A directory newdir',
        'A file newdir/x.txt',
        'D directory old',
        'D directory old/deep',
        'D file old/deep/two.txt',
        'D file old/one.txt',
        'D file src/b.txt',
        'M symlink link',
        'A symlink newlink',
        'M file run.sh',
        'A file with space.txt',
      ]),
    );
    assert.equal(cs.find((c) => c.path === 'new.bin')?.binary, true);
    assert.equal(cs.find((c) => c.path === 'run.sh')?.modeNew, 0o755);

    const patch = await (await kiln.request('GET', `/v1/sandboxes/${sb.id}/diff`)).text();
    const copy = join(base, 'copy');
    await run('cp', ['-a', project, copy]);
    await writeFile(join(base, 'p.patch'), patch);
    await run('git', ['-C', copy, 'apply', '--binary', join(base, 'p.patch')]);
    assert.equal(await readFile(join(copy, 'README.md'), 'utf8'), '# demo, edited\n');
    assert.equal(await readlink(join(copy, 'link')), 'run.sh');
    assert.deepEqual(await readFile(join(copy, 'new.bin')), Buffer.from([0, 1, 255]));

    await writeFile(join(project, 'README.md'), '# changed on the host\n');
    const conflict = await kiln.request('POST', `/v1/sandboxes/${sb.id}/approve`, { json: { paths: ['README.md'] } }).then(
      () => undefined,
      (e: { code?: string; details?: { conflicts?: string[] } }) => e,
    );
    assert.equal(conflict?.code, 'WORKSPACE_CONFLICT');
    assert.deepEqual(conflict?.details?.conflicts, ['README.md']);
    const ok = await kiln.json<{ applied: string[] }>('POST', `/v1/sandboxes/${sb.id}/approve`, { paths: ['README.md', 'new.bin', 'newdir'], force: true });
    assert.deepEqual(ok.applied.sort(), ['README.md', 'new.bin', 'newdir', 'newdir/x.txt']);
    assert.equal(await readFile(join(project, 'newdir', 'x.txt'), 'utf8'), 'hi\n');
    assert.equal(await readFile(join(project, 'README.md'), 'utf8'), '# demo, edited\n');

    await kiln.json('POST', `/v1/sandboxes/${sb.id}/reject`, { paths: ['old', 'link'] });
    assert.equal(await sh('cat old/deep/two.txt; readlink link'), 'two\nREADME.md\n');
    const left = (await changes()).map((c) => c.path).sort();
    assert.deepEqual(left, ['newlink', 'run.sh', 'src/b.txt', 'with space.txt']);

    // A restart of the service in the middle: the VM stops, the upper image stays; the next start
    // boots the sandbox again under its id over the same changes.
    await t.close();
    t = await startTestServer({ KILN_WORKSPACE_ROOTS: join(base, 'projects'), KILN_WORKSPACES_DIR: wsDir });
    const back = await t.client.json<{ backend: string; workspace: { restored: boolean } }>('GET', `/v1/sandboxes/${sb.id}`);
    assert.equal(back.backend, 'qemu');
    assert.equal(back.workspace.restored, true);
    const again = (await t.client.json<{ changes: Change[] }>('GET', `/v1/sandboxes/${sb.id}/changes`)).changes.map((c) => c.path).sort();
    assert.deepEqual(again, left, 'the changes survived the restart');

    await t.client.request('DELETE', `/v1/sandboxes/${sb.id}?discard=true`);
    assert.deepEqual(await readdir(wsDir), []);
    await assert.rejects(readFile(join(project, 'with space.txt')), 'discarded changes never reached the host');
  });
});
