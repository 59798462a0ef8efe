import type { Page } from 'playwright-core';
import request from 'supertest';
import { aggregateSearchEvents } from '../../src/domain/analytics/aggregate';
import { openBrowser, type BrowserSession } from '../helpers/browser';
import { startStack, type TestStack } from '../helpers/harness';
import { FAKE_USAGE, startChatProvider, type FakeChatProvider } from '../helpers/llm-provider';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver';
import { waitFor } from '../helpers/wait';

type Tenant = Awaited<ReturnType<TestStack['createTenant']>>;

/** Every input, select and textarea on the page without an accessible name. */
async function unlabelledFields(page: Page): Promise<string[]> {
  const fields = page.locator('input:not([type=hidden]), select, textarea');
  const missing: string[] = [];
  for (const field of await fields.all()) {
    const named = await field.evaluate((element) => {
      const labels = (element as { labels?: ArrayLike<{ textContent: string | null }> | null }).labels;
      const text = Array.from(labels ?? []).map((label) => label.textContent?.trim()).join('');
      return Boolean(text || element.getAttribute('aria-label') || element.getAttribute('aria-labelledby'));
    });
    if (!named) missing.push(await field.evaluate((element) => element.outerHTML));
  }
  return missing;
}

/** A figure on a card, as the operator reads it: "12.3 ms" → 12.3. */
async function cardFigure(page: Page, label: string): Promise<string> {
  const card = page.locator('#panel-metrics .card').filter({ has: page.locator('.card-label', { hasText: label }) });
  return (await card.locator('.card-value').textContent()) ?? '';
}

describe('the analytics, webhooks, API keys and metrics tabs in Chromium (PGlite, workers)', () => {
  let stack: TestStack;
  let browser: BrowserSession;
  let receiver: WebhookReceiver;
  let provider: FakeChatProvider;
  let tenant: Tenant;
  let neighbour: Tenant;
  let page: Page;
  const pageProblems: string[] = [];

  beforeAll(async () => {
    receiver = await startWebhookReceiver();
    // A chat model of our own, so the Analytics tab has real answers to show.
    provider = await startChatProvider({ model: 'test/chat-model', apiKey: 'k' });
    stack = await startStack({ database: 'pglite', env: { WEBHOOK_ALLOW_PRIVATE: 'true', ...provider.env } });
    tenant = await stack.createTenant();
    // Another tenant's searches and answers must not show up in this tenant's analytics.
    neighbour = await stack.createTenant();

    for (const [title, content] of [
      ['Harbour tides', 'The harbour tides are posted every morning at the pier.'],
      ['Ferry timetable', 'The ferry timetable changes in winter; the harbour office has it.'],
    ]) {
      const created = await stack.as(tenant.key, 'post', '/api/documents').send({ title, content }).expect(202);
      await stack.waitForDocument(tenant.key, created.body.id);
    }
    const search = (key: string, query: string) => stack.as(key, 'post', '/api/search').send({ query, mode: 'keyword' }).expect(200);
    // Five searches reach the trending threshold (ANALYTICS_TRENDING_MIN_VOLUME).
    for (let i = 0; i < 5; i += 1) await search(tenant.key, 'harbour tides');
    for (let i = 0; i < 2; i += 1) await search(tenant.key, 'ferry timetable');
    const empty = await search(tenant.key, 'zebra crossing');
    expect(empty.body.results).toHaveLength(0);
    await search(neighbour.key, 'neighbour secret plans');
    await aggregateSearchEvents(stack.platform.db.knex, stack.platform.redis, stack.config.QUEUE_PREFIX, 'test');

    browser = await openBrowser(stack.app);
    page = await browser.signedIn();
    page.on('console', (message) => {
      if (/Content Security Policy/i.test(message.text())) pageProblems.push(message.text());
    });
    page.on('pageerror', (error) => pageProblems.push(error.message));
    await page.getByLabel('Tenant', { exact: true }).selectOption(tenant.id);
  }, 120_000);

  afterAll(async () => {
    await page?.context().close();
    await browser?.close();
    await stack?.close();
    await receiver?.close();
    await provider?.close();
  });

  it('shows the tenant’s searches in analytics, reached by keyboard, and re-fetches for 7, 30 and 90 days', async () => {
    await page.getByRole('tab', { name: 'Overview' }).click();
    await page.getByRole('tab', { name: 'Overview' }).focus();
    await page.keyboard.press('ArrowRight');
    expect(await page.getByRole('tab', { selected: true }).textContent()).toBe('Analytics');
    const panel = page.getByRole('tabpanel', { name: 'Analytics' });

    const popular = panel.getByRole('table', { name: /most searched/ });
    await popular.getByRole('row').filter({ hasText: 'harbour tides' }).getByRole('cell', { name: '5', exact: true }).waitFor();
    expect(await popular.textContent()).toContain('ferry timetable');
    expect(await panel.textContent()).not.toContain('neighbour secret plans');
    await panel.getByRole('table', { name: /Week-over-week/ }).getByText('harbour tides').waitFor();
    await panel.getByRole('table', { name: /found nothing/ }).getByText('zebra crossing').waitFor();
    await panel.locator('.card').filter({ hasText: 'Searches' }).first().getByText('8', { exact: true }).waitFor();

    // The chart is drawn by Chart.js into its canvas, from our own copy of the library.
    const canvas = panel.locator('canvas');
    await expect(canvas.getAttribute('aria-label')).resolves.toBe('Searches per day, last 30 days: 8 in all');
    type WithChart = { Chart?: { getChart(canvas: unknown): unknown } };
    expect(await page.evaluate(() => typeof (globalThis as WithChart).Chart)).toBe('function');
    expect(await canvas.evaluate((element) => Boolean((globalThis as WithChart).Chart?.getChart(element)))).toBe(true);

    for (const [days, interval] of [[7, 'hour'], [90, 'day'], [30, 'day']] as const) {
      const asked = page.waitForRequest((req) => req.url().includes('/api/admin/analytics/timeseries'));
      const popularAsked = page.waitForRequest((req) => req.url().includes(`/api/admin/analytics/popular?days=${days}&`));
      await panel.getByLabel('Range').selectOption(String(days));
      const url = new URL((await asked).url());
      await popularAsked;
      expect(url.searchParams.get('interval')).toBe(interval);
      const spanDays = (Date.parse(url.searchParams.get('end')!) - Date.parse(url.searchParams.get('start')!)) / 86_400_000;
      expect(spanDays).toBeGreaterThan(days - 1);
      expect(spanDays).toBeLessThanOrEqual(days);
      await panel.getByTestId('range-label').getByText(`Searches per ${interval}, last ${days} days: 8 in all`).waitFor();
      await panel.getByText(`The most searched queries, last ${days} days`).waitFor();
    }

    expect(await unlabelledFields(page)).toEqual([]);
    await browser.screenshot(page, 'analytics');
  });

  it('shows the tenant’s answers in analytics: count, no-citation rate, tokens, feedback and those rated down, re-fetched for the range', async () => {
    const ask = async (key: string, body: Record<string, unknown>) =>
      (await stack.as(key, 'post', '/api/answer').send(body).expect(200)).body as { query_id: string; citations: unknown[]; cached: boolean };
    // One answer from passages (the model cites [1]), one to a question no document matches (nothing to cite): 50 % cite nothing.
    const cited = await ask(tenant.key, { query: 'harbour tides', mode: 'keyword' });
    const uncited = await ask(tenant.key, { query: 'zeppelin mooring masts', mode: 'keyword', typo_tolerance: false });
    expect([cited.citations.length > 0, cited.cached, uncited.citations]).toEqual([true, false, []]);
    await stack.as(tenant.key, 'post', `/api/answer/${cited.query_id}/feedback`).send({ rating: 'up' }).expect(204);
    await stack.as(tenant.key, 'post', `/api/answer/${uncited.query_id}/feedback`).send({ rating: 'down', comment: 'Nothing about zeppelins.' }).expect(204);
    // Left unrated, so the neighbour's own view has nothing rated down.
    await ask(neighbour.key, { query: 'neighbour airship hangar', mode: 'keyword', typo_tolerance: false });

    await page.getByRole('tab', { name: 'Overview' }).click();
    await page.getByRole('tab', { name: 'Analytics' }).click();
    const panel = page.getByRole('tabpanel', { name: 'Analytics' });
    const answers = panel.getByTestId('analytics-answers');
    const answerCard = (label: string) => answers.locator('.card').filter({ has: page.locator('.card-label', { hasText: new RegExp(`^${label}$`) }) });
    const figure = async (label: string) => [await answerCard(label).locator('.card-value').textContent(), await answerCard(label).locator('.card-hint').textContent()];
    await answers.getByRole('heading', { name: 'Answers', level: 2 }).waitFor();
    await answerCard('Answers').locator('.card-value').getByText('2', { exact: true }).waitFor();
    expect(await figure('Answers')).toEqual(['2', '0 from the cache']);
    expect(await figure('No-citation rate')).toEqual(['50.0%', 'answers citing no passage']);
    // Only the answer that reached the model spent tokens.
    const { prompt_tokens: prompt, completion_tokens: completion } = FAKE_USAGE;
    expect(await figure('Tokens')).toEqual([String(prompt + completion), `${prompt} prompt, ${completion} completion`]);
    expect(await figure('Feedback')).toEqual(['1 up, 1 down', '2 of 2 answers rated']);
    expect((await figure('Average latency'))[0]).toMatch(/^[\d,]+ ms$/);

    const ratedDown = answers.getByRole('table', { name: 'The latest answers rated down, last 30 days' });
    const downRow = ratedDown.getByRole('row').filter({ hasText: 'zeppelin mooring masts' });
    await downRow.getByRole('cell', { name: 'Nothing about zeppelins.', exact: true }).waitFor();
    expect(await ratedDown.getByRole('row').count()).toBe(2); // the header and the one rated down
    expect(await downRow.getByRole('cell').nth(2).textContent()).not.toBe('—');
    expect(await ratedDown.textContent()).not.toContain('harbour tides');
    expect(await panel.textContent()).not.toContain('neighbour airship hangar');

    // Another range asks again for that range.
    const asked = page.waitForRequest((req) => req.url().includes('/api/admin/analytics/answers?days=7'));
    await panel.getByLabel('Range').selectOption('7');
    await asked;
    await answers.getByRole('table', { name: 'The latest answers rated down, last 7 days' }).waitFor();
    expect(await figure('Answers')).toEqual(['2', '0 from the cache']);
    await panel.getByLabel('Range').selectOption('30');
    await answers.getByRole('table', { name: 'The latest answers rated down, last 30 days' }).waitFor();
    expect(await unlabelledFields(page)).toEqual([]);
    await browser.screenshot(page, 'analytics-answers');

    // The neighbour sees its one answer only, and nothing rated down.
    await page.getByLabel('Tenant', { exact: true }).selectOption(neighbour.id);
    await answers.getByText('No answer was rated down in this range.').waitFor();
    expect(await figure('Answers')).toEqual(['1', '0 from the cache']);
    expect(await figure('No-citation rate')).toEqual(['100.0%', 'answers citing no passage']);
    expect(await figure('Feedback')).toEqual(['0 up, 0 down', '0 of 1 answers rated']);
    expect(await answers.textContent()).not.toContain('zeppelin');
    await page.getByLabel('Tenant', { exact: true }).selectOption(tenant.id);
    await answerCard('Answers').locator('.card-value').getByText('2', { exact: true }).waitFor();
  });

  it('creates an API key with chosen scopes, shows it once with a copy button, lists it, and revokes it after confirmation', async () => {
    // Keyboard: from Analytics two steps right.
    await page.getByRole('tab', { name: 'Analytics' }).focus();
    await page.keyboard.press('ArrowRight');
    await page.keyboard.press('ArrowRight');
    expect(await page.getByRole('tab', { selected: true }).textContent()).toBe('API Keys');
    const panel = page.getByRole('tabpanel', { name: 'API Keys' });

    await panel.getByLabel('Name', { exact: true }).fill('dashboard reader');
    for (const scope of ['documents:read', 'documents:write']) await panel.getByLabel(scope, { exact: true }).uncheck();
    await panel.getByLabel('search', { exact: true }).check();
    await panel.getByLabel('analytics:read', { exact: true }).check();
    await panel.getByRole('button', { name: 'Create key' }).click();

    const shown = panel.getByTestId('created-key');
    const key = (await shown.getByLabel('API key').textContent())!;
    expect(key).toMatch(/^rw_live_[A-Za-z0-9_-]{40}$/);
    await shown.getByRole('button', { name: 'Copy' }).waitFor();
    // The key works, with exactly the scopes ticked.
    await stack.as(key, 'get', '/api/admin/analytics/stats').expect(200);
    await stack.as(key, 'get', '/api/documents').expect(403);

    const listed = (await stack.operator('get', '/api/admin/api-keys?limit=100', tenant.id).expect(200)).body.items.find((item: { name: string }) => item.name === 'dashboard reader');
    expect(listed.scopes).toEqual(['search', 'analytics:read']);
    const usedKey = async () => (await stack.operator('get', '/api/admin/api-keys?limit=100', tenant.id)).body.items.find((item: { id: string }) => item.id === listed.id);
    await waitFor(async () => (await usedKey()).request_count >= 1, { what: 'the key’s requests to be counted' });
    await browser.screenshot(page, 'api-keys-created');

    // After a reload the secret is gone for good; the list shows its prefix, scopes and use.
    await page.reload();
    await page.getByRole('tab', { name: 'API Keys', selected: true }).waitFor();
    const row = panel.getByRole('row').filter({ hasText: 'dashboard reader' });
    await row.waitFor();
    expect(await page.content()).not.toContain(key);
    expect(await panel.getByTestId('created-key').textContent()).toBe('');
    expect(await row.textContent()).toContain(`${listed.prefix}…`);
    expect(key.startsWith(listed.prefix)).toBe(true);
    expect(await row.textContent()).toContain('search, analytics:read');
    expect(await row.getByRole('cell').nth(5).textContent()).toBe(String((await usedKey()).request_count));
    expect(await row.getByRole('cell').nth(4).textContent()).not.toBe('never');
    expect(await unlabelledFields(page)).toEqual([]);
    await browser.screenshot(page, 'api-keys');

    // Dismissing the confirmation keeps the key.
    page.once('dialog', (dialog) => dialog.dismiss());
    await row.getByRole('button', { name: /^Revoke dashboard reader/ }).click();
    await stack.as(key, 'get', '/api/admin/analytics/stats').expect(200);
    page.once('dialog', (dialog) => {
      expect(dialog.message()).toContain(listed.prefix);
      void dialog.accept();
    });
    await row.getByRole('button', { name: /^Revoke dashboard reader/ }).click();
    await row.waitFor({ state: 'detached' });
    await stack.as(key, 'get', '/api/admin/analytics/stats').expect(401);
  });

  it('adds a webhook endpoint (secret shown once), tests it against a real receiver, disables and enables it, shows attempts, replays after a dry-run count, and deletes it', async () => {
    await page.getByRole('tab', { name: 'Webhooks' }).click();
    const panel = page.getByRole('tabpanel', { name: 'Webhooks' });
    await panel.getByLabel('URL').fill(receiver.url('/hook'));
    await panel.getByLabel('Description (optional)').fill('dashboard receiver');
    await panel.getByRole('button', { name: 'Add endpoint' }).click();
    const secret = (await panel.getByTestId('created-endpoint').getByLabel('Signing secret').textContent())!;
    expect(secret).toMatch(/^whsec_/);
    receiver.secrets = [secret];

    const row = () => panel.getByTestId('endpoint-list').getByRole('row').filter({ hasText: receiver.url('/hook') });
    await row().getByText('dashboard receiver').waitFor();
    await row().getByRole('button', { name: 'Send test' }).click();
    const outcome = panel.getByTestId('test-outcome');
    await outcome.getByText('Test delivered').waitFor();
    expect(await outcome.textContent()).toContain('HTTP 200');
    const [test] = await receiver.waitForRequests(1);
    expect(test).toMatchObject({ verified: true, eventType: 'webhook.test', path: '/hook' });
    await row().getByText('100.0% of 1 attempts').waitFor();
    await row().getByText('healthy').waitFor();

    // Disable, and the API agrees; enable again.
    await row().getByRole('button', { name: 'Disable' }).click();
    await row().getByText('disabled', { exact: true }).waitFor();
    expect(await row().getByRole('button', { name: 'Send test' }).isDisabled()).toBe(true);
    const endpointId = (await stack.operator('get', '/api/admin/webhooks', tenant.id).expect(200)).body.items[0].id;
    expect((await stack.operator('get', `/api/admin/webhooks/${endpointId}`, tenant.id).expect(200)).body.enabled).toBe(false);
    await row().getByRole('button', { name: 'Enable' }).click();
    await row().getByRole('button', { name: 'Disable' }).waitFor();
    expect((await stack.operator('get', `/api/admin/webhooks/${endpointId}`, tenant.id).expect(200)).body.enabled).toBe(true);

    // The delivery log, and one delivery's attempts.
    await row().getByRole('button', { name: 'Deliveries' }).click();
    const deliveries = panel.getByTestId('deliveries');
    const testDelivery = deliveries.getByRole('row').filter({ hasText: 'webhook.test' });
    await testDelivery.getByText('succeeded').waitFor();
    await testDelivery.getByRole('button', { name: 'Attempts' }).click();
    const attempts = panel.getByTestId('delivery-attempts');
    const firstAttempt = attempts.getByRole('row').filter({ hasText: 'succeeded' });
    await firstAttempt.waitFor();
    expect(await firstAttempt.getByRole('cell').nth(3).textContent()).toBe('200');
    expect(await firstAttempt.getByRole('cell').nth(6).textContent()).toBe('ok');
    expect(await attempts.getByLabel('The event as sent').textContent()).toContain('"type": "webhook.test"');

    // Replay: the count comes first and sends nothing; then exactly that many arrive.
    const since = new Date(Date.now() - 24 * 3_600_000 + 60_000).toISOString();
    const expected = (await stack.operator('post', `/api/admin/webhooks/${endpointId}/replay`, tenant.id).send({ since, dry_run: true }).expect(200)).body.matched;
    expect(expected).toBeGreaterThanOrEqual(4); // created and indexed, for each of the two documents
    await panel.getByRole('button', { name: 'Count events (dry run)' }).click();
    await panel.getByTestId('replay-count').getByText(`${expected} events in this window`).waitFor();
    expect(receiver.requests).toHaveLength(1);
    await browser.screenshot(page, 'webhooks-replay-count');
    await panel.getByRole('button', { name: `Replay ${expected} events` }).click();
    await panel.getByTestId('replay-count').getByText(`${expected} events queued for replay.`).waitFor();
    const replayed = await receiver.waitForRequests(1 + expected);
    const replayedTypes = replayed.slice(1).map((received) => (received.verified ? received.eventType : 'unverified'));
    expect(replayedTypes.filter((type) => type === 'document.indexed')).toHaveLength(2);
    expect(replayedTypes).not.toContain('webhook.test');
    expect(replayedTypes).not.toContain('unverified');
    await waitFor(
      async () => {
        await panel.getByRole('button', { name: 'Refresh deliveries' }).click();
        const rows = deliveries.getByRole('row').filter({ hasText: 'replay' }).filter({ hasText: 'succeeded' });
        return (await rows.count()) === expected;
      },
      { what: 'the replayed deliveries, delivered, in the log', intervalMs: 250 },
    );
    expect(await unlabelledFields(page)).toEqual([]);
    await browser.screenshot(page, 'webhooks');

    page.once('dialog', (dialog) => dialog.accept());
    await row().getByRole('button', { name: 'Delete…' }).click();
    await panel.getByTestId('endpoint-list').getByText('No endpoints yet.').waitFor();
    expect((await stack.operator('get', '/api/admin/webhooks', tenant.id).expect(200)).body.items).toEqual([]);
  });

  it('shows this process’s request rate, p95 latency, error rates and job throughput, and how to scrape the fleet', async () => {
    // Some 4xx answers among the traffic so far.
    for (let i = 0; i < 3; i += 1) await request(stack.app).get('/api/no-such-route').expect(404);
    const summary = (await stack.operator('get', '/api/admin/metrics/summary').expect(200)).body;
    expect(summary.http.requests).toBeGreaterThan(20);
    expect(summary.http.request_rate_per_second).toBeGreaterThan(0);
    expect(summary.http.p95_latency_ms).toBeGreaterThan(0);
    expect(summary.http.client_error_rate).toBeGreaterThan(0);
    const indexing = summary.queues.find((queue: { queue: string }) => queue.queue === 'indexing');
    expect(indexing.completed).toBeGreaterThanOrEqual(2);

    await page.getByRole('tab', { name: 'Jobs' }).focus();
    await page.keyboard.press('ArrowRight');
    expect(await page.getByRole('tab', { selected: true }).textContent()).toBe('Metrics');
    const panel = page.getByRole('tabpanel', { name: 'Metrics' });
    await panel.getByTestId('metrics-window').getByText(/^This process, over the last \d+ s/).waitFor();
    expect(await cardFigure(page, 'Request rate')).toMatch(/^\d+\.\d\d req\/s$/);
    expect(Number((await cardFigure(page, 'Request rate')).split(' ')[0])).toBeGreaterThan(0);
    expect(Number((await cardFigure(page, 'p95 latency')).split(' ')[0])).toBeGreaterThan(0);
    expect(await cardFigure(page, 'Client errors')).toMatch(/^\d+\.\d%$/);
    expect(await cardFigure(page, 'Client errors')).not.toBe('0.0%');
    expect(await cardFigure(page, 'Server errors')).toBe('0.0%');
    const indexingRow = panel.getByRole('row').filter({ hasText: 'indexing' });
    expect(Number(await indexingRow.getByRole('cell').nth(3).textContent())).toBeGreaterThanOrEqual(2);
    expect(await panel.getByLabel('Prometheus scrape configuration').textContent()).toContain(`targets: ['${new URL(browser.baseUrl).host}']`);
    expect(await panel.textContent()).toContain('ops/grafana/ragworks.json');
    await browser.screenshot(page, 'metrics');
  });

  it('opens each of the four tabs by click and by keyboard', async () => {
    const tabs = [
      ['Analytics', 'Overview', 'Popular queries'],
      ['Webhooks', 'Analytics', 'Endpoints'],
      ['API Keys', 'Webhooks', 'Active keys'],
      ['Metrics', 'Jobs', 'Queue throughput'],
    ] as const;
    for (const [name, before, heading] of tabs) {
      const panel = page.getByRole('tabpanel', { name });
      await page.getByRole('tab', { name: 'Audit' }).click();
      await page.getByRole('tab', { name }).click();
      await panel.getByRole('heading', { name: heading }).waitFor();

      await page.getByRole('tab', { name: before }).click();
      await page.getByRole('tab', { name: before }).focus();
      await page.keyboard.press('ArrowRight');
      await panel.getByRole('heading', { name: heading }).waitFor();
      expect(await page.getByRole('tab', { selected: true }).textContent()).toBe(name);
      expect(await page.locator(':focus').textContent()).toBe(name);
    }
  });

  it('ran every tab without a script error or a breach of the page’s content security policy', () => {
    expect(pageProblems).toEqual([]);
  });
});
