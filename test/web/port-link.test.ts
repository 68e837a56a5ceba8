/**
 * "Open in browser" end to end (docs/ports.md, browser links): real Chromium, a real kiln server
 * with a token, servers in a real sandbox. The dashboard's button opens a tab on the port link; the
 * tab lands on the app without the token in its address, holds only an HttpOnly cookie, and its
 * relative requests and a WebSocket work with it while kiln's API stays closed to it. The tab is on
 * the apps listener (an origin of its own; KILN_APPS_PORT unset: a port the system picks), where
 * the app cannot reach the dashboard's storage either.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { KilnClient } from '../../sdk/src/index.js';
import { HTTP_PORT, startServers, WS_PORT } from '../integration/port-servers.js';
import { startTestServer, type TestServer } from '../parity/fixture.js';
import { ensureDashboardBuilt, launchBrowser, skipReason } from './harness.js';

const TOKEN = 'port-link-browser-token';

describe('dashboard: open a sandbox port in the browser, on an origin of its own', { skip: skipReason(), timeout: 180_000 }, () => {
  let srv: TestServer;
  let kiln: KilnClient;
  let browser: Browser;
  let ctx: BrowserContext;
  let page: Page;
  let id = '';

  before(async () => {
    ensureDashboardBuilt();
    srv = await startTestServer({ KILN_SOCKET: '', KILN_TOKEN: TOKEN });
    kiln = new KilnClient({ baseUrl: srv.server.url, token: TOKEN });
    id = (await kiln.sandboxes.create({ pack: 'python' })).id;
    await startServers(kiln, id);
    browser = await launchBrowser();
    ctx = await browser.newContext();
    page = await ctx.newPage();
    await page.goto(`${srv.server.url}/#/sandboxes`);
    await page.evaluate((t) => localStorage.setItem('kiln.token', t), TOKEN);
    await page.reload();
  });

  after(async () => {
    try {
      if (id) await kiln.sandboxes.delete(id).catch(() => undefined);
    } finally {
      await browser?.close().catch(() => undefined);
      await srv?.close();
    }
  });

  async function openPort(port: number): Promise<Page> {
    const row = page.locator(`tr[data-sandbox="${id}"]`);
    await row.waitFor({ timeout: 15_000 });
    await row.locator('input[name=port]').fill(String(port));
    const [tab] = await Promise.all([ctx.waitForEvent('page'), row.locator('button:text-is("Open in browser")').click()]);
    await tab.waitForURL((u) => u.pathname === `/v1/sandboxes/${id}/ports/${port}/`, { timeout: 15_000 });
    assert.equal(new URL(tab.url()).origin, new URL(srv.server.appsUrl!).origin);
    assert.notEqual(new URL(tab.url()).origin, new URL(srv.server.url).origin);
    return tab;
  }

  it('the button opens the app in a new tab; its requests work by the cookie, the API does not', async () => {
    const tab = await openPort(HTTP_PORT);
    try {
      assert.equal(new URL(tab.url()).search, '', 'the token left the address bar');
      const first = JSON.parse((await tab.locator('body').textContent()) ?? '{}') as { path: string; headers: Record<string, string> };
      assert.equal(first.path, '/');
      assert.equal(first.headers.cookie, undefined, "kiln's cookie does not reach the app");
      assert.equal(await tab.evaluate(() => document.cookie), '', 'HttpOnly: script cannot read it');
      const cookies = await ctx.cookies();
      assert.deepEqual(
        cookies.map((c) => [c.name, c.path, c.httpOnly, c.sameSite]),
        [['kiln_port_link', `/v1/sandboxes/${id}/ports/${HTTP_PORT}/`, true, 'Lax']],
      );
      // A relative request of the page, then kiln's API from the same page.
      const rel = await tab.evaluate(async () => {
        const r = await fetch('info/sub?q=1');
        return { status: r.status, body: (await r.json()) as { path: string } };
      });
      assert.deepEqual(rel, { status: 200, body: rel.body });
      assert.equal(rel.body.path, '/info/sub?q=1');
      const api = await tab.evaluate(async (sb) => Promise.all([`/v1/sandboxes/${sb}`, '/v1/sandboxes', `/v1/sandboxes/${sb}/ports/8001/`].map((p) => fetch(p).then((r) => r.status))), id);
      assert.deepEqual(api, [404, 404, 401]);
      // On the dashboard's origin the app could read the dashboard's token; on its own it cannot.
      assert.equal(await tab.evaluate(() => localStorage.getItem('kiln.token')), null);
    } finally {
      await tab.close();
    }
  });

  it("a WebSocket of the opened page works with the port's cookie", async () => {
    const tab = await openPort(WS_PORT);
    try {
      const echoed = await tab.evaluate(
        () =>
          new Promise<string>((resolve, reject) => {
            const ws = new WebSocket(`${location.href.replace(/^http/, 'ws')}chat`);
            ws.onopen = () => ws.send('from the browser');
            ws.onmessage = (e) => {
              resolve(String(e.data));
              ws.close();
            };
            ws.onerror = () => reject(new Error('WebSocket failed'));
          }),
      );
      assert.equal(echoed, 'from the browser');
    } finally {
      await tab.close();
    }
  });
});
