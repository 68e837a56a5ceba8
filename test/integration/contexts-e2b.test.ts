/**
 * E2B's code interpreter wire format through e2b-code-interpreter.ts, driven by the real
 * @e2b/code-interpreter client (pinned in package.json). A minimal control plane here stands in
 * for the E2B one (POST /v2/sandboxes, DELETE /sandboxes/:id) so that the plugin is tested alone;
 * the data plane's app routes every request to the plugin by its E2b-Sandbox-Id header.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { NotFoundError, Sandbox, TimeoutError } from '@e2b/code-interpreter';
import Fastify, { type FastifyInstance } from 'fastify';
import { codeInterpreterRoutes } from '../../src/server/routes/e2b-code-interpreter.js';
import { startTestServer, type TestServer } from '../parity/fixture.js';

describe('E2B code interpreter API (real @e2b/code-interpreter client)', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 300_000 }, () => {
  let t: TestServer;
  let control: FastifyInstance;
  let data: FastifyInstance;
  let sbx: Sandbox;
  let opts: { apiKey: string; apiUrl: string; sandboxUrl: string };

  before(async () => {
    t = await startTestServer();
    const svc = t.server.svc;
    control = Fastify();
    control.post<{ Body: { templateID: string } }>('/v2/sandboxes', async (req, reply) => {
      const sb = await svc.manager.create({ pack: req.body.templateID, memoryMib: 1024 });
      return reply.code(201).send({ sandboxID: sb.id, templateID: req.body.templateID, clientID: 'kiln', envdVersion: '0.4.0' });
    });
    control.delete<{ Params: { id: string } }>('/sandboxes/:id', async (req, reply) => {
      await svc.manager.delete(req.params.id, 'deleted by request');
      return reply.code(204).send();
    });
    // One listener for every port of every sandbox, as E2B_SANDBOX_URL makes it: routes told apart
    // by the E2b-Sandbox-Port header (a Fastify constraint), a stand-in envd /health beside ours.
    const byPort = {
      name: 'e2bPort',
      storage() {
        const m = new Map<string, unknown>();
        return { get: (v: string) => (m.get(v) ?? null) as never, set: (v: string, s: unknown) => void m.set(v, s) };
      },
      deriveConstraint: (req: { headers: Record<string, unknown> }) => String(req.headers['e2b-sandbox-port'] ?? ''),
      mustMatchWhenDerived: true,
      validate: (v: unknown) => {
        if (typeof v !== 'string') throw new Error('e2bPort is a port number as a string');
      },
    };
    data = Fastify({ constraints: { e2bPort: byPort } });
    data.get('/health', { constraints: { e2bPort: '49983' } }, async (_req, reply) => reply.code(204).send());
    await data.register(codeInterpreterRoutes, { svc, sandboxOf: (req) => svc.manager.get(String(req.headers['e2b-sandbox-id'])), constraints: { e2bPort: '49999' } });
    const apiUrl = await control.listen({ host: '127.0.0.1', port: 0 });
    const sandboxUrl = await data.listen({ host: '127.0.0.1', port: 0 });
    opts = { apiKey: 'e2b_kiln_test', apiUrl, sandboxUrl };
    sbx = await Sandbox.create('code-interpreter', opts);
  });
  after(async () => {
    await sbx?.kill().catch(() => undefined);
    await control?.close();
    await data?.close();
    await t.close();
  });

  it('keeps state between runs: x = 41 then x + 1 gives 42', async () => {
    const a = await sbx.runCode('x = 41');
    assert.equal(a.text, undefined);
    assert.equal(a.error, undefined);
    const b = await sbx.runCode('x + 1');
    assert.equal(b.text, '42');
    assert.equal(b.results[0]?.isMainResult, true);
    assert.equal(typeof b.executionCount, 'number');
    assert.ok(b.executionCount! > a.executionCount!);
  });

  it('streams stdout and stderr to the callbacks; env vars apply to one run', async () => {
    const out: string[] = [];
    const err: string[] = [];
    const e = await sbx.runCode('import os, sys\nprint("hello")\nprint("oops", file=sys.stderr)\nos.environ["GREETING"]', {
      envs: { GREETING: 'hi' },
      onStdout: (m) => out.push(m.line),
      onStderr: (m) => err.push(m.line),
    });
    assert.deepEqual(out, ['hello\n']);
    assert.deepEqual(err, ['oops\n']);
    assert.deepEqual(e.logs, { stdout: ['hello\n'], stderr: ['oops\n'] });
    assert.equal(e.text, 'hi');
    assert.equal((await sbx.runCode('"GREETING" in os.environ')).text, 'False');
  });

  it('returns a matplotlib PNG and a DataFrame as HTML', async () => {
    const plot = await sbx.runCode('import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [3, 1, 2])\nplt.title("kiln")\nplt.show()');
    const png = plot.results.find((r) => r.png);
    assert.ok(png, JSON.stringify(plot.results).slice(0, 300));
    assert.equal(png.isMainResult, false);
    assert.deepEqual([...Buffer.from(png.png!, 'base64').subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
    assert.ok(png.formats().includes('png'));
    const df = await sbx.runCode('import pandas as pd\npd.DataFrame({"a": [1, 2]})');
    assert.match(df.results[0]?.html ?? '', /<table/);
    assert.ok(df.results[0]?.formats().includes('html'));
  });

  it('a client that gives up (timeoutMs) interrupts the run; the context keeps its state and answers at once', async () => {
    await assert.rejects(sbx.runCode('import time\nkept = 7\ntime.sleep(60)', { timeoutMs: 1000 }), TimeoutError);
    const t0 = performance.now();
    const e = await sbx.runCode('kept * 6');
    assert.equal(e.text, '42');
    assert.ok(performance.now() - t0 < 10_000, `the next run waited ${Math.round(performance.now() - t0)} ms`);
  });

  it("reports an exception as the client's ExecutionError", async () => {
    const errors: string[] = [];
    const e = await sbx.runCode('undefined_name + 1', { onError: (x) => errors.push(x.name) });
    assert.equal(e.error?.name, 'NameError');
    assert.match(e.error?.value ?? '', /undefined_name/);
    assert.match(e.error?.traceback ?? '', /undefined_name \+ 1/);
    assert.deepEqual(errors, ['NameError']);
  });

  it('contexts: create (JavaScript), list, run, restart, remove', async () => {
    const js = await sbx.createCodeContext({ language: 'js' });
    assert.equal(js.language, 'javascript');
    assert.equal(typeof js.id, 'string');
    assert.equal((await sbx.runCode('const n = 20; n * 2 + 2', { context: js })).text, '42');
    assert.equal((await sbx.runCode('n + 1', { context: js })).text, '21');
    assert.equal((await sbx.runCode('1 + 1', { language: 'javascript' })).text, '2');
    const listed = await sbx.listCodeContexts();
    assert.ok(listed.some((c) => c.id === js.id && c.language === 'javascript'));
    assert.ok(
      listed.some((c) => c.language === 'python'),
      'the default python context is listed',
    );
    await sbx.restartCodeContext(js);
    assert.equal((await sbx.runCode('typeof n', { context: js })).text, 'undefined');
    await sbx.removeCodeContext(js.id);
    assert.ok(!(await sbx.listCodeContexts()).some((c) => c.id === js.id));
    // A short requestTimeoutMs: the client leaves its request timer running when it throws on a
    // status (its own leak, @e2b/code-interpreter 2.8.0), which would hold the test process 60 s.
    await assert.rejects(sbx.runCode('1', { context: js, requestTimeoutMs: 2000 }), NotFoundError);
    await assert.rejects(sbx.removeCodeContext(js.id), NotFoundError);
  });

  it('a python context of its own does not share the default one', async () => {
    const c = await sbx.createCodeContext({ language: 'python', cwd: '/tmp' });
    assert.equal(c.cwd, '/tmp');
    const e = await sbx.runCode('import os\n(os.getcwd(), "x" in dir())', { context: c });
    assert.equal(e.text, "('/tmp', False)");
  });

  it("answers in E2B's exact wire format", async () => {
    const post = (body: unknown) =>
      fetch(`${opts.sandboxUrl}/execute`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '49999' },
        body: JSON.stringify(body),
      });
    const lines = (await (await post({ code: 'print("é")\nx + 1' })).text()).split('\n');
    assert.equal(lines.at(-1), '');
    assert.equal(lines.at(-2), '{"type": "end_of_execution"}');
    assert.match(lines[0]!, /^\{"type": "number_of_executions", "execution_count": \d+\}$/);
    assert.match(lines[1]!, /^\{"type": "stdout", "text": "\\u00e9\\n", "timestamp": "[^"]+"\}$/);
    assert.equal(lines[2], '{"type": "result", "text": "42", "extra": {}, "is_main_result": true}');
    const both = await post({ code: '1', language: 'python', context_id: 'x' });
    assert.equal(both.status, 400);
    assert.equal(await both.text(), 'Only one of context_id or language can be provided');
    const missing = await post({ code: '1', context_id: 'nope' });
    assert.equal(missing.status, 404);
    assert.equal(await missing.text(), 'Context nope not found');
    assert.equal((await post({})).status, 422);
    const health = (port: string) => fetch(`${opts.sandboxUrl}/health`, { headers: { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': port } });
    assert.equal((await health('49999')).status, 200);
    assert.equal((await health('49983')).status, 204);
  });
});
