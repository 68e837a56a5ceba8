/**
 * What the dashboard tests share: a fresh build of web/dist when it is missing or older than its
 * sources, a headless Debian Chromium driven by playwright-core (no browser download), and where
 * screenshots go (docs/screenshots with KILN_UPDATE_SCREENSHOTS=1, a temp dir otherwise).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { REPO_ROOT } from '../../src/core/config.js';

export const CHROMIUM = process.env.KILN_CHROMIUM ?? '/usr/bin/chromium';

export const SCREENSHOT_DIR = process.env.KILN_UPDATE_SCREENSHOTS === '1' ? join(REPO_ROOT, 'docs/screenshots') : join(tmpdir(), 'kiln-web-screenshots');

/** Why the browser tests cannot run here, or undefined when they can. */
export function skipReason(): string | undefined {
  if (!existsSync(CHROMIUM)) return `no Chromium at ${CHROMIUM} (apt-get install chromium, or set KILN_CHROMIUM)`;
  if (process.getuid?.() !== 0) return 'the namespace backend needs root';
  return undefined;
}

/** Builds web/dist unless it is newer than every source it is made from. */
export function ensureDashboardBuilt(): void {
  const built = join(REPO_ROOT, 'web/dist/index.html');
  const sources = ['web/src', 'web/index.html', 'web/vite.config.ts', 'sdk/src', 'package-lock.json'].map((p) => join(REPO_ROOT, p));
  if (existsSync(built) && newest(sources) <= statSync(built).mtimeMs) return;
  execFileSync(process.execPath, [join(REPO_ROOT, 'node_modules/vite/bin/vite.js'), 'build', '--config', 'web/vite.config.ts', '--logLevel', 'warn'], { cwd: REPO_ROOT, stdio: 'inherit' });
}

function newest(paths: string[]): number {
  let max = 0;
  for (const p of paths) {
    if (!existsSync(p)) continue;
    const st = statSync(p);
    max = Math.max(max, st.mtimeMs);
    if (st.isDirectory()) max = Math.max(max, newest(readdirSync(p).map((n) => join(p, n))));
  }
  return max;
}

export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOT_DIR, `${name}.png`) });
}

/** Collects uncaught page errors so a test can assert the app never threw. */
export function watchPageErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  return errors;
}
