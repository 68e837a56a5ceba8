/**
 * A real project end to end: GNU hello 2.10's source (Debian's source package "hello", fetched by
 * scripts/fetch-test-sources.sh) as a git repository on the host; a workspace sandbox configures,
 * builds and tests it (`./configure && make && make check` with the base pack's toolchain), changes
 * one source file and rebuilds; the review shows that change among the build's outputs; approving
 * that one path makes `git diff` on the host show exactly that change, and nothing else reached it.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { access, chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { startTestServer, type TestServer } from '../parity/fixture.js';

const run = promisify(execFile);
const TARBALL = join(process.env.KILN_DATA_DIR ?? '/var/lib/kiln', 'cache/sources/hello_2.10.orig.tar.gz');

describe('a workspace over a real project (GNU hello)', { timeout: 600_000 }, () => {
  let base: string;
  let project: string;
  let t: TestServer;

  before(async () => {
    await access(TARBALL).catch(() => {
      throw new Error(`${TARBALL} is missing: run scripts/fetch-test-sources.sh (scripts/test.sh does)`);
    });
    base = await mkdtemp(join(tmpdir(), 'kiln-ws-project-'));
    await chmod(base, 0o755);
    const root = join(base, 'src');
    await mkdir(root);
    await run('tar', ['-xzf', TARBALL, '-C', root]);
    project = join(root, 'hello-2.10');
    const git = (...args: string[]) => run('git', ['-C', project, '-c', 'user.email=t@example.org', '-c', 'user.name=t', ...args]);
    await git('init', '-q');
    await git('add', '-A');
    await git('commit', '-qm', 'hello 2.10 as released');
    await run('chown', ['-R', '1000:1000', project]);
    t = await startTestServer({ KILN_WORKSPACE_ROOTS: root, KILN_WORKSPACES_DIR: join(base, 'workspaces') });
  });

  after(async () => {
    await t?.close();
    await rm(base, { recursive: true, force: true });
  });

  it('builds and tests in the sandbox; one approved change is exactly what git diff shows on the host', async () => {
    const kiln = t.client;
    const sb = await kiln.json<{ id: string }>('POST', '/v1/sandboxes', { pack: 'base', cpus: 2, memoryMib: 1024, workspace: { path: project } });
    const sh = (script: string, timeoutMs = 300_000) => kiln.sandboxes.exec(sb.id, { cmd: ['bash', '-c', script], cwd: '/workspace', timeoutMs });

    const step = (name: string, cmd: string) => `${cmd} > /tmp/${name}.log 2>&1 || { echo "${name} failed:"; tail -25 /tmp/${name}.log; exit 2; }`;
    // In a git checkout hello rebuilds its man page with help2man, which the base pack lacks: a
    // stand-in gives back the released page (same bytes, so no change).
    await kiln.sandboxes.writeFile(sb.id, '/tmp/help2man', '#!/bin/sh\nfor a; do out=$a; done\ncp /workspace/hello.1 "$out"\n', 0o755);
    const make = 'make HELP2MAN=/tmp/help2man';
    const build = await sh([step('configure', './configure --quiet'), step('make', make), step('check', `${make} check`), 'grep -E "^# (TOTAL|PASS|FAIL)" /tmp/check.log'].join('\n'));
    assert.equal(build.exitCode, 0, build.stdout + build.stderr);
    assert.match(build.stdout, /^# FAIL: +0$/m, build.stdout);

    const change = await sh(`sed -i "s/Hello, world!/Hello from a kiln workspace!/" src/hello.c && ${step('rebuild', make)} && ./hello`);
    assert.match(change.stdout, /^Hello from a kiln workspace!$/m, change.stdout + change.stderr);

    const { changes } = await kiln.json<{ changes: { path: string; status: string }[] }>('GET', `/v1/sandboxes/${sb.id}/changes`);
    const paths = changes.map((c) => c.path);
    assert.ok(paths.includes('src/hello.c'));
    assert.ok(paths.includes('hello') && paths.includes('config.status'), 'the build outputs are changes too (the project has no .gitignore)');
    assert.equal((await run('git', ['-c', 'safe.directory=*', '-C', project, 'status', '--porcelain'])).stdout, '', 'the host tree is untouched before approve');

    const diff = await kiln.request('GET', `/v1/sandboxes/${sb.id}/diff?path=src/hello.c`);
    const patch = await diff.text();
    assert.match(patch, /^-.*Hello, world!/m);
    assert.match(patch, /^\+.*Hello from a kiln workspace!/m);

    const r = await kiln.json<{ applied: string[] }>('POST', `/v1/sandboxes/${sb.id}/approve`, { paths: ['src/hello.c'] });
    assert.deepEqual(r.applied, ['src/hello.c']);
    const { stdout: status } = await run('git', ['-c', 'safe.directory=*', '-C', project, 'status', '--porcelain']);
    assert.equal(status, ' M src/hello.c\n', 'exactly one file changed on the host');
    const { stdout: hostDiff } = await run('git', ['-c', 'safe.directory=*', '-C', project, 'diff', '--no-color', '--no-ext-diff', '-U3', 'src/hello.c']);
    // The host's git diff and the review's diff of that path show the same hunks (git adds the
    // enclosing function's name after a hunk's range; the review does not).
    const hunks = (p: string) => p.slice(p.indexOf('\n@@')).replace(/^(@@ [^@]+ @@).*$/gm, '$1');
    assert.equal(hunks(hostDiff), hunks(patch));

    await kiln.request('DELETE', `/v1/sandboxes/${sb.id}?discard=true`);
  });
});
