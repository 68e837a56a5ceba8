/**
 * Workspace sandboxes end to end over real HTTP, namespace backend (real bwrap, real overlay over
 * a real host folder): nothing reaches the host folder before approve; the change list and the
 * diff; conflicts refused then forced; approve of a subset; reject while the sandbox runs; .git
 * read-only; a delete refused while changes are pending; a graceful restart and a kill -9 of the
 * service in the middle, with the changes kept and the sandbox back under its id; no mount, loop
 * device or folder left behind.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { KilnClient } from '../../sdk/src/index.js';
import { freePort, spawnService, untilHealthy } from '../parity/service-process.js';

const run = promisify(execFile);
const PROJECT_UID = 1000;

interface Answer {
  status: number;
  json: Record<string, unknown>;
  text: string;
}

/** Every file under `dir` with its content hash, mode and link target: the host folder's fingerprint. */
async function fingerprint(dir: string): Promise<string> {
  const { stdout } = await run(
    'bash',
    ['-c', 'cd "$1" && find . -path ./.git -prune -o -printf "%y %m %p %l\\n" | LC_ALL=C sort && find . -path ./.git -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum', 'fp', dir],
    {
      maxBuffer: 64 << 20,
    },
  );
  return createHash('sha256').update(stdout).digest('hex');
}

async function mountsUnder(dir: string): Promise<string[]> {
  const m = await readFile('/proc/self/mountinfo', 'utf8');
  return m.split('\n').filter((l) => l.includes(dir));
}

describe('workspace sandboxes (namespace backend, real HTTP)', { timeout: 240_000 }, () => {
  let base: string;
  let root: string;
  let project: string;
  let wsDir: string;
  let runDir: string;
  let port: number;
  let svc: ReturnType<typeof spawnService> | undefined;
  let kiln: KilnClient;

  const start = async () => {
    svc = spawnService(runDir, port, { KILN_WORKSPACE_ROOTS: root, KILN_WORKSPACES_DIR: wsDir });
    kiln = new KilnClient({ baseUrl: `http://127.0.0.1:${port}` });
    await untilHealthy(kiln, svc);
  };
  const stop = async (signal: NodeJS.Signals) => {
    const child = svc!.child;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill(signal);
      await exited;
    }
    svc = undefined;
  };
  const call = async (method: string, path: string, body?: unknown): Promise<Answer> => {
    const r = await fetch(`http://127.0.0.1:${port}${path}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(text);
    } catch {
      /* a diff, or empty */
    }
    return { status: r.status, json, text };
  };
  const sh = async (id: string, script: string): Promise<{ exitCode: number | null; stdout: string; stderr: string }> => {
    const r = await kiln.sandboxes.exec(id, { cmd: ['bash', '-c', script], cwd: '/workspace' });
    return { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr };
  };
  const changes = async (id: string, ignored = false) => {
    const r = await call('GET', `/v1/sandboxes/${id}/changes${ignored ? '?ignored=1' : ''}`);
    assert.equal(r.status, 200, r.text);
    return r.json.changes as { path: string; pathBase64: string; status: string; type: string; binary: boolean; ignored: boolean; modeOld?: number; modeNew?: number }[];
  };
  const summary = (cs: Awaited<ReturnType<typeof changes>>) => cs.map((c) => `${c.status[0]!.toUpperCase()} ${c.type} ${c.path}`);

  before(async () => {
    base = await mkdtemp(join(tmpdir(), 'kiln-ws-'));
    await chmod(base, 0o755);
    root = join(base, 'projects');
    project = join(root, 'demo');
    wsDir = join(base, 'workspaces');
    runDir = join(base, 'run');
    await mkdir(join(project, 'src'), { recursive: true });
    await mkdir(join(project, 'old', 'deep'), { recursive: true });
    await writeFile(join(project, 'README.md'), '# demo\n\nline two\n');
    await writeFile(join(project, 'src', 'a.txt'), 'alpha\n');
    await writeFile(join(project, 'src', 'b.txt'), 'bravo\n');
    await writeFile(join(project, 'old', 'one.txt'), 'one\n');
    await writeFile(join(project, 'old', 'deep', 'two.txt'), 'two\n');
    await writeFile(join(project, 'run.sh'), '#!/bin/sh\necho run\n');
    await writeFile(join(project, 'blob.bin'), Buffer.from([0, 1, 2, 3, 255, 0, 7]));
    await writeFile(join(project, '.gitignore'), 'node_modules/\n*.log\n');
    await symlink('README.md', join(project, 'link'));
    // A secret beside the project: the sandbox must not reach it through the overlay.
    await writeFile(join(root, 'secret.txt'), 'host secret\n');
    await run('git', ['-C', project, 'init', '-q']);
    await run('git', ['-C', project, '-c', 'user.email=t@example.org', '-c', 'user.name=t', 'add', '-A']);
    await run('git', ['-C', project, '-c', 'user.email=t@example.org', '-c', 'user.name=t', 'commit', '-qm', 'initial']);
    await run('chown', ['-R', `${PROJECT_UID}:${PROJECT_UID}`, project]);
    port = await freePort();
    await start();
  });

  after(async () => {
    if (svc) await stop('SIGTERM');
    // Whatever a failed test left: the next service start would remove it; here, remove it by hand.
    for (const m of (await mountsUnder(base)).reverse()) {
      const target = m.split(' ')[4];
      if (target) await run('umount', ['-l', target]).catch(() => undefined);
    }
    await rm(base, { recursive: true, force: true });
  });

  it('refuses paths outside the roots, through symlinks too, with 403', async () => {
    const outside = await call('POST', '/v1/sandboxes', { pack: 'base', workspace: { path: base } });
    assert.equal(outside.status, 403, outside.text);
    assert.equal(outside.json.code, 'WORKSPACE_FORBIDDEN');
    await symlink(base, join(root, 'escape-link'));
    try {
      const viaLink = await call('POST', '/v1/sandboxes', { pack: 'base', workspace: { path: join(root, 'escape-link') } });
      assert.equal(viaLink.status, 403, viaLink.text);
      assert.match(viaLink.json.message as string, /symlink/);
    } finally {
      await rm(join(root, 'escape-link'));
    }
    const missing = await call('POST', '/v1/sandboxes', { pack: 'base', workspace: { path: join(root, 'nope') } });
    assert.equal(missing.status, 400, missing.text);
    assert.match(missing.json.message as string, /does not exist/);
  });

  it('works on the project copy-on-write, reviews, approves, rejects and survives restarts', async () => {
    const hostBefore = await fingerprint(project);
    const created = await call('POST', '/v1/sandboxes', { pack: 'base', workspace: { path: project } });
    assert.equal(created.status, 201, created.text);
    const id = created.json.id as string;
    assert.deepEqual(created.json.workspace, { path: project, gitWritable: false, sizeMib: 1024, restored: false });
    assert.deepEqual(await changes(id), [], 'a fresh workspace has no changes');

    // The sandbox sees the project and may change it; .git is read-only.
    const edit = await sh(
      id,
      [
        'set -e',
        'cat README.md >/dev/null',
        'printf "# demo\\n\\nline two, edited\\n" > README.md',
        'printf "\\0\\1binary\\377" > new.bin',
        'mkdir -p newdir/sub && echo hi > newdir/sub/x.txt',
        'rm -r old',
        'rm src/b.txt',
        'ln -sfn src/a.txt link',
        'ln -s README.md newlink',
        'chmod +x run.sh',
        'echo spaced > "with space.txt"',
        'echo raw > "$(printf \'caf\\351.txt\')"',
        'mkdir -p node_modules/pkg && echo x > node_modules/pkg/index.js',
        'git status --short >/dev/null',
        'git log --oneline | grep -q initial',
        'if git -c user.email=a@b -c user.name=a commit -qam nope 2>/tmp/err; then echo "commit worked"; exit 1; fi',
        'grep -qi "read-only" /tmp/err',
      ].join('\n'),
    );
    assert.equal(edit.exitCode, 0, `${edit.stdout}${edit.stderr}`);
    assert.equal(await fingerprint(project), hostBefore, 'nothing reached the host folder');

    // Escapes: the folder beside the project, /proc, a symlink to an absolute host path.
    const escapes = await sh(
      id,
      [
        `cat ../secret.txt 2>/dev/null && echo LEAK1`,
        `cat ${root}/secret.txt 2>/dev/null && echo LEAK2`,
        `ln -s ${root}/secret.txt abs-link && cat abs-link 2>/dev/null && echo LEAK3`,
        'cat /proc/1/root/../secret.txt 2>/dev/null && echo LEAK4',
        `grep -rl "host secret" / --exclude-dir=proc --exclude-dir=sys 2>/dev/null | head -1 | grep -q . && echo LEAK5`,
        'rm -f abs-link; true',
      ].join('\n'),
    );
    assert.doesNotMatch(escapes.stdout, /LEAK/, escapes.stdout);

    const cs = await changes(id);
    assert.deepEqual(
      new Set(summary(cs)),
      new Set([
        'M file README.md',
        'A file new.bin',
        'A directory newdir',
        'A directory newdir/sub',
        'A file newdir/sub/x.txt',
        'D directory old',
        'D directory old/deep',
        'D file old/deep/two.txt',
        'D file old/one.txt',
        'D file src/b.txt',
        'M symlink link',
        'A symlink newlink',
        'M file run.sh',
        'A file with space.txt',
        'A file caf\uFFFD.txt',
      ]),
    );
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const used = Number(new RegExp(`^kiln_workspace_upper_bytes\\{sandbox="${id}"\\} (\\d+)$`, 'm').exec(metrics)?.[1]);
    assert.ok(
      used > 0,
      `the upper layer's size is a metric:\n${metrics
        .split('\n')
        .filter((l) => l.includes('workspace'))
        .join('\n')}`,
    );
    const byPath = new Map(cs.map((c) => [c.path, c]));
    assert.equal(byPath.get('README.md')?.status, 'modified');
    assert.equal(byPath.get('new.bin')?.binary, true);
    assert.equal(byPath.get('run.sh')?.modeNew, 0o755);
    assert.equal(byPath.get('run.sh')?.modeOld, 0o644);
    assert.equal(byPath.get('link')?.type, 'symlink');
    assert.equal(byPath.get('old/deep/two.txt')?.status, 'deleted', 'a deleted directory lists its contents');
    const raw = cs.find((c) => Buffer.from(c.pathBase64, 'base64').equals(Buffer.from('caf\xe9.txt', 'latin1')));
    assert.ok(raw, 'the non-UTF-8 name is listed with its exact bytes');
    assert.ok(!cs.some((c) => c.path.startsWith('node_modules')), 'gitignored paths are left out');
    assert.ok(
      (await changes(id, true)).some((c) => c.path === 'node_modules/pkg/index.js' && c.ignored),
      '…and listed when asked for',
    );

    // The diff applies with git to a copy of the host folder and gives the sandbox's text files.
    const diff = await call('GET', `/v1/sandboxes/${id}/diff`);
    assert.equal(diff.status, 200);
    assert.match(diff.text, /^diff --git a\/README.md b\/README.md$/m);
    const copy = join(base, 'copy');
    await run('cp', ['-a', project, copy]);
    await writeFile(join(base, 'all.patch'), diff.text);
    await run('git', ['-C', copy, 'apply', '--binary', join(base, 'all.patch')]);
    assert.equal(await readFile(join(copy, 'README.md'), 'utf8'), '# demo\n\nline two, edited\n');
    assert.equal(await readlink(join(copy, 'link')), 'src/a.txt');
    await rm(copy, { recursive: true });

    // A conflict: the host changed README.md after the sandbox started.
    await writeFile(join(project, 'README.md'), '# demo\n\nchanged on the host\n');
    const conflict = await call('POST', `/v1/sandboxes/${id}/approve`, { paths: ['README.md', 'new.bin'] });
    assert.equal(conflict.status, 409, conflict.text);
    assert.equal(conflict.json.code, 'WORKSPACE_CONFLICT');
    assert.deepEqual((conflict.json.details as { conflicts: string[] }).conflicts, ['README.md']);
    assert.equal(await readFile(join(project, 'README.md'), 'utf8'), '# demo\n\nchanged on the host\n', 'a refused approve applies nothing');
    await assert.rejects(readFile(join(project, 'new.bin')));

    // Approve a subset, with force.
    const approved = await call('POST', `/v1/sandboxes/${id}/approve`, { paths: ['README.md', 'new.bin', 'run.sh'], force: true });
    assert.equal(approved.status, 200, approved.text);
    assert.deepEqual((approved.json.applied as string[]).sort(), ['README.md', 'new.bin', 'run.sh']);
    assert.equal(await readFile(join(project, 'README.md'), 'utf8'), '# demo\n\nline two, edited\n');
    assert.deepEqual(await readFile(join(project, 'new.bin')), Buffer.from([0, 1, ...Buffer.from('binary'), 255]));
    const { stdout: modeOut } = await run('stat', ['-c', '%a %u', join(project, 'run.sh'), join(project, 'new.bin')]);
    assert.deepEqual(modeOut.trim().split('\n'), ['755 1000', '644 1000'], 'modes kept; new files belong to the folder owner');
    const again = await call('POST', `/v1/sandboxes/${id}/approve`, { paths: ['README.md'] });
    assert.deepEqual(again.json.applied, [], 'approving twice applies nothing the second time');
    assert.ok(!summary(await changes(id)).some((s) => s.endsWith(' README.md')), 'approved changes leave the list');

    // Reject while the sandbox runs: it sees the host versions again.
    const rejected = await call('POST', `/v1/sandboxes/${id}/reject`, { paths: ['src/b.txt', 'newdir', 'link'] });
    assert.equal(rejected.status, 200, rejected.text);
    const seen = await sh(id, 'cat src/b.txt; readlink link; test -e newdir && echo STILL');
    assert.equal(seen.stdout, 'bravo\nREADME.md\n');
    const left = summary(await changes(id));
    assert.ok(!left.some((s) => / (src\/b\.txt|link|newdir.*)$/.test(s)), left.join('\n'));

    // A delete while changes are pending is refused.
    const pending = await call('DELETE', `/v1/sandboxes/${id}`);
    assert.equal(pending.status, 409, pending.text);
    assert.equal(pending.json.code, 'WORKSPACE_PENDING');

    // A graceful restart keeps the changes and brings the sandbox back under its id.
    const beforeRestart = summary(await changes(id));
    await stop('SIGTERM');
    assert.deepEqual(await mountsUnder(wsDir), [], 'a service stop leaves no workspace mount');
    await start();
    const back = await call('GET', `/v1/sandboxes/${id}`);
    assert.equal(back.status, 200, back.text);
    assert.equal((back.json.workspace as { restored: boolean }).restored, true);
    assert.deepEqual(summary(await changes(id)), beforeRestart);
    assert.equal((await sh(id, 'cat newdir/sub/x.txt 2>/dev/null; cat "with space.txt"')).stdout, 'spaced\n');

    // kill -9 in the middle of an exec: the sandbox runs on, with its processes, and the next start reattaches it.
    assert.equal((await sh(id, 'sleep 1000 & echo $! > /tmp/bg.pid')).exitCode, 0);
    void sh(id, 'sleep 30').catch(() => undefined);
    await new Promise((r) => setTimeout(r, 300));
    await stop('SIGKILL');
    await start();
    assert.deepEqual(summary(await changes(id)), beforeRestart);
    assert.equal((await sh(id, 'kill -0 $(cat /tmp/bg.pid) && echo alive')).stdout, 'alive\n', 'a background process outlives the crash');

    // Reject the rest, then the delete goes through and leaves nothing behind.
    const rest = await call('POST', `/v1/sandboxes/${id}/reject`, {});
    assert.equal(rest.status, 200, rest.text);
    assert.deepEqual(await changes(id), []);
    const del = await call('DELETE', `/v1/sandboxes/${id}`);
    assert.equal(del.status, 204, del.text);
    assert.deepEqual(await readdir(wsDir), []);
    assert.deepEqual(await mountsUnder(wsDir), []);
    assert.equal(await readFile(join(project, 'src', 'b.txt'), 'utf8'), 'bravo\n', 'rejected changes never reached the host');
  });

  it('a delete with ?discard=true drops pending changes', async () => {
    const created = await call('POST', '/v1/sandboxes', { pack: 'base', workspace: { path: project } });
    assert.equal(created.status, 201, created.text);
    const id = created.json.id as string;
    assert.equal((await sh(id, 'echo scratch > scratch.txt')).exitCode, 0);
    assert.equal((await call('DELETE', `/v1/sandboxes/${id}`)).status, 409);
    assert.equal((await call('DELETE', `/v1/sandboxes/${id}?discard=true`)).status, 204);
    assert.deepEqual(await readdir(wsDir), []);
    await assert.rejects(readFile(join(project, 'scratch.txt')));
    await chown(project, PROJECT_UID, PROJECT_UID);
  });
});
