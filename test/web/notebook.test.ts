/** The notebook page in real Chromium over a real code context: state between cells, a PNG plot, an exception. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { startTestServer, type TestServer } from '../parity/fixture.js';
import { ensureDashboardBuilt, launchBrowser, screenshot, skipReason, watchPageErrors } from './harness.js';

describe('notebook page (Chromium, code-interpreter sandbox)', { skip: skipReason(), timeout: 300_000 }, () => {
  let srv: TestServer;
  let browser: Browser;
  let page: Page;
  let pageErrors: string[];
  let id = '';

  before(async () => {
    ensureDashboardBuilt();
    srv = await startTestServer();
    id = (await srv.client.sandboxes.create({ pack: 'code-interpreter', memoryMib: 1024 })).id;
    browser = await launchBrowser();
    page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
    pageErrors = watchPageErrors(page);
    await page.goto(`${srv.server.url}/#/notebook?sandbox=${id}`);
  });
  after(async () => {
    await browser?.close().catch(() => undefined);
    if (id) await srv.client.sandboxes.delete(id).catch(() => undefined);
    await srv?.close();
  });

  it('runs cells in one context: state kept, a figure shown as an image, an exception in red', async () => {
    await page.click('button:text-is("Start context")');
    await page.locator('[data-testid=context-status]:text-matches("python context")').waitFor({ timeout: 60_000 });
    const cells = page.locator('[data-testid=cell]');
    await cells.first().locator('button:text-is("Run")').click();
    await cells.first().locator('[data-testid=cell-output] pre', { hasText: /^42$/ }).waitFor({ timeout: 30_000 });
    assert.equal(await cells.first().locator('.nb-gutter').textContent(), '[1]');

    await page.click('button:text-is("+ Cell")');
    await cells.nth(1).locator('.cm-content').fill('import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nprint(x)');
    await cells.nth(1).locator('button:text-is("Run")').click();
    const img = cells.nth(1).locator('img.nb-image');
    await img.waitFor({ timeout: 60_000 });
    assert.match((await img.getAttribute('src')) ?? '', /^data:image\/png;base64,iVBOR/);
    assert.equal(await cells.nth(1).locator('[data-testid=cell-output] pre:not(.stderr)').textContent(), '41\n');
    // Only matplotlib's first-use font cache note may be on stderr: no config-dir or deprecation warnings.
    assert.doesNotMatch((await cells.nth(1).locator('[data-testid=cell-output]').textContent()) ?? '', /MPLCONFIGDIR|DeprecationWarning/);

    await page.click('button:text-is("+ Cell")');
    await cells.nth(2).locator('.cm-content').fill('1 / 0');
    await cells.nth(2).locator('button:text-is("Run")').click();
    await cells.nth(2).locator('[data-testid=cell-exception]').waitFor({ timeout: 30_000 });
    assert.match((await cells.nth(2).locator('[data-testid=cell-exception]').textContent()) ?? '', /ZeroDivisionError/);
    await screenshot(page, 'notebook');
    assert.deepEqual(pageErrors, []);
  });
});
