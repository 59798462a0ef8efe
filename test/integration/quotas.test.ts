import request from 'supertest';
import { secondsUntilNextUtcDay } from '../../src/domain/tenants/daily-quota';
import { startStack, type TestStack } from '../helpers/harness';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver';
import { waitFor } from '../helpers/wait';

type Tenant = Awaited<ReturnType<TestStack['createTenant']>>;

function expectQuotaError(response: request.Response, status: 403 | 429, quota: string, limit: number, used: number): void {
  expect(response.status).toBe(status);
  expect(response.body.error).toMatchObject({ code: 'quota_exceeded', message: expect.any(String), details: { quota, limit, used } });
}

const note = (index: number, bytes = 20) => ({ title: `Note ${index}`, content: `n${index} `.padEnd(bytes, 'x') });

/** Tallies the statuses of many responses: `{202: 20, 403: 30}`. */
const statuses = (responses: request.Response[]) =>
  responses.reduce<Record<number, number>>((tally, response) => ({ ...tally, [response.status]: (tally[response.status] ?? 0) + 1 }), {});

describe('quotas (postgres)', () => {
  let stack: TestStack;

  beforeAll(async () => {
    // No workers: quotas are checked before any work starts, and indexing would only slow the batches down.
    stack = await startStack({ database: 'postgres', workers: false });
  });
  afterAll(async () => {
    await stack?.close();
  });

  const overrideQuotas = (tenant: Tenant, quotas: Record<string, number | 'unlimited' | null>) =>
    stack.operator('patch', `/api/admin/tenants/${tenant.id}`).send({ quotas }).expect(200);
  const documentCount = async (tenant: Tenant) => Number((await stack.sql((db) => db('documents').where({ tenant_id: tenant.id }).count('* as n').first()))?.n);

  describe('tiers and overrides', () => {
    it('gives each tier its limits and applies overrides at once', async () => {
      const tenant = await stack.createTenant(undefined, 'free');
      const free = await stack.operator('get', `/api/admin/tenants/${tenant.id}`).expect(200);
      expect(free.body).toMatchObject({
        tier: 'free',
        quota_overrides: {},
        quotas: { documents: 100, storage_mb: 100, searches_per_day: 1000, answers_per_day: 50, api_keys: 2, webhook_endpoints: 1 },
        retention_days: 7,
      });
      const standard = await stack.operator('patch', `/api/admin/tenants/${tenant.id}`).send({ tier: 'standard' }).expect(200);
      expect(standard.body.quotas).toEqual({ documents: 10_000, storage_mb: 10_240, searches_per_day: 100_000, answers_per_day: 5_000, api_keys: 10, webhook_endpoints: 5 });
      expect(standard.body.retention_days).toBe(90);
      const enterprise = await stack.operator('patch', `/api/admin/tenants/${tenant.id}`).send({ tier: 'enterprise', quotas: { api_keys: 3, documents: 'unlimited' } }).expect(200);
      expect(enterprise.body.quotas).toEqual({ documents: null, storage_mb: 1_048_576, searches_per_day: 10_000_000, answers_per_day: 500_000, api_keys: 3, webhook_endpoints: 50 });
      expect(enterprise.body.quota_overrides).toEqual({ api_keys: 3, documents: 'unlimited' });
      // null removes one override and leaves the other.
      const back = await stack.operator('patch', `/api/admin/tenants/${tenant.id}`).send({ quotas: { documents: null } }).expect(200);
      expect(back.body.quota_overrides).toEqual({ api_keys: 3 });
      expect(back.body.quotas.documents).toBe(1_000_000);
      const unlimited = await stack.operator('patch', `/api/admin/tenants/${tenant.id}`).send({ tier: 'unlimited', quotas: { api_keys: null } }).expect(200);
      expect(unlimited.body.quotas).toEqual({ documents: null, storage_mb: null, searches_per_day: null, answers_per_day: null, api_keys: null, webhook_endpoints: null });
      expect(unlimited.body.retention_days).toBeNull();
    });

    it('keeps every override when operators change different quotas at the same moment', async () => {
      const tenant = await stack.createTenant(undefined, 'free');
      const changes = [{ documents: 11 }, { storage_mb: 12 }, { searches_per_day: 13 }, { answers_per_day: 16 }, { api_keys: 14 }, { webhook_endpoints: 15 }];
      await Promise.all(changes.map((quotas) => stack.operator('patch', `/api/admin/tenants/${tenant.id}`).send({ quotas }).expect(200)));
      const after = await stack.operator('get', `/api/admin/tenants/${tenant.id}`).expect(200);
      expect(after.body.quota_overrides).toEqual({ documents: 11, storage_mb: 12, searches_per_day: 13, answers_per_day: 16, api_keys: 14, webhook_endpoints: 15 });
    });

    it('refuses malformed overrides with 400 and changes nothing', async () => {
      const tenant = await stack.createTenant(undefined, 'free');
      for (const quotas of [{ documents: -1 }, { documents: 1.5 }, { documents: 'lots' }, { bananas: 3 }, { documents: '5' }]) {
        const response = await stack.operator('patch', `/api/admin/tenants/${tenant.id}`).send({ quotas });
        expect(response.status).toBe(400);
        expect(response.body.error.code).toBe('validation_failed');
      }
      const after = await stack.operator('get', `/api/admin/tenants/${tenant.id}`).expect(200);
      expect(after.body.quota_overrides).toEqual({});
    });
  });

  describe('documents', () => {
    it('passes at limit − 1 and refuses at the limit with 403, for single documents and batches (free tier: 100)', async () => {
      const tenant = await stack.createTenant(undefined, 'free');
      await stack.as(tenant.key, 'post', '/api/documents/batch').send({ documents: Array.from({ length: 99 }, (_, index) => note(index)) }).expect(202);
      await stack.as(tenant.key, 'post', '/api/documents').send(note(99)).expect(202);
      expectQuotaError(await stack.as(tenant.key, 'post', '/api/documents').send(note(100)), 403, 'documents', 100, 100);
      expect(await documentCount(tenant)).toBe(100);

      // Deleting one frees one place; a batch of two then is one too many, as a whole.
      const page = await stack.as(tenant.key, 'get', '/api/documents?limit=1').expect(200);
      await stack.as(tenant.key, 'delete', `/api/documents/${page.body.items[0].id}`).expect(204);
      expectQuotaError(await stack.as(tenant.key, 'post', '/api/documents/batch').send({ documents: [note(200), note(201)] }), 403, 'documents', 100, 99);
      expect(await documentCount(tenant)).toBe(99);
      await stack.as(tenant.key, 'post', '/api/documents/batch').send({ documents: [note(202)] }).expect(202);
      expect(await documentCount(tenant)).toBe(100);
    });

    it('admits exactly the limit out of 50 concurrent creations', async () => {
      const tenant = await stack.createTenant(undefined, 'free');
      await overrideQuotas(tenant, { documents: 20 });
      const responses = await Promise.all(Array.from({ length: 50 }, (_, index) => stack.as(tenant.key, 'post', '/api/documents').send(note(index))));
      expect(statuses(responses)).toEqual({ 202: 20, 403: 30 });
      expect(await documentCount(tenant)).toBe(20);
    });
  });

  describe('storage', () => {
    it('counts content bytes on create and on update, passing at the limit and refusing beyond it', async () => {
      const tenant = await stack.createTenant(undefined, 'free');
      await overrideQuotas(tenant, { storage_mb: 1 });
      const mb = 1024 * 1024;
      const big = await stack.as(tenant.key, 'post', '/api/documents').send({ title: 'Big', content: 'a'.repeat(mb - 10) }).expect(202);
      await stack.as(tenant.key, 'post', '/api/documents').send({ title: 'Small', content: 'b'.repeat(10) }).expect(202);
      const refused = await stack.as(tenant.key, 'post', '/api/documents').send({ title: 'One more byte', content: 'c' });
      expectQuotaError(refused, 403, 'storage_mb', 1, 1);
      expect(await documentCount(tenant)).toBe(2);

      // Growing a document past the limit is refused and keeps the old content; shrinking is always allowed.
      expectQuotaError(await stack.as(tenant.key, 'patch', `/api/documents/${big.body.id}`).send({ content: 'a'.repeat(mb) }), 403, 'storage_mb', 1, 1);
      expect((await stack.as(tenant.key, 'get', `/api/documents/${big.body.id}`).expect(200)).body.content_bytes).toBe(mb - 10);
      await stack.as(tenant.key, 'patch', `/api/documents/${big.body.id}`).send({ content: 'a'.repeat(1000) }).expect(202);
      await stack.as(tenant.key, 'post', '/api/documents').send({ title: 'Fits now', content: 'c'.repeat(10_000) }).expect(202);
      const usage = await stack.sql((db) => db('tenant_usage').first('documents', 'storage_bytes').where({ tenant_id: tenant.id }));
      expect(usage).toEqual({ documents: 3, storage_bytes: 1000 + 10 + 10_000 });
    });

    it('admits exactly what fits out of 50 concurrent creations', async () => {
      const tenant = await stack.createTenant(undefined, 'free');
      await overrideQuotas(tenant, { storage_mb: 1 });
      // 50 KiB each: 20 fit in 1 MiB.
      const responses = await Promise.all(Array.from({ length: 50 }, (_, index) => stack.as(tenant.key, 'post', '/api/documents').send(note(index, 50 * 1024))));
      expect(statuses(responses)).toEqual({ 202: 20, 403: 30 });
      expect(await stack.sql((db) => db('tenant_usage').first('storage_bytes').where({ tenant_id: tenant.id }))).toEqual({ storage_bytes: 20 * 50 * 1024 });
    });
  });

  describe('searches per UTC day', () => {
    it('passes at limit − 1, refuses at the limit with 429 and Retry-After until the next UTC midnight', async () => {
      const tenant = await stack.createTenant(undefined, 'free');
      await overrideQuotas(tenant, { searches_per_day: 5 });
      for (let index = 0; index < 5; index += 1) await stack.as(tenant.key, 'post', '/api/search').send({ query: 'tides', mode: 'keyword' }).expect(200);
      const refused = await stack.as(tenant.key, 'get', '/api/search?q=tides&mode=keyword');
      expectQuotaError(refused, 429, 'searches_per_day', 5, 5);
      const retryAfter = Number(refused.headers['retry-after']);
      const expected = secondsUntilNextUtcDay(new Date());
      expect(retryAfter).toBeGreaterThanOrEqual(expected - 5);
      expect(retryAfter).toBeLessThanOrEqual(expected);
      // A larger override applies to the very next search.
      await overrideQuotas(tenant, { searches_per_day: 6 });
      await stack.as(tenant.key, 'post', '/api/search').send({ query: 'tides', mode: 'keyword' }).expect(200);
      expect((await stack.as(tenant.key, 'post', '/api/search').send({ query: 'tides', mode: 'keyword' })).status).toBe(429);
    });

    it('does not count a search that failed', async () => {
      const tenant = await stack.createTenant(undefined, 'free');
      await overrideQuotas(tenant, { searches_per_day: 1 });
      // No pgvector on this server: semantic search answers 501 and must not use up the allowance.
      await stack.as(tenant.key, 'post', '/api/search').send({ query: 'tides', mode: 'semantic' }).expect(501);
      await stack.as(tenant.key, 'post', '/api/search').send({ query: 'tides', mode: 'keyword' }).expect(200);
    });

    it('admits exactly the limit out of 50 concurrent searches', async () => {
      const tenant = await stack.createTenant(undefined, 'free');
      await overrideQuotas(tenant, { searches_per_day: 20 });
      const responses = await Promise.all(Array.from({ length: 50 }, () => stack.as(tenant.key, 'post', '/api/search').send({ query: 'tides', mode: 'keyword' })));
      expect(statuses(responses)).toEqual({ 200: 20, 429: 30 });
    });
  });

  describe('API keys', () => {
    const createKey = (tenant: Tenant, name = 'k') => stack.operator('post', '/api/admin/api-keys', tenant.id).send({ name });

    it('counts active keys: limit − 1 passes, the limit is refused, a revoked key frees its place (free tier: 2)', async () => {
      // createTenant already made one key.
      const tenant = await stack.createTenant(undefined, 'free');
      const second = await createKey(tenant).expect(201);
      expectQuotaError(await createKey(tenant), 403, 'api_keys', 2, 2);
      await stack.operator('delete', `/api/admin/api-keys/${second.body.id}`, tenant.id).expect(204);
      await createKey(tenant).expect(201);
    });

    it('does not count an expired key', async () => {
      const tenant = await stack.createTenant(undefined, 'free');
      await stack.operator('post', '/api/admin/api-keys', tenant.id).send({ name: 'brief', expires_at: new Date(Date.now() + 1_000).toISOString() }).expect(201);
      expectQuotaError(await createKey(tenant), 403, 'api_keys', 2, 2);
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      await createKey(tenant).expect(201);
    });

    it('admits exactly the limit out of 50 concurrent creations (no slack)', async () => {
      const tenant = await stack.createTenant(undefined, 'free');
      await overrideQuotas(tenant, { api_keys: 10 });
      const responses = await Promise.all(Array.from({ length: 50 }, (_, index) => createKey(tenant, `k${index}`)));
      expect(statuses(responses)).toEqual({ 201: 9, 403: 41 });
      const active = await stack.sql((db) => db('api_keys').where({ tenant_id: tenant.id }).whereNull('revoked_at').count('* as n').first());
      expect(Number(active?.n)).toBe(10);
    });
  });

  describe('webhook endpoints', () => {
    const createEndpoint = (tenant: Tenant, index = 0) =>
      stack.operator('post', '/api/admin/webhooks', tenant.id).send({ url: `https://hooks-${index}.example.com/in` });

    it('passes at limit − 1 and refuses at the limit (free tier: 1)', async () => {
      const tenant = await stack.createTenant(undefined, 'free');
      await createEndpoint(tenant, 0).expect(201);
      expectQuotaError(await createEndpoint(tenant, 1), 403, 'webhook_endpoints', 1, 1);
    });

    it('admits exactly the limit out of 50 concurrent creations (no slack)', async () => {
      const tenant = await stack.createTenant(undefined, 'free');
      await overrideQuotas(tenant, { webhook_endpoints: 7 });
      const responses = await Promise.all(Array.from({ length: 50 }, (_, index) => createEndpoint(tenant, index)));
      expect(statuses(responses)).toEqual({ 201: 7, 403: 43 });
    });
  });
});

describe('the quota.exceeded event (postgres, with workers and a real receiver)', () => {
  let stack: TestStack;
  let receiver: WebhookReceiver;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', env: { WEBHOOK_ALLOW_PRIVATE: 'true' } });
    receiver = await startWebhookReceiver();
  });
  afterAll(async () => {
    await receiver?.close();
    await stack?.close();
  });

  it('is sent at most once per quota and UTC day, however often the quota refuses', async () => {
    const tenant = await stack.createTenant(undefined, 'free');
    const endpoint = await stack.as(tenant.key, 'post', '/api/admin/webhooks').send({ url: receiver.url('/quota'), event_types: ['quota.exceeded'] }).expect(201);
    receiver.secrets = [endpoint.body.secret];
    await stack.operator('patch', `/api/admin/tenants/${tenant.id}`).send({ quotas: { searches_per_day: 1, documents: 0 } }).expect(200);

    await stack.as(tenant.key, 'post', '/api/search').send({ query: 'tides', mode: 'keyword' }).expect(200);
    for (let index = 0; index < 3; index += 1) {
      expect((await stack.as(tenant.key, 'post', '/api/search').send({ query: 'tides', mode: 'keyword' })).status).toBe(429);
      expect((await stack.as(tenant.key, 'post', '/api/documents').send(note(index))).status).toBe(403);
    }
    const requests = await receiver.waitForRequests(2, { timeoutMs: 20_000 });
    const day = new Date().toISOString().slice(0, 10);
    expect(requests.every((received) => received.verified && received.eventType === 'quota.exceeded')).toBe(true);
    expect(requests.map((received) => (received.json as { data: { quota: string } }).data).sort((x: { quota: string }, y: { quota: string }) => x.quota.localeCompare(y.quota))).toEqual([
      { quota: 'documents', limit: 0, used: 0, day },
      { quota: 'searches_per_day', limit: 1, used: 1, day },
    ]);
    // Give a third delivery every chance to show up before saying there is none.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(receiver.requests).toHaveLength(2);
    const stored = await stack.sql((db) => db('webhook_events').where({ tenant_id: tenant.id, type: 'quota.exceeded' }).count('* as n').first());
    expect(Number(stored?.n)).toBe(2);
    await waitFor(async () => (await stack.as(tenant.key, 'get', `/api/admin/webhooks/${endpoint.body.id}/deliveries`)).body.items?.length === 2, { what: 'two deliveries' });
  });
});
