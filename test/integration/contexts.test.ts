/** Stateful code contexts through kiln's API (real sandboxes of the code-interpreter pack). */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTestServer, type TestServer } from '../parity/fixture.js';

type Ev = Record<string, unknown> & { type: string };

describe('code contexts', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 300_000 }, () => {
  let t: TestServer;
  let id: string;
  let py: string;
  const api = async (method: string, path: string, body?: unknown): Promise<Response> =>
    fetch(`${t.server.url}${path}`, { method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const run = async (ctx: string, code: string, extra: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<Ev[]> => {
    const evs: Ev[] = [];
    for await (const e of t.client.sandboxes.runCode(id, ctx, { code, ...extra })) evs.push(e as Ev);
    return evs;
  };
  const main = (evs: Ev[]): Record<string, unknown> | undefined => evs.find((e) => e.type === 'result' && e.isMainResult)?.data as Record<string, unknown> | undefined;
  const out = (evs: Ev[], s = 'stdout'): string =>
    evs
      .filter((e) => e.type === s)
      .map((e) => e.text)
      .join('');

  before(async () => {
    t = await startTestServer();
    id = (await t.client.sandboxes.create({ pack: 'code-interpreter', memoryMib: 1024 })).id;
    py = (await t.client.sandboxes.createContext(id, { language: 'python' })).id;
  });
  after(async () => {
    await t.client.sandboxes.delete(id).catch(() => undefined);
    await t.close();
  });

  it('keeps variables and imports between runs; the last expression is the main result', async () => {
    const a = await run(py, 'import math\nx = 41');
    assert.equal(main(a), undefined);
    assert.equal(a.at(-1)?.type, 'end');
    const b = await run(py, 'x + 1');
    assert.equal(main(b)?.['text/plain'], '42');
    const c = await run(py, 'math.floor(math.pi * 100)');
    assert.equal(main(c)?.['text/plain'], '314');
    assert.equal(b[0]?.type, 'started');
    assert.ok(Number(c[0]?.executionCount) > Number(b[0]?.executionCount));
  });

  it('streams stdout and stderr while the code runs', async () => {
    const r = await api('POST', `/v1/sandboxes/${id}/contexts/${py}/run`, { code: 'import sys, time\nprint("first", flush=True)\ntime.sleep(0.8)\nprint("err", file=sys.stderr)\nprint("second")' });
    const reader = r.body!.getReader();
    const t0 = performance.now();
    let text = '';
    let firstAt = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
      if (!firstAt && text.includes('first')) firstAt = performance.now() - t0;
    }
    const total = performance.now() - t0;
    assert.ok(total - firstAt >= 500, `first line came ${total - firstAt} ms before the end`);
    const evs = text
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l) as Ev);
    assert.equal(out(evs), 'first\nsecond\n');
    assert.equal(out(evs, 'stderr'), 'err\n');
  });

  it('large output arrives whole, across many chunks of the protocol', async () => {
    const evs = await run(py, 'for i in range(200):\n    print(str(i) * 5000)\nprint("é" * 100000)');
    const text = out(evs);
    assert.equal(text.length, [...Array(200).keys()].reduce((n, i) => n + String(i).length * 5000 + 1, 0) + 100_001);
    assert.ok(text.endsWith(`${'é'.repeat(100_000)}\n`));
  });

  it('reports an exception with its name, value and traceback', async () => {
    const evs = await run(py, 'def f():\n    return 1 / 0\nf()');
    const ex = evs.find((e) => e.type === 'exception')!;
    assert.equal(ex.name, 'ZeroDivisionError');
    assert.equal(ex.value, 'division by zero');
    assert.match(String(ex.traceback), /f\(\)/);
    assert.match(String(ex.traceback), /return 1 \/ 0/);
    const syn = await run(py, 'def (:');
    assert.equal(syn.find((e) => e.type === 'exception')?.name, 'SyntaxError');
  });

  it('returns a matplotlib figure as a PNG and a DataFrame as HTML', async () => {
    const fig = await run(py, 'import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()');
    const png = fig.find((e) => e.type === 'result' && (e.data as Record<string, string>)['image/png']);
    assert.ok(png, JSON.stringify(fig).slice(0, 500));
    const bytes = Buffer.from((png.data as Record<string, string>)['image/png']!, 'base64');
    assert.deepEqual([...bytes.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
    assert.match((png.data as Record<string, string>)['text/plain']!, /Figure size/);
    const df = await run(py, 'import pandas as pd\npd.DataFrame({"a": [1, 2], "b": ["x", "y"]})');
    assert.match(String(main(df)?.['text/html']), /<table/);
    assert.match(String(main(df)?.['text/plain']), /a\s+b/);
  });

  it('applies env for one run only; a timeout interrupts and the state survives', async () => {
    const e = await run(py, 'import os\nos.environ.get("KILN_X")', { env: { KILN_X: 'yes' } });
    assert.equal(main(e)?.['text/plain'], "'yes'");
    const e2 = await run(py, 'os.environ.get("KILN_X") is None');
    assert.equal(main(e2)?.['text/plain'], 'True');
    const slow = await run(py, 'import time\ny = 5\ntime.sleep(30)', { timeoutMs: 1000 });
    const ex = slow.find((x) => x.type === 'exception');
    assert.equal(ex?.name, 'TimeoutError');
    assert.equal(slow.at(-1)?.timedOut, true);
    assert.equal(slow.filter((x) => x.type === 'exception').length, 1);
    assert.equal(main(await run(py, 'x + y'))?.['text/plain'], '46');
  });

  it('JavaScript contexts keep their state too', async () => {
    const r = await api('POST', `/v1/sandboxes/${id}/contexts`, { language: 'js' });
    assert.equal(r.status, 201);
    const js = (await r.json()) as { id: string; language: string };
    assert.equal(js.language, 'javascript');
    const a = await run(js.id, 'const x = 41; let o = { a: [1, 2] }; console.log("hi")');
    assert.equal(out(a), 'hi\n');
    assert.equal(main(await run(js.id, 'x + 1'))?.['text/plain'], '42');
    assert.equal(main(await run(js.id, 'o'))?.['text/plain'], '{ a: [ 1, 2 ] }');
    assert.equal(main(await run(js.id, 'require("node:os").platform()'))?.['text/plain'], "'linux'");
    const err = (await run(js.id, 'null.f')).find((e) => e.type === 'exception');
    assert.equal(err?.name, 'TypeError');
  });

  it('restart clears the state; delete removes the context', async () => {
    const r = await api('POST', `/v1/sandboxes/${id}/contexts`, {});
    const c = ((await r.json()) as { id: string }).id;
    await run(c, 'z = 1');
    const rs = await api('POST', `/v1/sandboxes/${id}/contexts/${c}/restart`);
    assert.equal(rs.status, 200);
    const after = await run(c, 'z');
    assert.equal(after.find((e) => e.type === 'exception')?.name, 'NameError');
    assert.ok((await t.client.sandboxes.listContexts(id)).some((x) => x.id === c));
    assert.equal((await t.client.sandboxes.getContext(id, c)).language, 'python');
    assert.equal((await api('DELETE', `/v1/sandboxes/${id}/contexts/${c}`)).status, 204);
    const gone = await api('POST', `/v1/sandboxes/${id}/contexts/${c}/run`, { code: '1' });
    assert.equal(gone.status, 404);
    assert.equal(((await gone.json()) as { code: string }).code, 'CONTEXT_NOT_FOUND');
    const ps = await t.client.sandboxes.exec(id, { cmd: 'ps -eo args | grep -c "[I]nteractiveShell" || true' });
    assert.equal(ps.stdout.trim(), '1', 'only the first python context is left running');
  });

  it('a pack without IPython answers 400 EXEC_FAILED naming the code-interpreter pack; an unknown language 400', async () => {
    const plain = await t.client.sandboxes.create({ pack: 'python' });
    try {
      const r = await api('POST', `/v1/sandboxes/${plain.id}/contexts`, { language: 'python' });
      assert.equal(r.status, 400);
      const body = (await r.json()) as { code: string; message: string };
      assert.equal(body.code, 'EXEC_FAILED');
      assert.match(body.message, /IPython is not installed.*code-interpreter/);
    } finally {
      await t.client.sandboxes.delete(plain.id);
    }
    const bad = await api('POST', `/v1/sandboxes/${id}/contexts`, { language: 'cobol' });
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { code: string }).code, 'UNSUPPORTED_OPTION');
  });
});
