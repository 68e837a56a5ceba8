/**
 * What an agent does on its first day, against the real service (real HTTP, namespace backend, real
 * images): make a custom python pack with python3-requests and run a script importing it; run
 * `npm --version` and `node --test` in the node pack; `go test ./...` on an uploaded module in the go
 * pack. Uses only the SDK: POST /v1/packs, sandboxes, file uploads and exec.
 */
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import type { KilnClient, PackBuildEvent } from '../../sdk/src/index.js';
import { type PackServer, startPackServer, type TestServer, withSandbox } from '../parity/fixture.js';

const ADMIN = 'agent-script-admin';
const PACK = 'test-py-requests';

describe('agent-style script: custom pack, npm and node --test, go test', { skip: process.getuid?.() === 0 ? undefined : 'needs root (namespace backend, mmdebstrap)', timeout: 20 * 60_000 }, () => {
  let t: TestServer;
  let kiln: KilnClient;
  let customDir: string;
  let packs: PackServer | undefined;
  before(async () => {
    packs = await startPackServer(ADMIN);
    ({ t, admin: kiln, customDir } = packs);
  });
  after(async () => {
    // The pack's images live in the shared data dir: remove them with the pack.
    await packs?.close([PACK]);
  });

  it('builds a python pack with python3-requests, streaming progress, and runs a script importing it', async () => {
    const events: PackBuildEvent[] = [];
    for await (const e of kiln.createPackStream({ name: PACK, base: 'python', packages: ['python3-requests'], description: 'Python with requests' })) events.push(e);
    const last = events.at(-1)!;
    assert.equal(last.type, 'result', `the build failed: ${JSON.stringify(last)}`);
    assert.equal(events[0]!.type, 'accepted');
    const phases = new Set(events.flatMap((e) => (e.type === 'progress' ? [e.phase] : [])));
    // Built now, or found in the cache by its content hash from an earlier run: both are progress.
    assert.ok(phases.has('done') || phases.has('cached'), `phases seen: ${[...phases].join(', ')}`);
    if (last.type === 'result') {
      assert.equal(last.pack.source, 'custom');
      assert.equal(last.pack.base, 'python');
      assert.equal(last.pack.version, 1);
      assert.equal(last.pack.imageReady, true);
      assert.match(last.pack.packageVersions?.['python3-requests'] ?? '', /^2\./);
    }
    assert.deepEqual(await readdir(customDir), [`${PACK}.json`]);

    await withSandbox(t.client, { pack: PACK }, async (id) => {
      await t.client.sandboxes.writeFile(
        id,
        '/workspace/fetch.py',
        ['import requests', 'r = requests.Request("GET", "https://example.com/search", params={"q": "kiln"}).prepare()', 'print(requests.__version__.split(".")[0], r.url)'].join('\n'),
      );
      const r = await t.client.sandboxes.exec(id, { cmd: ['python3', 'fetch.py'], cwd: '/workspace' });
      assert.equal(r.exitCode, 0, r.stderr);
      assert.equal(r.stdout, '2 https://example.com/search?q=kiln\n');
    });
  });

  it('node: npm --version and node --test on uploaded files', async () => {
    await withSandbox(t.client, { pack: 'node' }, async (id) => {
      const npm = await t.client.sandboxes.exec(id, { cmd: ['npm', '--version'] });
      assert.equal(npm.exitCode, 0, npm.stderr);
      assert.match(npm.stdout, /^\d+\.\d+\.\d+\n$/);

      await t.client.sandboxes.writeFile(id, '/workspace/app/sum.js', 'exports.sum = (a, b) => a + b;\n');
      await t.client.sandboxes.writeFile(
        id,
        '/workspace/app/test/sum.test.js',
        [
          "const test = require('node:test');",
          "const assert = require('node:assert');",
          "const { sum } = require('../sum.js');",
          "test('adds', () => assert.strictEqual(sum(2, 3), 5));",
          "test('adds negatives', () => assert.strictEqual(sum(-2, -3), -5));",
        ].join('\n'),
      );
      const r = await t.client.sandboxes.exec(id, { cmd: ['node', '--test'], cwd: '/workspace/app', timeoutMs: 60_000 });
      assert.equal(r.exitCode, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /# pass 2/);
      assert.match(r.stdout, /# fail 0/);
    });
  });

  it('go: go test ./... on an uploaded module, including std packages that use cgo by default', async () => {
    await withSandbox(t.client, { pack: 'go' }, async (id) => {
      await t.client.sandboxes.writeFile(id, '/workspace/mod/go.mod', 'module example.com/mod\n\ngo 1.19\n');
      // net and os/user build with cgo unless CGO_ENABLED=0; the pack has no C compiler.
      await t.client.sandboxes.writeFile(
        id,
        '/workspace/mod/host/host.go',
        [
          'package host',
          'import ("net"; "os/user")',
          'func Split(hp string) (string, error) { h, _, err := net.SplitHostPort(hp); return h, err }',
          'func Me() string { u, err := user.Current(); if err != nil { return "?" }; return u.Username }',
        ].join('\n'),
      );
      await t.client.sandboxes.writeFile(
        id,
        '/workspace/mod/host/host_test.go',
        [
          'package host',
          'import "testing"',
          'func TestSplit(t *testing.T) { if h, err := Split("example.com:80"); err != nil || h != "example.com" { t.Fatal(h, err) } }',
          'func TestMe(t *testing.T) { if Me() == "" { t.Fatal("no user") } }',
        ].join('\n'),
      );
      await t.client.sandboxes.writeFile(id, '/workspace/mod/calc/calc.go', 'package calc\n\nfunc Double(n int) int { return 2 * n }\n');
      await t.client.sandboxes.writeFile(
        id,
        '/workspace/mod/calc/calc_test.go',
        'package calc\n\nimport "testing"\n\nfunc TestDouble(t *testing.T) {\n\tif Double(21) != 42 {\n\t\tt.Fatal("no")\n\t}\n}\n',
      );
      const r = await t.client.sandboxes.exec(id, { cmd: ['go', 'test', './...'], cwd: '/workspace/mod', timeoutMs: 300_000 });
      assert.equal(r.exitCode, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /^ok\s+example\.com\/mod\/calc/m);
      assert.match(r.stdout, /^ok\s+example\.com\/mod\/host/m);
    });
  });
});
