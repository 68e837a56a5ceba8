/**
 * The Network tab and the create form's network fields in real Chromium against a fake kiln made
 * here: it serves the built dashboard and answers GET …/network/events as the API does (events
 * after ?after=, counters, proposal), adding events while the page polls.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join, normalize } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import type { NetworkEvent } from '../../sdk/src/index.js';
import { REPO_ROOT } from '../../src/core/config.js';
import { ensureDashboardBuilt, launchBrowser, screenshot, skipReason, watchPageErrors } from './harness.js';

const ID = 'sb-net1';

class FakeKiln {
  events: NetworkEvent[] = [];
  /** The `after` of every events request, in order. */
  afters: Array<string | undefined> = [];
  creates: unknown[] = [];
  server: Server = createServer((req, res) => void this.handle(req, res));

  add(e: Omit<NetworkEvent, 'seq' | 'at'>): void {
    this.events.push({ seq: this.events.length + 1, at: new Date().toISOString(), ...e });
  }

  async listen(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  private sandbox() {
    return {
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
      network: { policy: 'allowlist', allow: ['pypi.org', '*.pythonhosted.org'], learn: false, address: '10.89.0.2', gateway: '10.89.0.1', hostInterface: 'kv0a590002', bandwidthMbit: 100 },
    };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url!, 'http://x');
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const json = (status: number, v: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(v));
    };
    switch (`${req.method} ${url.pathname}`) {
      case 'GET /v1/sandboxes':
        return json(200, { sandboxes: [this.sandbox()] });
      case `GET /v1/sandboxes/${ID}`:
        return json(200, this.sandbox());
      case `GET /v1/sandboxes/${ID}/network/events`: {
        const after = url.searchParams.get('after') ?? undefined;
        this.afters.push(after);
        const refused = this.events.filter((e) => e.verdict === 'refused').length;
        return json(200, {
          policy: 'allowlist',
          events: this.events.filter((e) => e.seq > Number(after ?? 0)),
          counters: { bytesOut: 4096, bytesIn: 3 * 1024 * 1024, refused },
          proposal: { policy: 'allowlist', allow: ['pypi.org', '*.pythonhosted.org', ...(refused ? ['evil.example'] : [])] },
        });
      }
      case 'POST /v1/sandboxes':
        this.creates.push(JSON.parse(Buffer.concat(chunks).toString()));
        return json(400, { code: 'INVALID_REQUEST', message: 'the fake creates nothing' });
      case 'GET /v1/packs':
        return json(200, { packs: [{ name: 'python', description: 'Python', imageReady: true }] });
      case 'GET /v1/backends':
        return json(200, { default: 'namespace', backends: [{ name: 'namespace', available: true }] });
      case 'GET /v1/pools':
        return json(200, { pools: [] });
      case 'GET /metrics':
        res.writeHead(200, { 'content-type': 'text/plain' });
        return void res.end('');
    }
    if (url.pathname.startsWith('/v1/')) return json(404, { code: 'NOT_FOUND', message: `${req.method} ${url.pathname} is not part of this fake` });
    const dist = join(REPO_ROOT, 'web/dist');
    const file = normalize(join(dist, url.pathname === '/' ? 'index.html' : url.pathname));
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

describe('network page (Chromium against a fake network API)', { skip }, () => {
  const kiln = new FakeKiln();
  let browser: Browser;
  let page: Page;
  let pageErrors: string[];
  let base = '';
  const rowSeqs = () => page.locator('table.network-events tbody tr').evaluateAll((rows) => rows.map((r) => Number(r.getAttribute('data-seq'))));

  before(async () => {
    ensureDashboardBuilt();
    base = await kiln.listen();
    browser = await launchBrowser();
    const context = await browser.newContext({ viewport: { width: 1360, height: 860 } });
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
    page = await context.newPage();
    pageErrors = watchPageErrors(page);
  });

  after(async () => {
    await browser?.close().catch(() => undefined);
    await new Promise<void>((r) => kiln.server.close(() => r()));
  });

  it('the sandboxes page shows the network and links to the Network tab', async () => {
    kiln.add({ kind: 'dns', verdict: 'allowed', name: 'pypi.org' });
    kiln.add({ kind: 'connection', verdict: 'allowed', name: 'pypi.org', address: '151.101.0.223', port: 443, protocol: 'tcp', reason: 'TLS SNI in the allowlist' });
    await page.goto(`${base}/#/sandboxes`);
    const row = page.locator(`tr[data-sandbox="${ID}"]`);
    assert.match((await row.locator('[data-testid=sandbox-network]').textContent({ timeout: 15_000 })) ?? '', /net allowlist 10\.89\.0\.2/);
    await row.locator('a:text-is("Network")').click();
    await page.waitForFunction((id) => location.hash === `#/network?sandbox=${id}`, ID);
  });

  it('shows the policy, address, allow list and counters, and the events newest first', async () => {
    await page.locator('table.network-events').waitFor({ timeout: 15_000 });
    assert.match((await page.locator('[data-testid=policy]').textContent()) ?? '', /^allowlist/);
    assert.match((await page.locator('[data-testid=network-facts]').textContent()) ?? '', /10\.89\.0\.2.*100 Mbit\/s/);
    assert.deepEqual(await page.locator('[data-testid=allow-list] li').allTextContents(), ['pypi.org', '*.pythonhosted.org']);
    assert.equal(await page.locator('[data-testid=bytes-out]').textContent(), '4.0 KiB');
    assert.equal(await page.locator('[data-testid=bytes-in]').textContent(), '3.0 MiB');
    assert.equal(await page.locator('[data-testid=refused-count]').textContent(), '0');
    assert.deepEqual(await rowSeqs(), [2, 1]);
    assert.match((await page.locator('tr[data-seq="2"]').textContent()) ?? '', /151\.101\.0\.223:443/);
  });

  it('polls with after=<last seq>: a refused connection appears on top, marked, and counted', async () => {
    const polls = kiln.afters.length;
    kiln.add({ kind: 'dns', verdict: 'refused', name: 'evil.example', reason: 'not in the allowlist' });
    kiln.add({ kind: 'connection', verdict: 'refused', address: '198.18.1.12', port: 80, protocol: 'tcp', reason: 'not in the allowlist' });
    await page.locator('tr[data-seq="4"]').waitFor({ timeout: 5000 });
    assert.deepEqual(await rowSeqs(), [4, 3, 2, 1]);
    const refusedRow = page.locator('tr[data-seq="4"]');
    assert.equal(await refusedRow.getAttribute('class'), 'refused');
    assert.match((await refusedRow.textContent()) ?? '', /✕ refused.*198\.18\.1\.12:80.*not in the allowlist/);
    assert.equal(await page.locator('[data-testid=refused-count]').textContent(), '2');
    // The first poll asked for everything, later ones only for what followed the last event seen.
    assert.equal(kiln.afters[0], undefined);
    assert.ok(kiln.afters.slice(polls).includes('2'), `afters: ${kiln.afters.join(',')}`);
    // The next poll (about a second later) asks for what follows 4.
    for (let i = 0; i < 40 && kiln.afters.at(-1) !== '4'; i++) await page.waitForTimeout(100);
    assert.equal(kiln.afters.at(-1), '4');
    await screenshot(page, 'network');
  });

  it('filters refused and allowed rows', async () => {
    await page.selectOption('select[name=verdict]', 'refused');
    assert.deepEqual(await rowSeqs(), [4, 3]);
    await page.selectOption('select[name=verdict]', 'allowed');
    assert.deepEqual(await rowSeqs(), [2, 1]);
    await page.selectOption('select[name=verdict]', 'all');
    assert.deepEqual(await rowSeqs(), [4, 3, 2, 1]);
  });

  it('copies the proposed allowlist', async () => {
    assert.equal(await page.locator('[data-testid=proposal]').textContent(), 'pypi.org\n*.pythonhosted.org\nevil.example');
    await page.click('.proposal button:text-is("Copy")');
    await page.locator('.proposal [role=status]:text-is("copied")').waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), 'pypi.org\n*.pythonhosted.org\nevil.example');
  });

  it('the create form sends the chosen policy and the allow list, one entry per line', async () => {
    await page.goto(`${base}/#/sandboxes`);
    await page.locator('form.create select[name=pack] option[value=python]').waitFor({ state: 'attached', timeout: 15_000 });
    await page.selectOption('select[name=networkPolicy]', 'allowlist');
    await page.fill('textarea[name=networkAllow]', 'pypi.org\n\n  *.pythonhosted.org  \n198.51.100.0/24:443\n');
    await page.click('form.create button[type=submit]');
    await page.locator('form.create .error').waitFor({ timeout: 15_000 });
    await page.selectOption('select[name=networkPolicy]', 'open');
    assert.equal(await page.locator('textarea[name=networkAllow]').count(), 0);
    await page.click('form.create button[type=submit]');
    await page.waitForFunction(() => document.querySelector('form.create button[type=submit]')?.textContent === 'Create');
    await page.waitForTimeout(200);
    assert.deepEqual(kiln.creates, [
      { pack: 'python', network: { policy: 'allowlist', allow: ['pypi.org', '*.pythonhosted.org', '198.51.100.0/24:443'] } },
      { pack: 'python', network: { policy: 'open' } },
    ]);
    assert.deepEqual(pageErrors, []);
  });
});
