/**
 * The unmodified @e2b/code-interpreter client against kiln's own E2B API, end to end: its default
 * template ("code-interpreter-v1", kiln's code-interpreter pack) through the control plane, then
 * runCode over the data plane (E2b-Sandbox-Port 49999) with state kept between runs, streamed
 * output, rich results (an HTML table, a PNG plot), an error with its traceback, and kill.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Sandbox } from '@e2b/code-interpreter';
import { startTestServer, type TestServer } from '../parity/fixture.js';

const ADMIN = 'e2b-ci-admin-token';

describe('@e2b/code-interpreter against kiln (real client, real sandbox)', { timeout: 300_000 }, () => {
  let ts: TestServer;
  let sbx: Sandbox;

  before(async () => {
    ts = await startTestServer({ KILN_TOKEN: ADMIN });
    const url = ts.server.url;
    sbx = await Sandbox.create({ apiKey: ADMIN, apiUrl: url, sandboxUrl: url, timeoutMs: 120_000 });
  });
  after(async () => {
    await sbx?.kill().catch(() => undefined);
    await ts?.close();
  });

  it('keeps state between runs, streams output, returns rich results and errors', async () => {
    const info = await sbx.getInfo();
    assert.equal(info.templateId, 'code-interpreter-v1');
    await sbx.runCode('x = 41\nimport math');
    const out: string[] = [];
    const r = await sbx.runCode('print("hello", flush=True)\nx + 1', { onStdout: (m) => void out.push(m.line) });
    assert.equal(r.text, '42');
    assert.deepEqual(r.logs.stdout, ['hello\n']);
    assert.deepEqual(out, ['hello\n']);
    const html = await sbx.runCode('import pandas as pd\npd.DataFrame({"a": [1, 2]})');
    assert.match(html.results[0]?.html ?? '', /<table/);
    const plot = await sbx.runCode('import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()');
    const png = Buffer.from(plot.results.find((x) => x.png)?.png ?? '', 'base64');
    assert.deepEqual([...png.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47], 'a PNG plot');
    const err = await sbx.runCode('1/0');
    assert.equal(err.error?.name, 'ZeroDivisionError');
    assert.match(err.error?.traceback ?? '', /ZeroDivisionError/);
    assert.equal(await sbx.kill(), true);
  });
});
