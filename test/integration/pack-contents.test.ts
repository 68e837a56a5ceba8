/**
 * What the built-in packs contain, checked inside real sandboxes (namespace backend, the images
 * scripts/install.sh builds): the tools users reach for first, and GET /v1/packs saying so.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../../src/core/config.js';
import { startTestServer, type TestServer, withSandbox } from '../parity/fixture.js';

const run = promisify(execFile);

describe('built-in pack contents', { skip: process.getuid?.() === 0 ? undefined : 'needs root (namespace backend)', timeout: 10 * 60_000 }, () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer();
  });
  after(async () => {
    await t?.close();
  });

  const sh = async (pack: string, script: string, timeoutMs = 120_000) =>
    withSandbox(t.client, { pack }, async (id) => {
      const r = await t.client.sandboxes.exec(id, { cmd: ['bash', '-ec', script], cwd: '/workspace', timeoutMs });
      assert.equal(r.exitCode, 0, `${pack}: ${r.stdout}\n${r.stderr}`);
      return r.stdout;
    });

  it('python has pip, venv (with pip inside) and time zones', async () => {
    const out = await sh(
      'python',
      [
        'pip --version | cut -d" " -f1',
        'python3 -m venv /tmp/venv',
        '/tmp/venv/bin/python -m pip --version | cut -d" " -f1',
        'python3 -c \'from zoneinfo import ZoneInfo; from datetime import datetime; print(datetime(2026, 7, 1, 12, tzinfo=ZoneInfo("Europe/Berlin")).utcoffset())\'',
      ].join('\n'),
    );
    assert.equal(out, 'pip\npip\n2:00:00\n');
  });

  it('base has git, a C toolchain, make and the everyday tools', async () => {
    const out = await sh(
      'base',
      [
        'git init -q repo && cd repo && echo hi > f && git add f && git -c user.email=a@example.com -c user.name=a commit -qm first && git log --format=%s && cd ..',
        'printf "#include <stdio.h>\\nint main(void){puts(\\"compiled\\");return 0;}\\n" > a.c',
        'printf "a: a.c\\n\\tgcc -O2 -o a a.c\\n" > Makefile && make -s && ./a',
        'echo \'{"k":[1,2]}\' | jq -c .k',
        'sqlite3 :memory: "select 6*7;"',
        'zip -q z.zip a.c && unzip -l z.zip | grep -c a.c',
        'echo data | xz | xz -d',
        'printf "a\\n" > p1 && printf "b\\n" > p2 && ! diff -u p1 p2 > d.patch; patch -s p1 < d.patch && cat p1',
        'file -b a | cut -d, -f1',
        'for t in curl wget less vi nano g++; do command -v $t >/dev/null || echo "missing $t"; done',
      ].join('\n'),
    );
    assert.equal(out, 'first\ncompiled\n[1,2]\n42\n1\ndata\nb\nELF 64-bit LSB pie executable\n');
  });

  it('a command the pack lacks (exit 127) comes with a hint naming a pack that has it', async () => {
    await withSandbox(t.client, { pack: 'python' }, async (id) => {
      const r = await t.client.sandboxes.exec(id, { cmd: 'git --version' });
      assert.equal(r.exitCode, 127);
      assert.match(r.hint ?? '', /^git is not in pack python; pack base has it, or a custom pack can add it/);
      const ok = await t.client.sandboxes.exec(id, { cmd: 'exit 127' });
      assert.equal(ok.hint, undefined, 'no hint without a "not found"');
    });
    const run = await t.client.run({ pack: 'shell', cmd: 'jq --version' });
    assert.equal(run.exitCode, 127);
    assert.match(run.hint ?? '', /^jq is not in pack shell; pack base has it/);
  });

  it('a streamed exec or run (what the CLI uses) carries the hint in its result event, and kiln run prints it', async () => {
    const resultOf = async (events: AsyncIterable<{ type: string }>) => {
      let result: { type: string; exitCode?: number | null; hint?: string } | undefined;
      for await (const ev of events) if (ev.type === 'result') result = ev;
      return result;
    };
    await withSandbox(t.client, { pack: 'python' }, async (id) => {
      const streamed = await resultOf(t.client.sandboxes.execStream(id, { cmd: 'echo before; git --version' }));
      assert.equal(streamed?.exitCode, 127);
      assert.match(streamed?.hint ?? '', /^git is not in pack python; pack base has it/);
    });
    const oneShot = await resultOf(t.client.runStream({ pack: 'shell', cmd: 'jq --version' }));
    assert.match(oneShot?.hint ?? '', /^jq is not in pack shell; pack base has it/);
    const cli = await run(join(REPO_ROOT, 'bin/kiln'), ['run', 'shell', '-c', 'jq .'], { env: { ...process.env, KILN_URL: t.server.url, KILN_TOKEN: '' } }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(cli.code, 127);
    assert.match(cli.stderr, /kiln run: jq is not in pack shell; pack base has it/);
  });

  it("GET /v1/packs names each image's language version, tools and size", async () => {
    const packs = await t.client.packs();
    const want: Record<string, { version: RegExp; tools: string[] }> = {
      python: { version: /^Python 3\.\d+/, tools: ['python3', 'pip'] },
      node: { version: /^v\d+\./, tools: ['node', 'npm', 'npx'] },
      go: { version: /^go version go1\./, tools: ['go', 'gofmt'] },
      shell: { version: /^GNU bash/, tools: ['bash'] },
      base: { version: /^gcc /, tools: ['git', 'curl', 'wget', 'jq', 'make', 'gcc', 'zip', 'unzip', 'xz', 'sqlite3', 'patch', 'file', 'less', 'vi'] },
    };
    for (const [name, w] of Object.entries(want)) {
      const p = packs.find((x) => x.name === name);
      assert.ok(p?.imageReady, `${name} has no image: run kiln images build ${name}`);
      assert.match(p.languageVersion ?? '', w.version, name);
      for (const tool of w.tools) assert.ok(p.tools?.includes(tool), `${name} should list ${tool}: ${p.tools?.join(' ')}`);
      assert.ok((p.imageSizeBytes ?? 0) > 1e6, `${name} size ${p.imageSizeBytes}`);
      assert.equal(p.source, 'builtin');
    }
    // The small packs stay small: no compiler in python, node or go.
    for (const name of ['python', 'node', 'go', 'shell']) assert.ok(!packs.find((p) => p.name === name)!.tools!.includes('gcc'), `${name} has gcc`);
  });

  it('kiln packs ls shows the same; pack management without the admin token fails naming it', async () => {
    const env = { ...process.env, KILN_URL: t.server.url, KILN_ADMIN_TOKEN: '', KILN_TOKEN: '' };
    const ls = await run(join(REPO_ROOT, 'bin/kiln'), ['packs', 'ls'], { env });
    assert.match(ls.stdout, /^PACK\s+SOURCE\s+VERSION\s+LANGUAGE\s+SIZE\s+READY\s+TOOLS$/m);
    assert.match(ls.stdout, /^python\s+builtin\s+-\s+Python 3\.\d+\.\d+\s+[\d.]+ MB\s+yes\s+.*\bpip\b/m);
    const dir = await mkdtemp(join(tmpdir(), 'kiln-cli-packs-'));
    try {
      await writeFile(join(dir, 'mine.json'), JSON.stringify({ name: 'mine', base: 'python', packages: ['python3-requests'] }));
      await assert.rejects(
        run(join(REPO_ROOT, 'bin/kiln'), ['packs', 'create', join(dir, 'mine.json')], { env }),
        (e: { code: number; stderr: string }) => e.code === 1 && /ADMIN_REQUIRED: .*KILN_ADMIN_TOKEN/.test(e.stderr),
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
