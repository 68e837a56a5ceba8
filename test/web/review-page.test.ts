/**
 * The workspace review page in real Chromium against a real HTTP server made here: it serves the
 * built dashboard and answers the workspace API as the design says (WORKSPACE-DESIGN.md, "API"),
 * keeping a change set that approve and reject really take paths out of, and refusing an approve
 * of a path changed on the host with 409 WORKSPACE_CONFLICT until it is forced.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join, normalize } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import type { Change } from '../../sdk/src/index.js';
import { REPO_ROOT } from '../../src/core/config.js';
import { ensureDashboardBuilt, launchBrowser, screenshot, skipReason, watchPageErrors } from './harness.js';

const ID = 'sb-ws1';
const MiB = 1024 * 1024;

interface Entry {
  change: Change;
  old?: Buffer;
  new?: Buffer;
}

function entry(path: string, o: Partial<Change>, sides: { old?: string | Buffer; new?: string | Buffer } = {}): Entry {
  const buf = (v: string | Buffer | undefined) => (typeof v === 'string' ? Buffer.from(v) : v);
  const change: Change = { path, pathBase64: Buffer.from(path).toString('base64'), status: 'modified', type: 'file', size: 0, binary: false, ignored: false, ...o };
  const e = { change, old: buf(sides.old), new: buf(sides.new) };
  change.size = (e.new ?? e.old)?.length ?? 0;
  return e;
}

function initialChanges(): Entry[] {
  return [
    entry('src/app.py', { modeOld: 0o644, modeNew: 0o755 }, { old: 'def f():\n    return 1\n\nprint(f())\n', new: 'def f():\n    return 2\n\nprint(f())\n' }),
    entry('docs/new file.md', { status: 'added' }, { new: '# Notes\n\nwritten in the sandbox\n' }),
    entry('old.txt', { status: 'deleted' }, { old: 'gone\n' }),
    entry('img/logo.png', { status: 'added', binary: true }, { new: Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 0, 0xff]) }),
    entry('link', { type: 'symlink', target: 'src/app.py', modeOld: 0o777, modeNew: 0o777 }, { old: 'old.txt', new: 'src/app.py' }),
    entry('node_modules/x/index.js', { status: 'added', ignored: true }, { new: 'module.exports = 1;\n' }),
  ];
}

/** The fake kiln: the dashboard's files and the workspace API over one change set. */
class FakeKiln {
  changes = initialChanges();
  /** Paths whose host file "changed since the sandbox started". */
  conflicting = new Set(['src/app.py']);
  requests: Array<{ route: string; query: Record<string, string>; body?: unknown }> = [];
  server: Server = createServer((req, res) => void this.handle(req, res));

  async listen(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url!, 'http://x');
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = chunks.length ? (JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown>) : undefined;
    const route = `${req.method} ${url.pathname}`;
    const query = Object.fromEntries(url.searchParams);
    if (url.pathname.startsWith('/v1/')) this.requests.push({ route, query, body });
    const json = (status: number, v: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(v));
    };
    const sandbox = {
      id: ID,
      pack: 'python',
      backend: 'namespace',
      state: 'ready',
      createdAt: new Date().toISOString(),
      expiresAt: new Date(Date.now() + 3600e3).toISOString(),
      readyMs: 40,
      cpus: 1,
      memoryMib: 512,
      diskMib: 1024,
      execsRunning: 0,
      fromPool: false,
      details: {},
      labels: {},
      workspace: { path: '/srv/projects/demo', changes: this.changes.length },
    };
    const find = (p: string) => this.changes.find((e) => e.change.path === p);
    switch (route) {
      case 'GET /v1/sandboxes':
        return json(200, { sandboxes: [sandbox] });
      case `GET /v1/sandboxes/${ID}`:
        return json(200, sandbox);
      case `GET /v1/sandboxes/${ID}/changes`:
        return json(200, { changes: this.changes.filter((e) => query.ignored === '1' || !e.change.ignored).map((e) => e.change), upperBytes: 870 * MiB, limitBytes: 1024 * MiB });
      case `GET /v1/sandboxes/${ID}/changes/content`: {
        const side = find(query.path ?? '')?.[query.side === 'old' ? 'old' : 'new'];
        if (!side) return json(404, { code: 'FILE_NOT_FOUND', message: `no ${query.side} side of ${query.path}` });
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        return void res.end(side);
      }
      case `GET /v1/sandboxes/${ID}/diff`:
        res.writeHead(200, { 'content-type': 'text/x-diff' });
        return void res.end(`diff --git a/${query.path} b/${query.path}\n`);
      case `POST /v1/sandboxes/${ID}/approve`: {
        const { paths, force } = body as { paths?: string[]; force?: boolean };
        const asked = paths ?? this.changes.map((e) => e.change.path);
        const conflicts = asked.filter((p) => this.conflicting.has(p));
        if (conflicts.length && !force)
          return json(409, { code: 'WORKSPACE_CONFLICT', message: 'host files changed since the sandbox started; approve with force to overwrite them', details: { conflicts } });
        this.changes = this.changes.filter((e) => !asked.includes(e.change.path));
        return json(200, { applied: asked });
      }
      case `POST /v1/sandboxes/${ID}/reject`: {
        const asked = (body as { paths?: string[] }).paths ?? this.changes.filter((e) => !e.change.ignored).map((e) => e.change.path);
        this.changes = this.changes.filter((e) => !asked.includes(e.change.path));
        return json(200, { rejected: asked });
      }
      case 'GET /v1/pools':
        return json(200, { pools: [] });
      case 'GET /metrics':
        res.writeHead(200, { 'content-type': 'text/plain' });
        return void res.end('');
    }
    if (url.pathname.startsWith('/v1/')) return json(404, { code: 'NOT_FOUND', message: `${route} is not part of this fake` });
    await this.serveStatic(url.pathname, res);
  }

  private async serveStatic(pathname: string, res: ServerResponse): Promise<void> {
    const dist = join(REPO_ROOT, 'web/dist');
    const file = normalize(join(dist, pathname === '/' ? 'index.html' : pathname));
    const types: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css' };
    try {
      if (!file.startsWith(dist)) throw new Error('outside');
      const data = await readFile(file);
      res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream' });
      res.end(data);
    } catch {
      res.writeHead(404).end();
    }
  }
}

// This page needs Chromium only (no sandbox is made); the harness' reason names root too.
const skip = skipReason()?.startsWith('no Chromium') ? skipReason() : undefined;

describe('workspace review page (Chromium against a fake workspace API)', { skip }, () => {
  const kiln = new FakeKiln();
  let browser: Browser;
  let page: Page;
  let pageErrors: string[];
  let base = '';

  const rowPaths = () => page.locator('table.changes tr[data-change]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-change')));
  const select = async (path: string) => {
    await page.click(`tr[data-change="${path}"] button.link`);
    await page.locator(`.change-diff[data-path="${path}"]`).waitFor();
  };

  before(async () => {
    ensureDashboardBuilt();
    base = await kiln.listen();
    browser = await launchBrowser();
    page = await browser.newPage({ viewport: { width: 1360, height: 860 } });
    pageErrors = watchPageErrors(page);
  });

  after(async () => {
    await browser?.close().catch(() => undefined);
    await new Promise<void>((r) => kiln.server.close(() => r()));
  });

  it('the Review tab without an id lists the workspace sandboxes with their change counts', async () => {
    await page.goto(`${base}/#/review`);
    const row = page.locator(`.review-page tr[data-sandbox="${ID}"]`);
    await row.waitFor({ timeout: 15_000 });
    assert.deepEqual((await row.locator('td').allTextContents()).slice(0, 3), [ID, '/srv/projects/demo', '6 paths changed']);
  });

  it('the sandboxes page links a workspace sandbox to its review', async () => {
    await page.goto(`${base}/#/sandboxes`);
    const row = page.locator(`tr[data-sandbox="${ID}"]`);
    assert.match((await row.locator('td').nth(1).textContent()) ?? '', /\/srv\/projects\/demo/);
    await row.locator('a:text("Review")').click();
    await page.waitForFunction((id) => location.hash === `#/review?sandbox=${id}`, ID);
    await page.locator('table.changes').waitFor({ timeout: 15_000 });
  });

  it('lists the changes in path order without the ignored ones, with markers, and the upper layer nearly full', async () => {
    assert.deepEqual(await rowPaths(), ['docs/new file.md', 'img/logo.png', 'link', 'old.txt', 'src/app.py']);
    const letters = await page.locator('table.changes .change-status').allTextContents();
    assert.deepEqual(letters, ['A', 'A', 'M', 'D', 'M']);
    assert.equal(await page.locator('tr[data-change="img/logo.png"] .badge').textContent(), 'binary');
    assert.match((await page.locator('tr[data-change="src/app.py"]').textContent()) ?? '', /0644 → 0755/);
    const usage = (await page.locator('[data-testid=upper-usage]').textContent()) ?? '';
    assert.match(usage, /870 MiB of 1\.0 GiB \(85%\)/);
    assert.match(usage, /nearly full/);
    assert.match((await page.locator('.review-title').textContent()) ?? '', /\/srv\/projects\/demo/);
  });

  it('shows an added text file side by side, the host side empty', async () => {
    // The first row is selected on load.
    await page.locator('.change-diff[data-path="docs/new file.md"] .cm-mergeView').waitFor({ timeout: 15_000 });
    assert.equal(
      await page
        .locator('.cm-merge-a .cm-line')
        .allTextContents()
        .then((l) => l.join('\n')),
      '',
    );
    assert.match((await page.locator('.cm-merge-b .cm-content').textContent()) ?? '', /written in the sandbox/);
    assert.ok((await page.locator('.cm-merge-b .cm-changedLine').count()) > 0, 'the new lines are marked as changed');
  });

  it('shows a modified text file with its changed line marked on both sides, and its patch', async () => {
    await select('src/app.py');
    await page.waitForFunction(() => document.querySelector('.cm-merge-b .cm-content')?.textContent?.includes('return 2'));
    assert.match((await page.locator('.cm-merge-a .cm-content').textContent()) ?? '', /return 1/);
    assert.match((await page.locator('.cm-merge-a .cm-changedText').allTextContents()).join(''), /1/);
    assert.match((await page.locator('.cm-merge-b .cm-changedText').allTextContents()).join(''), /2/);
    assert.match((await page.locator('.change-diff .change-head').textContent()) ?? '', /File modified \(mode 0644 → 0755\)/);
    await page.click('.change-diff button:text-is("Patch")');
    assert.equal(await page.locator('[data-testid=patch]').textContent(), 'diff --git a/src/app.py b/src/app.py\n');
    assert.deepEqual(kiln.requests.filter((r) => r.route.endsWith('/diff')).at(-1)?.query, { path: 'src/app.py' });
    await screenshot(page, 'workspace-review');
  });

  it('describes a binary file instead of showing its bytes, and a symlink by its targets', async () => {
    await select('img/logo.png');
    assert.match((await page.locator('[data-testid=binary-note]').textContent()) ?? '', /Binary file added \(7 B\)/);
    assert.equal(await page.locator('.cm-mergeView').count(), 0);
    await select('link');
    const targets = page.locator('[data-testid=symlink-targets]');
    await targets.waitFor();
    assert.deepEqual(await targets.locator('dd').allTextContents(), ['old.txt', 'src/app.py']);
  });

  it('the ignored toggle asks for and lists the .gitignored paths', async () => {
    await page.check('input[name=showIgnored]');
    await page.locator('tr[data-change="node_modules/x/index.js"]').waitFor();
    assert.equal(await page.locator('tr[data-change="node_modules/x/index.js"] .badge').textContent(), 'ignored');
    assert.equal(kiln.requests.filter((r) => r.route.endsWith('/changes')).at(-1)?.query.ignored, '1');
    await page.uncheck('input[name=showIgnored]');
    await page.waitForFunction(() => !document.querySelector('tr[data-change="node_modules/x/index.js"]'));
  });

  it('a conflicting approve shows the host-changed paths; force applies it', async () => {
    await page.click('button[aria-label="Approve src/app.py"]');
    const box = page.locator('[data-testid=conflict]');
    await box.waitFor();
    assert.deepEqual(await box.locator('li').allTextContents(), ['src/app.py']);
    assert.deepEqual(await rowPaths(), ['docs/new file.md', 'img/logo.png', 'link', 'old.txt', 'src/app.py']);
    await box.locator('button:text("Force")').click();
    await page.waitForFunction(() => !document.querySelector('tr[data-change="src/app.py"]'));
    assert.equal(await box.count(), 0);
    assert.deepEqual(
      kiln.requests.filter((r) => r.route.endsWith('/approve')).map((r) => r.body),
      [{ paths: ['src/app.py'] }, { paths: ['src/app.py'], force: true }],
    );
    assert.match((await page.locator('[role=status]').textContent()) ?? '', /Approved 1 path/);
  });

  it('rejects one file from its diff panel, then all after a confirmation, ending with no changes', async () => {
    await select('old.txt');
    await page.click('.change-diff button:text-is("Reject file")');
    await page.waitForFunction(() => !document.querySelector('tr[data-change="old.txt"]'));
    // The next row is selected in its place.
    await page.locator('tr.selected[data-change="docs/new file.md"], tr.selected[data-change="link"]').waitFor();
    page.once('dialog', (d) => void d.accept());
    await page.click('.review-head button:text-is("Reject all")');
    await page.locator('.review-page .empty').waitFor();
    assert.deepEqual(
      kiln.requests.filter((r) => r.route.endsWith('/reject')).map((r) => r.body),
      [{ paths: ['old.txt'] }, {}],
    );
    assert.deepEqual(
      kiln.changes.map((e) => e.change.path),
      ['node_modules/x/index.js'],
    );
    assert.deepEqual(pageErrors, []);
  });
});
