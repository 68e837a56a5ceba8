/**
 * The dashboard against a server with a bearer token and a warm pool: a 401 asks for the token,
 * the saved token is used for HTTP and the exec WebSocket (?access_token=), and the Metrics page
 * shows the pool filling to its target.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { KilnClient } from '../../sdk/src/index.js';
import { startTestServer, type TestServer } from '../parity/fixture.js';
import { ensureDashboardBuilt, launchBrowser, screenshot, skipReason, watchPageErrors } from './harness.js';

const TOKEN = 'dashboard-test-token';

describe('dashboard with a token and a warm pool', { skip: skipReason() }, () => {
  let srv: TestServer;
  let client: KilnClient;
  let browser: Browser;
  let page: Page;
  let pageErrors: string[];

  before(async () => {
    ensureDashboardBuilt();
    srv = await startTestServer({ KILN_TOKEN: TOKEN, KILN_POOL: 'python=1' });
    client = new KilnClient({ baseUrl: srv.server.url, token: TOKEN });
    browser = await launchBrowser();
    page = await browser.newPage({ viewport: { width: 1360, height: 820 } });
    pageErrors = watchPageErrors(page);
  });

  after(async () => {
    try {
      for (const sb of await client.sandboxes.list().catch(() => [])) await client.sandboxes.delete(sb.id).catch(() => undefined);
    } finally {
      await browser?.close().catch(() => undefined);
      await srv?.close();
    }
  });

  it('asks for the token after a 401 and keeps it in localStorage', async () => {
    await page.goto(`${srv.server.url}/#/sandboxes`);
    await page.locator('.token-hint').waitFor({ timeout: 15_000 });
    assert.match((await page.locator('.page .error').first().textContent()) ?? '', /^UNAUTHORIZED: /);
    await page.fill('input[aria-label="API token"]', TOKEN);
    await page.click('.token button[type=submit]');
    await page.locator('.empty, tr[data-sandbox]').first().waitFor({ timeout: 15_000 });
    assert.equal(await page.locator('.token-hint').count(), 0);
    assert.equal(await page.evaluate(() => localStorage.getItem('kiln.token')), TOKEN);
    await page.reload();
    await page.locator('.empty, tr[data-sandbox]').first().waitFor({ timeout: 15_000 });
    assert.equal(await page.locator('.token-hint').count(), 0);
  });

  it('opens a terminal with the token on the WebSocket', async () => {
    const sb = await client.sandboxes.create({ pack: 'shell' });
    try {
      await page.click('a.tab[href="#/sandboxes"]');
      await page.click(`tr[data-sandbox="${sb.id}"] a:text-is("Terminal")`);
      await page.click('button:text-is("Connect")');
      await page.waitForFunction(() => document.querySelector('[data-testid=terminal-status]')?.textContent === 'connected', undefined, { timeout: 30_000 });
      await page.click('[data-testid=terminal]');
      await page.keyboard.type('echo token-ok\n');
      await page.waitForFunction(() => [...document.querySelectorAll('.xterm-rows > div')].some((r) => r.textContent?.replace(/\u00a0/g, ' ').trim() === 'token-ok'), undefined, { timeout: 15_000 });
      await page.click('button:text-is("Disconnect")');
    } finally {
      await client.sandboxes.delete(sb.id).catch(() => undefined);
    }
  });

  it('shows the warm pool reaching its target', async () => {
    await page.click('a.tab[href="#/metrics"]');
    const row = page.locator('table.grid tbody tr', { hasText: 'python' });
    await row.waitFor({ timeout: 15_000 });
    await page.waitForFunction(() => /1 \/ 1/.test(document.querySelector('table.grid tbody tr')?.textContent ?? ''), undefined, { timeout: 60_000 });
    // Let a few samples show the pool line at its target.
    await page.waitForFunction(() => document.querySelectorAll('[data-testid=chart-pool] path[d^="M"]').length >= 2, undefined, { timeout: 15_000 });
    await page.waitForTimeout(4500);
    await screenshot(page, 'metrics-pools');
    assert.deepEqual(pageErrors, []);
  });
});
