import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { Express } from 'express';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ADMIN_TOKEN } from './harness';

/** Debian's chromium, with the flags it needs to run headless as root. */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

/** Screenshots land here; CI keeps the folder as the run's artifacts. */
export const SCREENSHOT_DIR = path.join(__dirname, '..', '..', 'test-artifacts', 'screenshots');

export interface BrowserSession {
  browser: Browser;
  /** The app served on a real port, as a browser needs it. */
  baseUrl: string;
  /** A fresh browser context (its own cookies) with one page. */
  newPage(): Promise<Page>;
  /** A page already signed in through the login form. */
  signedIn(): Promise<Page>;
  screenshot(page: Page, name: string): Promise<void>;
  close(): Promise<void>;
}

export async function openBrowser(app: Express): Promise<BrowserSession> {
  const server = http.createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
  fs.mkdirSync(SCREENSHOT_DIR, { recursive: true });
  const session: BrowserSession = {
    browser,
    baseUrl,
    async newPage() {
      const context = await browser.newContext({ baseURL: baseUrl, viewport: { width: 1280, height: 900 } });
      return context.newPage();
    },
    async signedIn() {
      const page = await session.newPage();
      await page.goto('/admin/login');
      await page.getByLabel('Operator token').fill(ADMIN_TOKEN);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.waitForURL(/\/admin(#.*)?$/);
      return page;
    },
    async screenshot(page, name) {
      await page.screenshot({ path: path.join(SCREENSHOT_DIR, `${name}.png`), fullPage: true });
    },
    async close() {
      await browser.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return session;
}
