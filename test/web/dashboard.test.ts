/**
 * The dashboard end to end: real Chromium, a real kiln server (real HTTP, namespace backend, real
 * pack images), every call going through the page. One python sandbox is created through the UI and
 * used by the run, terminal and upload flows, then deleted through the UI.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import type { Browser, Page } from 'playwright-core';
import { startTestServer, type TestServer } from '../parity/fixture.js';
import { tarOf } from '../parity/tar.js';
import { zipOf } from '../parity/zip.js';
import { ensureDashboardBuilt, launchBrowser, screenshot, skipReason, watchPageErrors } from './harness.js';

const skip = skipReason();

describe('dashboard (Chromium against a real server)', { skip }, () => {
  let srv: TestServer;
  let browser: Browser;
  let page: Page;
  let pageErrors: string[];
  let sandboxId = '';
  let tmp = '';

  before(async () => {
    ensureDashboardBuilt();
    tmp = await mkdtemp(join(tmpdir(), 'kiln-web-'));
    srv = await startTestServer();
    browser = await launchBrowser();
    page = await browser.newPage({ viewport: { width: 1360, height: 820 } });
    pageErrors = watchPageErrors(page);
    await page.goto(`${srv.server.url}/#/sandboxes`);
  });

  after(async () => {
    try {
      // Whatever a failed step left behind.
      for (const sb of await srv.client.sandboxes.list().catch(() => [])) await srv.client.sandboxes.delete(sb.id).catch(() => undefined);
    } finally {
      await browser?.close().catch(() => undefined);
      await srv?.close();
      if (tmp) await rm(tmp, { recursive: true, force: true });
    }
  });

  it('shows the API error as stated when a create is refused', async () => {
    await page.fill('input[name=memoryMib]', '1');
    await page.click('form.create button[type=submit]');
    const text = await page.locator('form.create .error').textContent({ timeout: 15_000 });
    assert.match(text ?? '', /^[A-Z_]+: \S/);
    await page.fill('input[name=memoryMib]', '');
  });

  it('creates a python sandbox and lists it with its state, age and readiness', async () => {
    await page.selectOption('form.create select[name=pack]', 'python');
    await page.click('form.create button[type=submit]');
    await page.locator('form.create [role=status]').waitFor({ timeout: 60_000 });
    const row = page.locator('tr[data-sandbox]');
    await row.first().waitFor();
    sandboxId = (await row.first().getAttribute('data-sandbox'))!;
    const listed = await srv.client.sandboxes.list();
    assert.deepEqual(
      listed.map((s) => s.id),
      [sandboxId],
    );
    const cells = await row.first().locator('td').allTextContents();
    assert.equal(cells[1], 'python');
    assert.equal(cells[2], 'namespace');
    assert.match(cells[3]!, /^ready/);
    assert.match(cells[4]!, /^\d+s$/);
    assert.match(cells[5]!, /\d+(\.\d+)? m?s/);
    await screenshot(page, 'sandboxes');
  });

  it('runs a two-file program in that sandbox and streams its output before the result', async (t) => {
    if (!sandboxId) return t.skip('no sandbox: the create step failed');
    await page.click(`tr[data-sandbox="${sandboxId}"] a:text-is("Run")`);
    await page.locator('.file-tab .file-name:text-is("helper.py")').waitFor();
    assert.equal(await page.inputValue('select[name=target]'), sandboxId);
    // Edit helper.py through CodeMirror: one line, so no autoindent or completion gets in the way.
    await page.click('.file-tab .file-name:text-is("helper.py")');
    await page.click('.editor .cm-content');
    await page.keyboard.press('ControlOrMeta+a');
    await page.keyboard.type('def answer(): return 40 + 2');
    await page.keyboard.press('Escape');
    assert.equal(await page.inputValue('select[name=entrypoint]'), 'main.py');

    await page.click('button.run');
    // main.py prints "thinking...", sleeps a second, then prints answer(): the first line must be
    // on screen while the run is still going.
    await page.waitForFunction(() => document.querySelector('[data-testid=run-output]')?.textContent?.includes('thinking...') && !document.querySelector('[data-testid=run-result]'), undefined, {
      timeout: 30_000,
    });
    await page.locator('[data-testid=run-result]').waitFor({ timeout: 30_000 });
    const out = await page.locator('[data-testid=run-output] .stdout').textContent();
    assert.equal(out, 'thinking...\n42\n');
    assert.equal(await page.locator('[data-testid=exit-code]').textContent(), '0');
    const stats = await page.locator('.result-stats').textContent();
    assert.match(stats ?? '', /duration[\d.]+ m?s/);
    assert.match(stats ?? '', /peak memory[\d.]+ (B|KiB|MiB)/);
    assert.match(stats ?? '', /timed outno/);
    assert.match(stats ?? '', /OOMno/);
    // The files really are in the sandbox.
    const helper = new TextDecoder().decode(await srv.client.sandboxes.readFile(sandboxId, '/workspace/helper.py'));
    assert.equal(helper, 'def answer(): return 40 + 2');
    await screenshot(page, 'run');
  });

  it('runs the same project one-shot, with stdin, a file added, renamed and removed', async (t) => {
    if (!sandboxId) return t.skip('no sandbox: the create step failed');
    await page.selectOption('select[name=target]', '');
    await page.click('button.file-add');
    await page.fill('input.tab-input', 'notes.txt');
    await page.keyboard.press('Enter');
    await page.click('button[aria-label="Rename notes.txt"]');
    await page.fill('input.tab-input', 'data.txt');
    await page.keyboard.press('Enter');
    await page.locator('.file-tab .file-name:text-is("data.txt")').waitFor();
    await page.click('button[aria-label="Remove data.txt"]');
    assert.deepEqual(await page.locator('.file-tab .file-name').allTextContents(), ['main.py', 'helper.py']);

    await page.click('.file-tab .file-name:text-is("main.py")');
    await page.click('.editor .cm-content');
    await page.keyboard.press('ControlOrMeta+End');
    await page.keyboard.type('print("got " + input())');
    await page.fill('textarea[name=stdin]', 'hello\n');
    await page.click('button.run');
    await page.locator('[data-testid=run-result]').waitFor({ timeout: 60_000 });
    assert.equal(await page.locator('[data-testid=run-output] .stdout').textContent(), 'thinking...\n42\ngot hello\n');
    assert.match((await page.locator('.result-stats').textContent()) ?? '', /sandbox create[\d.]+ m?s/);
    // One-shot sandboxes are gone afterwards; ours is still the only one.
    assert.deepEqual(
      (await srv.client.sandboxes.list()).map((s) => s.id),
      [sandboxId],
    );
  });

  it('shows stderr and a failing exit code', async (t) => {
    if (!sandboxId) return t.skip('no sandbox: the create step failed');
    await page.click('.file-tab .file-name:text-is("main.py")');
    await page.click('.editor .cm-content');
    await page.keyboard.press('ControlOrMeta+a');
    await page.keyboard.type('import sys; sys.stderr.write("bad\\n"); sys.exit(3)');
    await page.click('button.run');
    await page.locator('[data-testid=run-result]').waitFor({ timeout: 60_000 });
    assert.equal(await page.locator('[data-testid=exit-code]').textContent(), '3');
    assert.equal(await page.locator('[data-testid=run-output] .stderr').textContent(), 'bad\n');
    assert.equal(await page.locator('[data-testid=run-result]').getAttribute('class'), 'result bad');
  });

  it('uploads a tar.gz project into the sandbox and runs its entrypoint', async (t) => {
    if (!sandboxId) return t.skip('no sandbox: the create step failed');
    const archive = join(tmp, 'project.tar.gz');
    await writeFile(
      archive,
      gzipSync(
        tarOf([
          { name: 'app.py', body: 'from pkg.calc import value\nprint("project says", value())\n' },
          { name: 'pkg/__init__.py', body: '' },
          { name: 'pkg/calc.py', body: 'def value():\n    return 6 * 7\n' },
        ]),
      ),
    );
    await page.selectOption('select[name=target]', sandboxId);
    await page.click('[role=radio]:text-is("Upload archive")');
    await page.setInputFiles('input[name=archive]', archive);
    await page.fill('input[name=archiveEntrypoint]', 'app.py');
    await page.fill('textarea[name=stdin]', '');
    await page.click('button.run');
    await page.locator('[data-testid=run-result]').waitFor({ timeout: 60_000 });
    assert.equal(await page.locator('[data-testid=run-output] .stdout').textContent(), 'project says 42\n');
    assert.match((await page.locator('[data-testid=run-output] .status').allTextContents()).join(''), /unpacked 3 files/);
    assert.equal(await page.locator('[data-testid=exit-code]').textContent(), '0');
    const listing = await srv.client.sandboxes.listDir(sandboxId, '/workspace/pkg');
    assert.deepEqual(listing.map((e) => e.name).sort(), ['__init__.py', 'calc.py']);
    await screenshot(page, 'run-archive');

    // A zip goes the same way: the agent tells the format from its first bytes.
    const zip = join(tmp, 'project.zip');
    await writeFile(zip, zipOf([{ name: 'zipped.py', body: 'print("from a zip")\n' }]));
    await page.setInputFiles('input[name=archive]', zip);
    await page.fill('input[name=archiveEntrypoint]', 'zipped.py');
    await page.click('button.run');
    await page.locator('[data-testid=run-output] .stdout', { hasText: 'from a zip' }).waitFor({ timeout: 60_000 });
    assert.match((await page.locator('[data-testid=run-output] .status').allTextContents()).join(''), /unpacked 1 files/);
  });

  it('opens a terminal in the sandbox, runs echo hi and follows resizes', async (t) => {
    if (!sandboxId) return t.skip('no sandbox: the create step failed');
    await page.click('a.tab[href="#/sandboxes"]');
    await page.click(`tr[data-sandbox="${sandboxId}"] a:text-is("Terminal")`);
    await page.click('button:text-is("Connect")');
    await page.waitForFunction(() => document.querySelector('[data-testid=terminal-status]')?.textContent === 'connected', undefined, { timeout: 30_000 });
    await page.click('[data-testid=terminal]');
    await page.keyboard.type('echo hi\n');
    await waitForTerminalLine(page, (l) => l === 'hi');

    await page.keyboard.type('stty size\n');
    const before = await waitForTerminalLine(page, (l) => /^\d+ \d+$/.test(l));
    await page.setViewportSize({ width: 900, height: 600 });
    await page.waitForTimeout(300);
    await page.keyboard.type('clear; stty size\n');
    const afterResize = await waitForTerminalLine(page, (l) => /^\d+ \d+$/.test(l) && l !== before);
    const [rows, cols] = afterResize.split(' ').map(Number);
    const [rows0, cols0] = before.split(' ').map(Number);
    assert.ok(cols! < cols0! && rows! < rows0!, `terminal shrank from ${before} to ${afterResize}`);
    await page.setViewportSize({ width: 1360, height: 820 });
    await page.waitForTimeout(300);
    await page.keyboard.type('clear\n');
    await page.keyboard.type('echo hi; python3 --version; ls /workspace\n');
    await waitForTerminalLine(page, (l) => /^Python 3/.test(l));
    await waitForTerminalLine(page, (l) => /app\.py/.test(l));
    await screenshot(page, 'terminal');
    await page.keyboard.type('exit\n');
    await page.waitForFunction(() => document.querySelector('[data-testid=terminal-status]')?.textContent === 'ended', undefined, { timeout: 15_000 });
  });

  it('shows backends with availability and capabilities, and pack image status', async () => {
    await page.click('a.tab[href="#/backends"]');
    const ns = page.locator('[data-backend=namespace]');
    await ns.waitFor();
    assert.match((await ns.locator('.pill').textContent()) ?? '', /^available$/);
    assert.ok((await ns.locator('dl.kv dt').count()) > 0, 'capabilities listed');
    await page.locator('tr[data-pack=python]').waitFor();
    assert.match((await page.locator('tr[data-pack=python] .pill').textContent()) ?? '', /^built$/);
    // What the image contains, from GET /v1/packs: the language version and the tools.
    assert.match((await page.locator('tr[data-pack=python] td.contents').textContent()) ?? '', /^Python 3\.\d+\.\d+.*\bpip\b/);
    assert.match((await page.locator('tr[data-pack=base] td.contents').textContent()) ?? '', /\bgit\b.*\bgcc\b/);
    await screenshot(page, 'backends');
  });

  it('charts metrics sampled from /metrics and /v1/pools', async (t) => {
    if (!sandboxId) return t.skip('no sandbox: the create step failed');
    await page.click('a.tab[href="#/metrics"]');
    await page.waitForFunction(() => document.querySelectorAll('[data-testid=chart-active] path[d^="M"]').length > 0, undefined, { timeout: 15_000 });
    const creates = Number(await page.locator('.stat:has(.stat-label:text-is("Creates")) .stat-value').textContent());
    assert.ok(creates >= 3, `saw ${creates} creates (ui sandbox, one-shot runs)`);
    assert.equal(await page.locator('.stat:has(.stat-label:text-is("Active sandboxes")) .stat-value').textContent(), '1');
    await screenshot(page, 'metrics');
  });

  it('deletes the sandbox from the list', async (t) => {
    if (!sandboxId) return t.skip('no sandbox: the create step failed');
    await page.click('a.tab[href="#/sandboxes"]');
    await page.click(`button[aria-label="Delete ${sandboxId}"]`);
    await page.locator(`tr[data-sandbox="${sandboxId}"]`).waitFor({ state: 'detached', timeout: 30_000 });
    assert.deepEqual(await srv.client.sandboxes.list(), []);
    await page.locator('.empty').waitFor();
    assert.deepEqual(pageErrors, []);
  });
});

/** Waits until some row of the xterm screen (trimmed) satisfies `match`; returns that row. */
async function waitForTerminalLine(page: Page, match: (line: string) => boolean, timeoutMs = 15_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let rows: string[] = [];
  while (Date.now() < deadline) {
    rows = (await page.locator('.xterm-rows > div').allTextContents()).map((r) => r.replace(/\u00a0/g, ' ').trim());
    const hit = rows.find(match);
    if (hit !== undefined) return hit;
    await page.waitForTimeout(100);
  }
  throw new Error(`no terminal line matched; screen was:\n${rows.filter(Boolean).join('\n')}`);
}
