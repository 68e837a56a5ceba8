/**
 * The ordinary commands of each language work in its pack as they come (#15): go test (pure Go
 * and std packages that would use cgo), go build, node --test, python3 -m unittest and pip install
 * of a local wheel. Through the real service, real bwrap, the images scripts/install.sh builds;
 * no network in the sandbox.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTestServer, type TestServer, withSandbox } from '../parity/fixture.js';

describe('pack commands', { skip: process.getuid?.() === 0 ? undefined : 'needs root (namespace backend)', timeout: 10 * 60_000 }, () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer();
  });
  after(async () => {
    await t?.close();
  });

  /** Writes the files, runs the script in /workspace/p and returns stdout; a non-zero exit fails with both outputs. */
  const project = async (pack: string, files: Record<string, string>, script: string) =>
    withSandbox(t.client, { pack, cpus: 1 }, async (id) => {
      for (const [path, content] of Object.entries(files)) await t.client.sandboxes.writeFile(id, `/workspace/p/${path}`, content);
      const r = await t.client.sandboxes.exec(id, { cmd: ['bash', '-ec', script], cwd: '/workspace/p', timeoutMs: 240_000 });
      assert.equal(r.exitCode, 0, `${pack}: exit ${r.exitCode}\n${r.stdout}\n${r.stderr}`);
      return r.stdout;
    });

  it('go: go test and go build on a module, go test on std packages that import cgo-using ones', async () => {
    const out = await project(
      'go',
      {
        'go.mod': 'module example.com/calc\n\ngo 1.19\n',
        'calc.go': 'package calc\n\n// Add adds.\nfunc Add(a, b int) int { return a + b }\n',
        'calc_test.go': 'package calc\n\nimport "testing"\n\nfunc TestAdd(t *testing.T) {\n\tif Add(2, 3) != 5 {\n\t\tt.Fatal("2+3")\n\t}\n}\n',
        'cmd/hello/main.go':
          'package main\n\nimport (\n\t"encoding/json"\n\t"fmt"\n\t"net"\n\t"os/user"\n\n\t"example.com/calc"\n)\n\nfunc main() {\n\tb, _ := json.Marshal(calc.Add(40, 2))\n\t_, err := user.Current()\n\tfmt.Println(string(b), net.ParseIP("::1") != nil, err == nil)\n}\n',
      },
      ['go env CGO_ENABLED', 'go test ./... | sed "s/\\t[0-9.]*s$//"', 'go build -o hello ./cmd/hello && ./hello', 'go vet ./...', 'go test -short encoding/json os/user net/url | cut -f1,2'].join(
        '\n',
      ),
    );
    assert.equal(out, '0\nok  \texample.com/calc\n?   \texample.com/calc/cmd/hello\t[no test files]\n42 true true\nok  \tencoding/json\nok  \tos/user\nok  \tnet/url\n');
  });

  it('node: node --test runs a test suite', async () => {
    const out = await project(
      'node',
      {
        'package.json': '{"name":"calc","version":"1.0.0","type":"module"}\n',
        'calc.js': 'export const add = (a, b) => a + b;\n',
        'test/calc.test.js':
          "import { test } from 'node:test';\nimport assert from 'node:assert/strict';\nimport { add } from '../calc.js';\ntest('adds', () => assert.equal(add(2, 3), 5));\ntest('adds negatives', () => assert.equal(add(-2, -3), -5));\n",
      },
      'node --test 2>&1 | grep -E "^# (pass|fail)"',
    );
    assert.equal(out, '# pass 2\n# fail 0\n');
  });

  it("python: python3 -m unittest, and pip install of a wheel built here (a user install: the image is Debian's), then imported and its script run", async () => {
    const out = await project(
      'python',
      {
        'calc/__init__.py': 'def add(a, b):\n    return a + b\n\n\ndef main():\n    print(add(1, 2))\n',
        'tests/__init__.py': '',
        'tests/test_calc.py': 'import unittest\nfrom calc import add\n\n\nclass T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n',
        'setup.py': 'from setuptools import setup\nsetup(name="calc", version="1.0", packages=["calc"], entry_points={"console_scripts": ["calc-add=calc:main"]})\n',
      },
      [
        'python3 -m unittest 2>&1 | tail -1',
        'python3 -m pip wheel -q --no-deps --no-build-isolation -w /tmp/dist . 2>&1',
        'ls /tmp/dist',
        'cd /tmp && pip install -q /tmp/dist/calc-1.0-py3-none-any.whl 2>&1',
        'python3 -c "import calc; print(calc.add(40, 2), calc.__file__.startswith(\'/workspace/.local/\'))"',
        'calc-add',
      ].join('\n'),
    );
    assert.equal(out, 'OK\ncalc-1.0-py3-none-any.whl\n42 True\n3\n', 'the script pip installs is on PATH');
  });
});
