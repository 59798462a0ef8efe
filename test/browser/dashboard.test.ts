import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Page } from 'playwright-core';
import request from 'supertest';
import { openBrowser, type BrowserSession } from '../helpers/browser';
import { startEmbeddingsProvider, type FakeEmbeddingsProvider } from '../helpers/embeddings-provider';
import { ADMIN_TOKEN, startStack, type TestStack } from '../helpers/harness';
import { waitFor } from '../helpers/wait';

type Tenant = Awaited<ReturnType<TestStack['createTenant']>>;

/** Every input, select and textarea on the page that has no accessible name. */
async function unlabelledFields(page: Page): Promise<string[]> {
  return page.$$eval('input:not([type=hidden]), select, textarea', (elements) =>
    elements
      .filter((element) => {
        const labelled = (element as { labels?: ArrayLike<unknown> | null }).labels?.length || element.getAttribute('aria-label') || element.getAttribute('aria-labelledby');
        return !labelled;
      })
      .map((element) => element.outerHTML),
  );
}

const sessionCookieOf = async (page: Page) => (await page.context().cookies()).find((cookie) => cookie.name === 'rw_admin');

describe('the operator dashboard in Chromium (PGlite, workers, an embeddings provider that first refuses)', () => {
  let stack: TestStack;
  let provider: FakeEmbeddingsProvider;
  let browser: BrowserSession;
  let tenant: Tenant;
  const documents: string[] = [];

  beforeAll(async () => {
    provider = await startEmbeddingsProvider({ dimensions: 384, model: 'dashboard-embedder', rejects: () => true });
    stack = await startStack({ database: 'pglite', env: { ...provider.env, EMBEDDINGS_MAX_RETRIES: '0' } });
    tenant = await stack.createTenant();
    for (const title of ['Harbour tides', 'Ferry timetable']) {
      const created = await stack.as(tenant.key, 'post', '/api/documents').send({ title, content: `# ${title}\n\nThe ${title.toLowerCase()} are posted every morning.` }).expect(202);
      documents.push(created.body.id);
      await stack.waitForDocument(tenant.key, created.body.id, 'failed');
    }
    browser = await openBrowser(stack.app);
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    await stack?.close();
    await provider?.close();
  });

  describe('without a session', () => {
    it('sends anonymous visitors of /admin and /admin/queues to the login page and shows them nothing else', async () => {
      for (const path of ['/admin', '/admin/', '/admin/queues', '/admin/queues/api/queues']) {
        const response = await request(stack.app).get(path);
        expect({ path, status: response.status, location: response.headers.location }).toEqual({ path, status: 302, location: expect.stringMatching(/^\/admin\/login\?next=/) });
        expect(response.text).not.toContain('tablist');
      }
      const page = await browser.newPage();
      await page.goto('/admin/queues');
      expect(new URL(page.url()).pathname).toBe('/admin/login');
      expect(await page.locator('[role=tablist]').count()).toBe(0);
      expect(await unlabelledFields(page)).toEqual([]);
      await browser.screenshot(page, 'login');
      await page.context().close();
    });

    it('refuses a login form that did not come from the login page', async () => {
      const response = await request(stack.app).post('/admin/login').type('form').send({ token: ADMIN_TOKEN, login_token: 'forged' });
      expect(response.status).toBe(403);
      expect(String(response.headers['set-cookie'] ?? '')).not.toContain('rw_admin=');
    });
  });

  describe('signing in and out', () => {
    it('refuses a wrong token, signs in with the right one into an HttpOnly SameSite=Strict cookie, and signs out for good', async () => {
      const page = await browser.newPage();
      await page.goto('/admin');
      await page.getByLabel('Operator token').fill('not-the-operator-token-at-all');
      await page.getByRole('button', { name: 'Sign in' }).click();
      expect(await page.getByRole('alert').textContent()).toContain('not the operator token');
      await page.getByLabel('Operator token').fill(ADMIN_TOKEN);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.waitForURL(/\/admin(#.*)?$/);
      await page.getByRole('tab', { name: 'Overview' }).waitFor();
      const cookie = await sessionCookieOf(page);
      expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/' });

      await page.getByRole('button', { name: 'Sign out' }).click();
      await page.waitForURL(/\/admin\/login$/);
      // The old cookie is dead on the server, not only forgotten by this browser.
      const replayed = await request(stack.app).get('/api/admin/stats').set('Cookie', `rw_admin=${cookie!.value}`);
      expect(replayed.status).toBe(401);
      await page.context().close();
    });
  });

  describe('with a session', () => {
    let page: Page;
    let cookie: string;
    let csrf: string;

    beforeAll(async () => {
      page = await browser.signedIn();
      cookie = `rw_admin=${(await sessionCookieOf(page))!.value}`;
      csrf = (await page.locator('meta[name="csrf-token"]').getAttribute('content'))!;
    });
    afterAll(async () => {
      await page?.context().close();
    });

    const pickTenant = async () => {
      await page.getByLabel('Tenant', { exact: true }).selectOption(tenant.id);
    };

    it('refuses changes sent with the session cookie but without the CSRF token, from another origin, or from another site', async () => {
      const suspend = () => request(stack.app).post(`/api/admin/tenants/${tenant.id}/suspend`).set('Cookie', cookie);
      for (const attemptSuspend of [
        suspend(),
        suspend().set('X-CSRF-Token', 'wrong'),
        suspend().set('X-CSRF-Token', csrf).set('Origin', 'http://evil.example'),
        suspend().set('X-CSRF-Token', csrf).set('Sec-Fetch-Site', 'cross-site'),
      ]) {
        const response = await attemptSuspend;
        expect(response.status).toBe(403);
        expect(response.body.error.code).toBe('csrf_failed');
      }
      // A real page of another origin posting a form: the browser keeps the Strict cookie to itself.
      const evil = http.createServer((_req, res) => {
        res.setHeader('Content-Type', 'text/html');
        res.end(`<form id="f" method="post" action="${browser.baseUrl}/api/admin/tenants/${tenant.id}/suspend"></form><script>document.getElementById('f').submit()</script>`);
      });
      await new Promise<void>((resolve) => evil.listen(0, '127.0.0.1', resolve));
      try {
        const attacker = await page.context().newPage();
        const landed = attacker.waitForURL(/\/suspend$/);
        await attacker.goto(`http://localhost:${(evil.address() as AddressInfo).port}/`);
        await landed;
        expect(await attacker.textContent('body')).toMatch(/unauthenticated|csrf_failed/);
        await attacker.close();
      } finally {
        await new Promise<void>((resolve) => evil.close(() => resolve()));
      }
      expect((await stack.operator('get', `/api/admin/tenants/${tenant.id}`).expect(200)).body.status).toBe('active');
      // The same change from the page itself, with its token, goes through.
      const status = await page.evaluate(
        async ([path, token]) => (await fetch(path, { method: 'POST', headers: { 'X-CSRF-Token': token } })).status,
        [`/api/admin/tenants/${tenant.id}/suspend`, csrf] as const,
      );
      expect(status).toBe(200);
      await stack.operator('post', `/api/admin/tenants/${tenant.id}/resume`).expect(200);
    });

    it('shows health, real counts and recent activity on the overview', async () => {
      await page.getByRole('tab', { name: 'Overview' }).click();
      const health = page.getByTestId('health');
      await health.getByText('Database: up').waitFor();
      expect(await health.textContent()).toContain('Redis: up');
      expect(await health.textContent()).toContain('Vector search: available');
      const stats = (await stack.operator('get', '/api/admin/stats').expect(200)).body;
      const cards = page.getByTestId('cards');
      expect(await cards.textContent()).toContain(`Documents${stats.total_documents.toLocaleString('en-US')}`);
      expect(await cards.textContent()).toContain('Failed jobs');
      await page.getByText('admin.login').first().waitFor();
      await browser.screenshot(page, 'overview');
    });

    it('moves between tabs with the keyboard', async () => {
      await page.getByRole('tab', { name: 'Overview' }).focus();
      await page.keyboard.press('ArrowRight');
      expect(await page.getByRole('tab', { selected: true }).textContent()).toBe('Analytics');
      await page.keyboard.press('End');
      expect(await page.getByRole('tab', { selected: true }).textContent()).toBe('Audit');
      await page.keyboard.press('Home');
      expect(await page.getByRole('tab', { selected: true }).textContent()).toBe('Overview');
      expect(await page.locator(':focus').getAttribute('role')).toBe('tab');
      // Tab leaves the tab list for the open panel.
      await page.keyboard.press('Tab');
      expect(await page.locator(':focus').getAttribute('id')).toBe('panel-overview');
    });

    it('changes a tier and suspends and resumes a tenant from the tenants tab, with usage bars', async () => {
      await page.getByRole('tab', { name: 'Tenants' }).click();
      const row = page.getByRole('row').filter({ hasText: tenant.slug });
      await row.getByText('Documents: 2').waitFor();
      await row.getByLabel(`Tier of ${tenant.slug}`).selectOption('standard');
      await waitFor(async () => (await stack.operator('get', `/api/admin/tenants/${tenant.id}`)).body.tier === 'standard', { what: 'the tier change' });
      page.once('dialog', (dialog) => dialog.accept());
      await page.getByRole('row').filter({ hasText: tenant.slug }).getByRole('button', { name: 'Suspend' }).click();
      await waitFor(async () => (await stack.operator('get', `/api/admin/tenants/${tenant.id}`)).body.status === 'suspended', { what: 'the suspension' });
      await page.getByRole('row').filter({ hasText: tenant.slug }).getByRole('button', { name: 'Resume' }).click();
      await waitFor(async () => (await stack.operator('get', `/api/admin/tenants/${tenant.id}`)).body.status === 'active', { what: 'the resumption' });
      expect(await unlabelledFields(page)).toEqual([]);
      await browser.screenshot(page, 'tenants');
    });

    it('pauses and resumes a queue from the jobs tab', async () => {
      await page.getByRole('tab', { name: 'Jobs' }).click();
      await page.getByRole('button', { name: 'Pause webhooks' }).click();
      await page.getByRole('button', { name: 'Resume webhooks' }).waitFor();
      expect((await stack.operator('get', '/api/admin/queues').expect(200)).body.find((queue: { name: string }) => queue.name === 'webhooks').is_paused).toBe(true);
      await page.getByRole('button', { name: 'Resume webhooks' }).click();
      await page.getByRole('button', { name: 'Pause webhooks' }).waitFor();
      expect((await stack.operator('get', '/api/admin/queues').expect(200)).body.find((queue: { name: string }) => queue.name === 'webhooks').is_paused).toBe(false);
    });

    it('shows a failed job with its error and stack, and retries it until it completes', async () => {
      await pickTenant();
      await page.getByRole('tab', { name: 'Jobs' }).click();
      const failedJobs = page.getByTestId('failed-jobs');
      await failedJobs.getByText('HTTP 400').first().waitFor();
      await failedJobs.getByRole('button', { name: 'Details' }).first().click();
      await page.getByTestId('job-details').getByLabel('Stack trace').waitFor();
      await browser.screenshot(page, 'jobs');

      provider.rejects = () => false;
      const job = (await stack.operator('get', '/api/admin/jobs?queue=indexing&state=failed').expect(200)).body.items.find(
        (item: { id: string }) => item.id.includes(documents[0]),
      );
      await failedJobs.getByRole('row').filter({ hasText: job.id }).getByRole('button', { name: 'Retry' }).click();
      const indexed = await stack.waitForDocument(tenant.key, documents[0], 'indexed');
      // The index job's live progress bar shows it done.
      const indexJob = page.getByTestId('index-jobs').getByRole('row').filter({ hasText: String(indexed.job_id) });
      await indexJob.getByText('completed').waitFor();
      expect(await indexJob.textContent()).toContain('1 / 1');
      expect(await unlabelledFields(page)).toEqual([]);
    });

    it('redrives a dead letter and the work completes', async () => {
      await page.getByRole('tab', { name: 'Jobs' }).click();
      const letters = page.getByTestId('dead-letters');
      const row = letters.getByRole('row').filter({ hasText: documents[1] });
      await row.waitFor();
      await row.getByRole('button', { name: 'Redrive' }).click();
      await stack.waitForDocument(tenant.key, documents[1], 'indexed');
    });

    it('stops the Jobs poller when another tab is opened before the Jobs tab finished loading', async () => {
      await pickTenant();
      const polls: number[] = [];
      const onRequest = (sent: { url(): string }) => {
        if (sent.url().includes('/api/index/jobs')) polls.push(Date.now());
      };
      page.on('request', onRequest);
      try {
        await page.getByRole('tab', { name: 'Jobs' }).click();
        await page.getByRole('tab', { name: 'Overview' }).click();
        await page.getByTestId('health').waitFor();
        const switched = Date.now();
        // The Jobs tab polls every 2 s: 5 s without a poll means nothing is left running.
        await new Promise((resolve) => setTimeout(resolve, 5_000));
        expect(polls.filter((at) => at > switched + 500)).toEqual([]);
      } finally {
        page.off('request', onRequest);
      }
    });

    it('offers every tenant in the picker and pages the tenants tab, past the first hundred', async () => {
      for (let index = 0; index < 101; index++) {
        await stack.operator('post', '/api/admin/tenants').send({ slug: `bulk-${index}-${tenant.slug}`.slice(0, 63), name: `Bulk ${index}` }).expect(201);
      }
      const total = (await stack.sql((db) => db('tenants').count('* as n').first()))!.n as number;
      await page.reload();
      await page.getByRole('tab', { name: 'Overview' }).waitFor();
      await waitFor(async () => (await page.getByLabel('Tenant', { exact: true }).locator('option').count()) === total + 1, { what: 'every tenant in the picker' });
      await page.getByRole('tab', { name: 'Tenants' }).click();
      await page.getByText(`Page 1 of ${Math.ceil(total / 50)}`).waitFor();
      await page.getByRole('button', { name: 'Next tenants' }).click();
      await page.getByText(`Page 2 of ${Math.ceil(total / 50)}`).waitFor();
    });

    it('lists every change in the audit tab, newest first', async () => {
      // All tenants: queue pauses and sign-ins belong to none.
      await page.getByLabel('Tenant', { exact: true }).selectOption('');
      await page.getByRole('tab', { name: 'Audit' }).click();
      const audit = page.getByTestId('audit');
      // Newest first: the hundred tenants just created lead the list.
      await audit.getByText('tenant.create').first().waitFor();
      await browser.screenshot(page, 'audit');
      for (const action of ['tenant.update', 'tenant.suspend', 'tenant.resume', 'queue.pause', 'job.retry', 'dead_letter.redrive', 'admin.login']) {
        await page.getByLabel('Action').fill(action);
        await page.getByRole('button', { name: 'Filter' }).click();
        await audit.getByRole('cell', { name: action, exact: true }).first().waitFor();
        expect(await audit.getByRole('cell', { name: 'tenant.create', exact: true }).count()).toBe(0);
      }
    });
  });
});
