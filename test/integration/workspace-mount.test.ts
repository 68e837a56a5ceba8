/**
 * A workspace's data path on the namespace backend (src/workspace/mounts.ts, agent --workspace-*):
 * /workspace is the host project through an overlay; what the sandbox writes lands in the upper
 * image (ws-scan shows it) and never in the project; .git is read-only unless asked; the size limit
 * is ENOSPC inside; the sandbox cannot reach the project or the upper outside the overlay; a
 * release leaves no mount, loop device or directory.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { createNamespaceBackend } from '../../src/backends/namespace/namespace-backend.js';
import type { BackendSandbox, SandboxSpec } from '../../src/core/backend.js';
import { REPO_ROOT } from '../../src/core/config.js';
import { resolveImage } from '../../src/images/index.js';
import { attachWorkspace, prepareWorkspace, releaseWorkspace, scanWorkspaces } from '../../src/workspace/mounts.js';

const run = promisify(execFile);
const AGENT = resolve(REPO_ROOT, 'build/kiln-agent');
const OWNER = 1000;
const WS_UID = 270_000;
const BAD_NAME = Buffer.from('bad\xffname', 'latin1');

async function sh(sb: BackendSandbox, script: string): Promise<{ code: number | null; out: string; err: string }> {
  let out = '';
  let err = '';
  const r = await sb.agent.exec(
    { argv: ['/bin/sh', '-c', script], cwd: '/workspace', timeoutMs: 30_000 },
    {
      onStdout: (c) => {
        out += c.toString();
      },
      onStderr: (c) => {
        err += c.toString();
      },
    },
  ).result;
  return { code: r.exitCode, out, err };
}

/** path → type, mode, owner and content hash of every entry: the project must not change. */
async function snapshot(dir: string, rel = ''): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of await readdir(join(dir, rel))) {
    const r = rel ? `${rel}/${name}` : name;
    const st = await lstat(join(dir, r));
    let what = `${st.mode.toString(8)} ${st.uid}:${st.gid}`;
    if (st.isFile())
      what += ` ${createHash('sha256')
        .update(await readFile(join(dir, r)))
        .digest('hex')}`;
    if (st.isSymbolicLink()) what += ` -> ${await readlink(join(dir, r))}`;
    out[r] = what;
    if (st.isDirectory()) Object.assign(out, await snapshot(dir, r));
  }
  return out;
}

async function wsScan(upperDir: string): Promise<Map<string, { kind: string; mode: number; opaque?: boolean; target?: string }>> {
  const { stdout } = await run(AGENT, ['host', 'ws-scan', upperDir]);
  const entries = new Map();
  for (const line of stdout.split('\n').filter(Boolean)) {
    const e = JSON.parse(line);
    entries.set(Buffer.from(e.path, 'base64').toString('latin1'), { ...e, target: e.target && Buffer.from(e.target, 'base64').toString() });
  }
  return entries;
}

async function mountsUnder(dir: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((p) => p.startsWith(dir));
}

describe('workspace mounts (namespace backend)', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 180_000 }, () => {
  it('overlay over the project: writes land in the upper, .git read-only, ENOSPC, no way out, clean release', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'kiln-ws-'));
    await chmod(tmp, 0o755);
    const proj = join(tmp, 'proj');
    const dataDir = join(tmp, 'data');
    await mkdir(dataDir, { mode: 0o755 });
    await mkdir(join(proj, 'deldir', 'sub'), { recursive: true });
    await mkdir(join(proj, 'opq'));
    await writeFile(join(proj, 'a.txt'), 'hello\n');
    await writeFile(join(proj, 'del.txt'), 'bye\n');
    await writeFile(join(proj, 'deldir', 'x'), 'x\n');
    await writeFile(join(proj, 'deldir', 'sub', 'y'), 'y\n');
    await writeFile(join(proj, 'opq', 'old'), 'old\n');
    await writeFile(join(proj, 'run.sh'), 'echo hi\n', { mode: 0o644 });
    const git = (...args: string[]) => execFileSync('git', ['-C', proj, '-c', 'user.email=t@example.com', '-c', 'user.name=t', ...args]);
    git('init', '-q');
    git('add', '-A');
    git('commit', '-qm', 'initial');
    execFileSync('chown', ['-R', `${OWNER}:${OWNER}`, proj]);
    // A file of another owner: not mapped, it shows as nobody (the documented limit).
    await writeFile(join(proj, 'foreign.txt'), 'theirs\n', { mode: 0o644 });
    execFileSync('chown', ['1001:1001', join(proj, 'foreign.txt')]);
    const before = await snapshot(proj);

    const img = await resolveImage('base', process.env.KILN_DATA_DIR ?? '/var/lib/kiln');
    const cgroupName = `kiln-test-ws-${tmp.split('-').pop()}`;
    const backend = createNamespaceBackend({ runDir: join(tmp, 'run'), agentPath: AGENT, maxPids: 256, cgroupName, uidBase: 262_000, uidCount: 2 });
    const host = { dataDir, agentPath: AGENT };
    const spec = (id: string, paths: { lowerDir: string; mntDir: string }, gitWritable: boolean): SandboxSpec => ({
      id,
      pack: { name: img.name, hash: img.hash, imagePath: img.imagePath, env: img.env },
      cpus: 1,
      memoryMib: 256,
      diskMib: 64,
      workspace: { kind: 'mount', lowerDir: paths.lowerDir, mntDir: paths.mntDir, gitWritable, hostUid: WS_UID },
    });
    try {
      const paths = await prepareWorkspace(host, { id: 'ws1', projectDir: proj, hostUid: WS_UID, sizeMib: 24 });
      // Only the sandbox's uid may reach the mounts: another host user is stopped at the workspace's directory.
      const other = await run('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', 'cat', join(paths.lowerDir, 'a.txt')]).then(
        () => 'read',
        (e: { stderr: string }) => e.stderr,
      );
      assert.match(other, /Permission denied/);
      const sb = await backend.create(spec('wsbox', paths, false), { readyTimeoutMs: 30_000 });
      try {
        const edit = await sh(
          sb,
          `set -e
          test "$(cat a.txt)" = hello
          test "$(stat -c %u deldir/x)" = 0
          echo more >> a.txt
          echo new > new.txt
          rm del.txt
          rm -r deldir
          rm -rf opq && mkdir opq && echo n > opq/fresh
          ln -s a.txt link
          chmod 755 run.sh
          echo s > 'with space.txt'
          printf x > "$(printf 'bad\\377name')"`,
        );
        assert.equal(edit.code, 0, edit.err);
        const foreign = await sh(sb, 'cat foreign.txt; stat -c %u foreign.txt; echo x >> foreign.txt && echo WROTE');
        assert.equal(foreign.out, 'theirs\n65534\n', foreign.err);
        assert.match(foreign.err, /Permission denied/);

        const g = await sh(sb, 'git status --porcelain && git log --oneline | wc -l');
        assert.equal(g.code, 0, g.err);
        assert.match(g.out, /new\.txt/);
        assert.match(g.out, /^1$/m, 'git log reads the history');
        const commit = await sh(sb, 'git -c user.email=t@example.com -c user.name=t commit -qam change');
        assert.notEqual(commit.code, 0, 'a commit must fail on the read-only .git');
        assert.match(commit.err, /Read-only file system/);

        const full = await sh(sb, 'dd if=/dev/zero of=big bs=1M count=64 2>&1; echo "rc=$?"; rm -f big');
        assert.match(full.out, /No space left on device/);
        assert.match(full.out, /rc=1/);

        // Neither the project nor the upper is reachable outside the overlay.
        const esc = await sh(
          sb,
          `for p in ${proj} ${dataDir} ${tmp} /.kiln/ws-lower /.kiln/ws /.kiln /workspace/../.kiln/ws; do test -e "$p" && echo "REACHABLE $p"; done
          ln -s ${proj}/a.txt /tmp/hostlink; cat /tmp/hostlink 2>/dev/null && echo "REACHABLE symlink"
          ls /proc/1/root/.kiln 2>/dev/null && echo "REACHABLE /proc/1/root"
          cat /proc/self/mountinfo`,
        );
        assert.doesNotMatch(esc.out, /REACHABLE/);
        assert.ok(!esc.out.includes(tmp), `mountinfo names a host path:\n${esc.out}`);
        assert.match(esc.out, / \/workspace .* overlay /, 'the workspace overlay is mounted');
      } finally {
        await sb.destroy();
      }

      assert.deepEqual(await snapshot(proj), before, 'the project directory is unchanged');
      const scan = await wsScan(paths.upperDir);
      assert.equal(scan.get('a.txt')?.kind, 'file');
      assert.equal(scan.get('new.txt')?.kind, 'file');
      assert.equal(scan.get('del.txt')?.kind, 'whiteout');
      assert.equal(scan.get('deldir')?.kind, 'whiteout');
      assert.equal(scan.get('opq')?.kind, 'dir');
      assert.equal(scan.get('opq')?.opaque, true);
      assert.equal(scan.get('opq/fresh')?.kind, 'file');
      assert.deepEqual([scan.get('link')?.kind, scan.get('link')?.target], ['symlink', 'a.txt']);
      assert.equal(scan.get('run.sh')?.mode, 0o755);
      assert.equal(scan.get('with space.txt')?.kind, 'file');
      assert.equal(scan.get(BAD_NAME.toString('latin1'))?.kind, 'file');
      assert.equal(scan.has('big'), false);
      assert.equal(scan.has('.git'), false, 'nothing was written into .git');

      // A restart: the mounts are gone, attach makes them again and the changes are still there.
      await run('umount', [paths.lowerDir]);
      await run('umount', [paths.mntDir]);
      assert.deepEqual(
        (await scanWorkspaces(dataDir)).map((w) => [w.id, w.hasImage, w.lowerMounted, w.mntMounted]),
        [['ws1', true, false, false]],
      );
      await attachWorkspace(host, { id: 'ws1', projectDir: proj, hostUid: WS_UID });
      assert.deepEqual(
        (await scanWorkspaces(dataDir)).map((w) => [w.id, w.lowerMounted, w.mntMounted]),
        [['ws1', true, true]],
      );

      // gitWritable: the commit goes into the overlay's .git, the project's stays as it was.
      const sb2 = await backend.create(spec('wsbox2', paths, true), { readyTimeoutMs: 30_000 });
      try {
        const r = await sh(sb2, 'test "$(cat a.txt)" = "$(printf "hello\\nmore")" && git -c user.email=t@example.com -c user.name=t commit -qam change && git log --oneline | wc -l');
        assert.equal(r.code, 0, r.err);
        assert.match(r.out, /^2$/m);
      } finally {
        await sb2.destroy();
      }
      assert.deepEqual(await snapshot(proj), before, 'the project directory is unchanged');

      await releaseWorkspace(dataDir, 'ws1');
      await releaseWorkspace(dataDir, 'ws1'); // idempotent
      assert.deepEqual(await mountsUnder(dataDir), []);
      assert.equal(existsSync(paths.dir), false);
      const loops = (await run('losetup', ['-a'])).stdout;
      assert.ok(!loops.includes(tmp), `a loop device is left: ${loops}`);
      assert.deepEqual(await scanWorkspaces(dataDir), []);
    } finally {
      await backend.close().catch(() => undefined);
      await releaseWorkspace(dataDir, 'ws1').catch(() => undefined);
      await rm(tmp, { recursive: true, force: true });
    }
  });

  it('a prepare that fails half way (the idmapped bind) leaves no mount, loop device or directory', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'kiln-ws-fail-'));
    const wsRoot = join(tmp, 'workspaces');
    try {
      await mkdir(join(tmp, 'proj'));
      // The image is made and mounted; only the lower fails.
      const agentPath = join(tmp, 'agent');
      await writeFile(agentPath, `#!/bin/sh\n[ "$2" = idmap-bind ] && { echo "no idmap here" >&2; exit 1; }\nexec ${AGENT} "$@"\n`, { mode: 0o755 });
      const err = await prepareWorkspace({ dataDir: wsRoot, agentPath }, { id: 'wsf', projectDir: join(tmp, 'proj'), hostUid: WS_UID, sizeMib: 16 }).then(
        () => undefined,
        (e: Error) => e,
      );
      assert.match(err?.message ?? '', /cannot prepare workspace wsf \(ws\.idmapLower\): .*no idmap here/s);
      assert.deepEqual(await mountsUnder(tmp), []);
      assert.ok(!(await run('losetup', ['-a'])).stdout.includes(tmp));
      assert.deepEqual(await readdir(wsRoot), []);
    } finally {
      await releaseWorkspace(wsRoot, 'wsf').catch(() => undefined);
      await rm(tmp, { recursive: true, force: true });
    }
  });
});
