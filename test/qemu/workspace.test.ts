/**
 * A workspace on QEMU (src/workspace/images.ts, agent/workspace_vm_linux.go): the project as a
 * squashfs snapshot drive, the upper ext4 image as another; the guest mounts the overlay on
 * /workspace, .git read-only unless asked, ENOSPC at the size limit, `ws.scan` lists the changes
 * from the guest, a second VM on the same upper sees them, and the project never changes.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { SandboxSpec } from '../../src/core/backend.js';
import { resolveImage } from '../../src/images/index.js';
import { mountImageUpper, prepareImageWorkspace, unmountImageUpper } from '../../src/workspace/images.js';
import { releaseWorkspace } from '../../src/workspace/mounts.js';
import { AGENT_PATH, type QemuFixture, setup, sh, skipReason } from './fixture.js';

const skip = (await skipReason()) ?? (process.getuid?.() === 0 ? undefined : 'needs root');
const READY = { readyTimeoutMs: 90_000 };
const GUEST_UID = 1000;
const run = promisify(execFile);

async function tree(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    out.push(e.isFile() ? `${r}=${(await readFile(join(dir, r))).toString('base64')}` : r);
    if (e.isDirectory()) out.push(...(await tree(dir, r)));
  }
  return out.sort();
}

describe('qemu workspace', { skip, timeout: 300_000 }, () => {
  let f: QemuFixture;
  let tmp: string;
  before(async () => {
    f = await setup();
    tmp = await mkdtemp(join(tmpdir(), 'kiln-qws-'));
  });
  after(async () => {
    await f?.cleanup();
    await rm(tmp, { recursive: true, force: true });
  });

  it('overlay from drives: edits in the upper, scanned in the guest, kept for the next VM; the project unchanged', async () => {
    const proj = join(tmp, 'proj');
    await mkdir(join(proj, 'deldir'), { recursive: true });
    await writeFile(join(proj, 'a.txt'), 'hello\n');
    await writeFile(join(proj, 'del.txt'), 'bye\n');
    await writeFile(join(proj, 'deldir', 'x'), 'x\n');
    const git = (...args: string[]) => execFileSync('git', ['-C', proj, '-c', 'user.email=t@example.com', '-c', 'user.name=t', ...args]);
    git('init', '-q');
    git('add', '-A');
    git('commit', '-qm', 'initial');
    await chmod(proj, 0o755);
    const before = await tree(proj);
    const dataDir = join(tmp, 'data');
    const img = await resolveImage('base', process.env.KILN_DATA_DIR ?? '/var/lib/kiln');
    const pack = { name: img.name, hash: img.hash, imagePath: img.imagePath, env: img.env };
    const ws = await prepareImageWorkspace(dataDir, { id: 'qws1', projectDir: proj, guestUid: GUEST_UID, sizeMib: 24 });
    const spec = (id: string, gitWritable: boolean): SandboxSpec => ({
      id,
      pack,
      cpus: 1,
      memoryMib: 256,
      diskMib: 64,
      workspace: { kind: 'images', lowerImage: ws.lowerImage, upperImage: ws.upperImage, gitWritable },
    });
    const backend = f.backend({ templates: false, spares: 0 });
    let scanned = '';
    try {
      const sb = await backend.create(spec('qws-a', false), READY);
      try {
        const edit = await sh(
          sb,
          `set -e; cd /workspace
          test "$(cat a.txt)" = hello
          test "$(stat -c %u a.txt)" = ${GUEST_UID}
          echo more >> a.txt; echo new > new.txt; rm del.txt; rm -r deldir; ln -s a.txt link
          printf x > "$(printf 'bad\\377name')"
          git status --porcelain | grep -q new.txt
          test "$(git log --oneline | wc -l)" = 1
          if git -c user.email=t@example.com -c user.name=t commit -qam change 2>/tmp/err; then echo COMMITTED; fi
          grep -q 'Read-only file system' /tmp/err
          dd if=/dev/zero of=big bs=1M count=64 2>/tmp/dd || true; grep -q 'No space left' /tmp/dd; rm -f big`,
        );
        assert.equal(edit.exitCode, 0, `${edit.stdout}\n${edit.stderr}`);
        assert.doesNotMatch(edit.stdout, /COMMITTED/);

        const chunks: Buffer[] = [];
        const res = await sb.agent.workspaceScan((c) => {
          chunks.push(Buffer.from(c));
        });
        scanned = Buffer.concat(chunks).toString();
        const lines = scanned.split('\n').filter(Boolean);
        assert.equal(res.bytes, Buffer.concat(chunks).length);
        const kinds = Object.fromEntries(lines.map((l) => JSON.parse(l)).map((e) => [Buffer.from(e.path, 'base64').toString('latin1'), e.kind]));
        assert.deepEqual(kinds, { 'a.txt': 'file', 'bad\xffname': 'file', 'del.txt': 'whiteout', deldir: 'whiteout', link: 'symlink', 'new.txt': 'file' });
      } finally {
        await sb.destroy();
      }

      // A review on the host while no VM runs: the image mounted there shows the same scan, and
      // no VM may boot on it meanwhile.
      const host = { dataDir, agentPath: AGENT_PATH };
      const mounted = await mountImageUpper(host, 'qws1', GUEST_UID);
      const { stdout } = await run(AGENT_PATH, ['host', 'ws-scan', mounted.upperDir]);
      assert.deepEqual(stdout, scanned);
      await assert.rejects(backend.create(spec('qws-x', false), READY), /mounted on the host/);
      await unmountImageUpper(dataDir, 'qws1');

      // The next VM on the same upper: the changes are there; with gitWritable a commit works.
      const sb2 = await backend.create(spec('qws-b', true), READY);
      try {
        const r = await sh(sb2, 'cd /workspace && cat new.txt && test ! -e del.txt && git -c user.email=t@example.com -c user.name=t commit -qam change && git log --oneline | wc -l');
        assert.equal(r.exitCode, 0, r.stderr);
        assert.equal(r.stdout, 'new\n2\n');
      } finally {
        await sb2.destroy();
      }
      assert.deepEqual(await tree(proj), before, 'the project directory is unchanged');
    } finally {
      await backend.close();
      await releaseWorkspace(dataDir, 'qws1');
    }
    assert.equal(existsSync(ws.dir), false);
    assert.ok(!(await run('losetup', ['-a'])).stdout.includes(tmp), 'a loop device is left');
  });

  it('a workspace VM kept across a restart of the service: reattached, its writes flushed to the upper at its destroy', async () => {
    const proj = join(tmp, 'kept');
    await mkdir(proj, { recursive: true });
    await writeFile(join(proj, 'a.txt'), 'hello\n');
    await chmod(proj, 0o755);
    const dataDir = join(tmp, 'data-kept');
    const img = await resolveImage('base', process.env.KILN_DATA_DIR ?? '/var/lib/kiln');
    const ws = await prepareImageWorkspace(dataDir, { id: 'qwsk', projectDir: proj, guestUid: GUEST_UID, sizeMib: 24 });
    const first = f.backend({ templates: false, spares: 0 });
    const next = f.backend({ templates: false, spares: 0 });
    try {
      const sb = await first.create(
        {
          id: 'qws-k',
          pack: { name: img.name, hash: img.hash, imagePath: img.imagePath, env: img.env },
          cpus: 1,
          memoryMib: 256,
          diskMib: 64,
          workspace: { kind: 'images', lowerImage: ws.lowerImage, upperImage: ws.upperImage, gitWritable: false },
        },
        READY,
      );
      assert.equal((await sh(sb, 'echo one > /workspace/one.txt')).exitCode, 0);
      await sb.detach!();
      await first.close();
      const back = await next.reattach!();
      assert.deepEqual(
        back.alive.map((s) => s.id),
        ['qws-k'],
      );
      const kept = back.alive[0]!;
      const r = await sh(kept, 'cat /workspace/one.txt; echo two > /workspace/two.txt');
      assert.equal(r.stdout, 'one\n');
      await kept.destroy();
      const mounted = await mountImageUpper({ dataDir, agentPath: AGENT_PATH }, 'qwsk', GUEST_UID);
      try {
        assert.equal(await readFile(join(mounted.upperDir, 'two.txt'), 'utf8'), 'two\n', 'the write after the reattach reached the upper image');
      } finally {
        await unmountImageUpper(dataDir, 'qwsk');
      }
    } finally {
      await next.close();
      await first.close();
      await releaseWorkspace(dataDir, 'qwsk');
    }
  });
});
