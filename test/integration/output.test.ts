/**
 * Output as users get it, through the real service on the namespace backend (real bubblewrap):
 * byte-exact on every path (buffered JSON, NDJSON, WebSocket, the CLI), base64 for binary output,
 * per-stream caps a request may raise up to the operator's maximum, truncation that keeps the tail,
 * and /v1/run with a command of its own and with ESM code.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import WebSocket from 'ws';
import { type ExecEvent, KilnApiError } from '../../sdk/src/index.js';
import { REPO_ROOT } from '../../src/core/config.js';
import { startTestServer, type TestServer } from '../parity/fixture.js';

const runFile = promisify(execFile);

/** Runs a program with `input` on its stdin and resolves with its stdout (rejects on a non-zero exit). */
function pipeThrough(file: string, args: string[], env: NodeJS.ProcessEnv, input: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env, stdio: ['pipe', 'pipe', 'inherit'] });
    const out: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`${file} exited ${code}`))));
    child.stdin.end(input);
  });
}
const MIB = 1024 * 1024;
/** What the test server allows a request to ask for (KILN_MAX_OUTPUT_BYTES). */
const OPERATOR_MAX = 8 * MIB;
const JAPANESE = 'print("日本語"*100000)';
const ALL_BYTES = 'import sys; sys.stdout.buffer.write(bytes(range(256))*1000)';
const allBytes = Buffer.from(Array.from({ length: 256000 }, (_, i) => i % 256));

describe('byte-exact output, caps and /v1/run commands', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 240_000 }, () => {
  let t: TestServer;
  let id: string;
  before(async () => {
    t = await startTestServer({ KILN_SOCKET: '', KILN_BACKEND: 'namespace', KILN_MAX_OUTPUT_BYTES: String(OPERATOR_MAX) });
    id = (await t.client.sandboxes.create({ pack: 'python' })).id;
  });
  after(async () => {
    await t.client.sandboxes.delete(id).catch(() => undefined);
    await t.close();
  });

  const collect = async (events: AsyncIterable<ExecEvent>): Promise<ExecEvent[]> => {
    const all: ExecEvent[] = [];
    for await (const ev of events) all.push(ev);
    return all;
  };
  const joined = (events: ExecEvent[], stream: 'stdout' | 'stderr'): string => events.map((e) => (e.type === stream ? e.data : '')).join('');
  const joinedBytes = (events: ExecEvent[], stream: 'stdout' | 'stderr'): Buffer => Buffer.concat(events.map((e) => (e.type === stream ? Buffer.from(e.data, 'base64') : Buffer.alloc(0))));

  describe('byte-exact output (issue #14, item 3)', () => {
    it('streams multi-byte characters split across chunks exactly (NDJSON)', async () => {
      const events = await collect(t.client.sandboxes.execStream(id, { cmd: ['python3', '-c', JAPANESE] }));
      const out = joined(events, 'stdout');
      assert.equal(out.split('\uFFFD').length - 1, 0, 'no replacement characters');
      assert.equal(out, `${'日本語'.repeat(100000)}\n`);
      assert.ok(events.filter((e) => e.type === 'stdout').length > 1, 'the output came in several chunks');
    });

    it('streams a one-shot run exactly (the path the CLI takes)', async () => {
      const events = await collect(t.client.runStream({ pack: 'python', code: JAPANESE }));
      assert.equal(joined(events, 'stdout'), `${'日本語'.repeat(100000)}\n`);
    });

    it('sends multi-byte characters over the WebSocket exactly', async () => {
      const ws = new WebSocket(t.client.execSocketUrl(id));
      const got: string[] = [];
      await new Promise<void>((resolve, reject) => {
        ws.on('open', () => ws.send(JSON.stringify({ type: 'start', cmd: ['python3', '-c', JAPANESE] })));
        ws.on('message', (raw) => {
          const m = JSON.parse(String(raw)) as { type: string; data?: string };
          if (m.type === 'stdout') got.push(m.data!);
          if (m.type === 'error') reject(new Error(String(raw)));
        });
        ws.on('close', () => resolve());
        ws.on('error', reject);
      });
      assert.equal(got.join(''), `${'日本語'.repeat(100000)}\n`);
    });

    it('returns binary stdout (bytes 0..255) exactly as base64, buffered and streamed', async () => {
      const r = await t.client.sandboxes.exec(id, { cmd: ['python3', '-c', ALL_BYTES], encoding: 'base64' });
      assert.equal(r.encoding, 'base64');
      assert.ok(Buffer.from(r.stdout, 'base64').equals(allBytes), 'buffered bytes differ');
      const events = await collect(t.client.sandboxes.execStream(id, { cmd: ['python3', '-c', ALL_BYTES], encoding: 'base64' }));
      assert.ok(joinedBytes(events, 'stdout').equals(allBytes), 'streamed bytes differ');
      assert.ok(events.every((e) => e.type !== 'stdout' || e.encoding === 'base64'));
      const run = await t.client.run({ pack: 'python', code: ALL_BYTES, encoding: 'base64' });
      assert.ok(Buffer.from(run.stdout, 'base64').equals(allBytes), '/v1/run bytes differ');
    });

    it('takes binary stdin as base64, and refuses stdin that is not base64 naming the field', async () => {
      const echo = ['python3', '-c', 'import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())'];
      const r = await t.client.sandboxes.exec(id, { cmd: echo, stdin: allBytes.toString('base64'), stdinEncoding: 'base64', encoding: 'base64' });
      assert.ok(Buffer.from(r.stdout, 'base64').equals(allBytes), 'exec stdin bytes differ');
      const run = await t.client.run({ pack: 'python', cmd: echo, stdin: allBytes.toString('base64'), stdinEncoding: 'base64', encoding: 'base64' });
      assert.ok(Buffer.from(run.stdout, 'base64').equals(allBytes), '/v1/run stdin bytes differ');
      const e = await t.client.sandboxes.exec(id, { cmd: echo, stdin: 'not base64!', stdinEncoding: 'base64' }).catch((x: unknown) => x);
      assert.ok(e instanceof KilnApiError && e.status === 400 && /"stdin" is not valid base64/.test(e.message), String(e));
    });

    it('the CLI passes the bytes unchanged both ways, text and binary', async () => {
      const env = { ...process.env, KILN_URL: t.server.url };
      const kiln = join(REPO_ROOT, 'bin/kiln');
      const text = await runFile(kiln, ['run', 'python', '-c', JAPANESE], { env, maxBuffer: 16 * MIB });
      assert.equal(text.stdout, `${'日本語'.repeat(100000)}\n`);
      const bin = await runFile(kiln, ['run', 'python', '-c', ALL_BYTES], { env, encoding: 'buffer', maxBuffer: 16 * MIB });
      assert.ok(bin.stdout.equals(allBytes), `CLI stdout: ${bin.stdout.length} bytes`);
      const echoed = await pipeThrough(kiln, ['run', 'python', '--stdin', '-c', 'import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())'], env, allBytes);
      assert.ok(echoed.equals(allBytes), `CLI stdin → stdout: ${echoed.length} bytes`);
    });

    it('refuses an unknown encoding naming the allowed values', async () => {
      const e = await t.client.sandboxes.exec(id, { cmd: 'true', encoding: 'hex' as 'base64' }).catch((x: unknown) => x);
      assert.ok(e instanceof KilnApiError && e.status === 400, String(e));
      assert.match(e.message, /encoding/);
    });
  });

  describe('output caps (issue #14, item 4)', () => {
    it('honours a request for 5 MiB of output', async () => {
      const r = await t.client.sandboxes.exec(id, { cmd: ['python3', '-c', `import sys; sys.stdout.write("x" * ${5 * MIB})`], maxOutputBytes: 5 * MIB });
      assert.equal(r.stdout.length, 5 * MIB);
      assert.equal(r.outputTruncated, false);
      assert.equal(r.stdoutTruncated, false);
    });

    it('refuses a cap above the operator maximum with a 400 naming field, value and limit', async () => {
      const asked = OPERATOR_MAX + 1;
      const e = await t.client.sandboxes.exec(id, { cmd: 'true', maxOutputBytes: asked }).catch((x: unknown) => x);
      assert.ok(e instanceof KilnApiError && e.status === 400, String(e));
      assert.equal(e.code, 'INVALID_REQUEST');
      assert.match(e.message, /maxOutputBytes/);
      assert.match(e.message, new RegExp(String(asked)));
      assert.match(e.message, new RegExp(String(OPERATOR_MAX)));
      assert.match(e.message, /KILN_MAX_OUTPUT_BYTES/);
      const run = await t.client.run({ pack: 'python', code: 'print(1)', maxOutputBytes: asked }).catch((x: unknown) => x);
      assert.ok(run instanceof KilnApiError && run.status === 400 && /maxOutputBytes/.test(run.message), String(run));
    });

    const LONG_THEN_FAIL = 'import sys\nfor i in range(40000): print("line %06d " % i + "y" * 40)\nprint("LAST LINE")\nsys.stdout.flush()\n1/0\n';

    it('keeps stderr (a traceback) after 2 MiB of stdout, and the tail of stdout', async () => {
      const r = await t.client.run({ pack: 'python', code: LONG_THEN_FAIL });
      assert.equal(r.exitCode, 1);
      assert.match(r.stderr, /Traceback[\s\S]*ZeroDivisionError: division by zero\n$/);
      assert.equal(r.stderrTruncated, false);
      assert.equal(r.stdoutTruncated, true);
      assert.equal(r.outputTruncated, true);
      assert.equal(Buffer.byteLength(r.stdout), MIB, 'head and tail together fill the cap');
      assert.ok(r.stdout.startsWith('line 000000 '), 'the head survives');
      assert.ok(r.stdout.endsWith('LAST LINE\n'), 'the tail survives');
      const total = 40000 * 53 + 'LAST LINE\n'.length;
      assert.equal(r.stdoutDroppedBytes, total - MIB);
    });

    it('streams the head, a truncated event, then the tail', async () => {
      const events = await collect(t.client.runStream({ pack: 'python', code: LONG_THEN_FAIL }));
      const marker = events.findIndex((e) => e.type === 'truncated');
      assert.ok(marker > 0, 'a truncated event');
      const ev = events[marker] as Extract<ExecEvent, { type: 'truncated' }>;
      assert.equal(ev.stream, 'stdout');
      const before = joined(events.slice(0, marker), 'stdout');
      const afterMarker = joined(events.slice(marker), 'stdout');
      assert.ok(before.startsWith('line 000000 '));
      assert.ok(afterMarker.endsWith('LAST LINE\n'));
      assert.equal(Buffer.byteLength(before) + Buffer.byteLength(afterMarker) + ev.droppedBytes, 40000 * 53 + 'LAST LINE\n'.length);
      assert.match(joined(events, 'stderr'), /ZeroDivisionError/);
      const result = events.at(-1)!;
      assert.ok(result.type === 'result' && result.stdoutTruncated && result.stdoutDroppedBytes === ev.droppedBytes);
    });

    it('cuts UTF-8 output at character boundaries when it truncates', async () => {
      const r = await t.client.sandboxes.exec(id, { cmd: ['python3', '-c', JAPANESE], maxOutputBytes: 100_000 });
      assert.equal(r.stdoutTruncated, true);
      assert.ok(!r.stdout.includes('\uFFFD'), 'no replacement character where the middle was cut');
      assert.ok(r.stdout.endsWith('語\n'));
    });
  });

  describe('/v1/run commands (issue #14, item 5)', () => {
    const testFile = 'import unittest\n\nclass T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(1 + 1, 2)\n';

    it('runs a command after placing the files: python -m unittest', async () => {
      const r = await t.client.run({ pack: 'python', files: [{ path: 'test_add.py', content: testFile }], cmd: ['python3', '-m', 'unittest', '-v'] });
      assert.equal(r.exitCode, 0, r.stderr);
      assert.match(r.stderr, /test_add .* ok/);
      assert.match(r.stderr, /Ran 1 test/);
      const failing = await t.client.run({ pack: 'python', files: [{ path: 'test_bad.py', content: testFile.replace('2)', '3)') }], cmd: 'python3 -m unittest' });
      assert.equal(failing.exitCode, 1);
      assert.match(failing.stderr, /FAILED \(failures=1\)/);
    });

    it('runs node --test on placed files', async () => {
      const r = await t.client.run({
        pack: 'node',
        files: [{ path: 'sum.test.js', content: "const test = require('node:test');\nconst assert = require('node:assert');\ntest('sums', () => assert.equal(1 + 2, 3));\n" }],
        cmd: ['node', '--test'],
      });
      assert.equal(r.exitCode, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /# pass 1/);
    });

    it('runs node code with import/export as an ES module', async () => {
      const r = await t.client.run({ pack: 'node', code: "import { basename } from 'node:path';\nexport const x = 1;\nconsole.log(basename('/a/b.txt'), typeof require);\n" });
      assert.equal(r.exitCode, 0, r.stderr);
      assert.equal(r.stdout, 'b.txt undefined\n');
      const cjs = await t.client.run({ pack: 'node', code: "const { basename } = require('node:path');\nconsole.log(basename('/a/c.txt'));\n" });
      assert.equal(cjs.stdout, 'c.txt\n', cjs.stderr);
    });

    it('refuses "args" together with "cmd", naming both', async () => {
      const e = await t.client.run({ pack: 'python', code: 'print(1)', cmd: ['python3', 'main.py'], args: ['x'] }).catch((x: unknown) => x);
      assert.ok(e instanceof KilnApiError && e.status === 400, String(e));
      assert.match(e.message, /"args"[\s\S]*"cmd"/);
    });
  });
});
