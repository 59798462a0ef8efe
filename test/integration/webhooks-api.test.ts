import type { Response } from 'supertest';
import { Webhook } from 'standardwebhooks';
import { startEmbeddingsProvider, type FakeEmbeddingsProvider } from '../helpers/embeddings-provider';
import { startStack, type TestStack } from '../helpers/harness';
import { waitFor } from '../helpers/wait';
import { startWebhookReceiver, type ReceivedRequest, type WebhookReceiver } from '../helpers/webhook-receiver';

/**
 * The webhooks API (/api/admin/webhooks) against real receivers on
 * 127.0.0.1 that verify every signature with `standardwebhooks`: endpoint
 * management, the event envelope, signing and rotation, test sends, the
 * delivery log, redelivery, replay, SSRF refusal at creation and tenant
 * isolation.
 */

type Tenant = { id: string; slug: string; key: string };

interface EndpointBody {
  id: string;
  url: string;
  description: string | null;
  event_types: string[];
  enabled: boolean;
  disabled_reason: string | null;
  health: { status: string; consecutive_failures: number; last_success_at: string | null };
  previous_secret_expires_at: string | null;
  secret?: string;
}

interface DeliveryBody {
  id: string;
  message_id: string;
  endpoint_id: string;
  event_type: string;
  origin: string;
  status: string;
  attempts: number;
  last_status_code: number | null;
  created_at: string;
}

interface AttemptBody {
  attempt: number;
  outcome: string;
  status_code: number | null;
  duration_ms: number;
  error: string | null;
  response_body: string | null;
}

interface Envelope {
  id: string;
  type: string;
  created_at: string;
  tenant_id: string;
  data: Record<string, unknown>;
}

const VERSION: string = require('../../package.json').version;
const PGLITE_START_TIMEOUT_MS = 120_000;
const EVENT_TYPES = [
  'document.created',
  'document.indexed',
  'document.failed',
  'document.deleted',
  'index_job.completed',
  'index_job.failed',
  'webhook.test',
  'webhook.endpoint_disabled',
];
const UNKNOWN_ID = '01900000-0000-7000-8000-000000000000';

/** Every error is the JSON envelope with a snake_case code and a message. */
function expectError(response: Response, status: number, code: string): void {
  expect(response.status).toBe(status);
  expect(response.headers['content-type']).toMatch(/application\/json/);
  expect(response.body.error).toMatchObject({ code, message: expect.any(String) });
}

/** The bytes after `whsec_`, decoded. */
function secretBytes(secret: string): Buffer {
  expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/);
  return Buffer.from(secret.slice('whsec_'.length), 'base64');
}

function verifies(request: ReceivedRequest, secret: string): boolean {
  try {
    new Webhook(secret).verify(request.rawBody, request.headers);
    return true;
  } catch {
    return false;
  }
}

const receivers: WebhookReceiver[] = [];
async function receiver(): Promise<WebhookReceiver> {
  const started = await startWebhookReceiver();
  receivers.push(started);
  return started;
}

afterAll(async () => {
  await Promise.all(receivers.map((r) => r.close()));
});

describe('with workers, delivering to 127.0.0.1 (postgres)', () => {
  let stack: TestStack;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', env: { WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_REPLAY_PER_SECOND: '5' } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  const hooks = (tenant: Tenant, method: 'get' | 'post' | 'patch' | 'delete', path = '') => stack.as(tenant.key, method, `/api/admin/webhooks${path}`);

  /** Creates an endpoint on `target` and points the receiver's verification at its secret. */
  async function addEndpoint(tenant: Tenant, target: WebhookReceiver, body: Record<string, unknown> = {}): Promise<EndpointBody & { secret: string }> {
    const response = await hooks(tenant, 'post').send({ url: target.url(`/hooks/${tenant.slug}`), ...body }).expect(201);
    target.secrets = [response.body.secret];
    return response.body;
  }

  async function postDocument(tenant: Tenant, body: Record<string, unknown> = {}): Promise<{ id: string; job_id: string; version: number }> {
    const response = await stack
      .as(tenant.key, 'post', '/api/documents')
      .send({ title: 'Harbour tides', content: '# Tides\n\nHigh water comes twice a day at the harbour mouth.', ...body })
      .expect(202);
    return response.body;
  }

  async function listDeliveries(tenant: Tenant, endpointId: string, query = ''): Promise<{ items: DeliveryBody[]; next_cursor: string | null }> {
    return (await hooks(tenant, 'get', `/${endpointId}/deliveries${query}`).expect(200)).body;
  }

  /** Waits until the endpoint's log holds `count` deliveries, all finished; returns them. */
  async function settledDeliveries(tenant: Tenant, endpointId: string, count: number): Promise<DeliveryBody[]> {
    return waitFor(
      async () => {
        const { items } = await listDeliveries(tenant, endpointId, '?limit=100');
        return items.length === count && items.every((d) => d.status !== 'pending') ? items : null;
      },
      { what: `${count} finished deliveries` },
    );
  }

  describe('endpoints', () => {
    it('creates an endpoint with a secret shown once, then reads, changes and deletes it', async () => {
      const tenant = await stack.createTenant();
      const created = await hooks(tenant, 'post')
        .send({ url: 'https://example.com/hooks/ragworks', description: 'Billing', event_types: ['document.indexed', 'document.failed'] })
        .expect(201);
      expect(created.body).toMatchObject({
        id: expect.any(String),
        url: 'https://example.com/hooks/ragworks',
        description: 'Billing',
        event_types: ['document.indexed', 'document.failed'],
        enabled: true,
        disabled_reason: null,
        health: { status: 'healthy', consecutive_failures: 0, last_success_at: null, attempts_24h: 0, success_rate_24h: null },
      });
      const secret: string = created.body.secret;
      const bytes = secretBytes(secret);
      expect(bytes.length).toBeGreaterThanOrEqual(24);
      expect(bytes.length).toBeLessThanOrEqual(64);
      // Usable as-is by a Standard Webhooks library.
      expect(() => new Webhook(secret)).not.toThrow();

      const id: string = created.body.id;
      const read = await hooks(tenant, 'get', `/${id}`).expect(200);
      expect(read.body).not.toHaveProperty('secret');
      expect(JSON.stringify(read.body)).not.toContain(secret.slice(6));
      expect(read.body).toMatchObject({ id, url: 'https://example.com/hooks/ragworks', description: 'Billing' });
      const list = await hooks(tenant, 'get').expect(200);
      expect(list.body.items.map((e: EndpointBody) => e.id)).toEqual([id]);
      expect(list.body.next_cursor).toBeNull();
      expect(JSON.stringify(list.body)).not.toContain(secret.slice(6));
      expect(list.body.items[0]).not.toHaveProperty('secret');

      const patched = await hooks(tenant, 'patch', `/${id}`)
        .send({ url: 'https://example.org/other', description: null, event_types: [], enabled: false })
        .expect(200);
      expect(patched.body).toMatchObject({ id, url: 'https://example.org/other', description: null, event_types: [], enabled: false, health: { status: 'disabled' } });
      expect(patched.body).not.toHaveProperty('secret');
      const reenabled = await hooks(tenant, 'patch', `/${id}`).send({ enabled: true, description: 'Back' }).expect(200);
      expect(reenabled.body).toMatchObject({ enabled: true, disabled_reason: null, description: 'Back', url: 'https://example.org/other', health: { status: 'healthy' } });
      expect((await hooks(tenant, 'get', `/${id}`).expect(200)).body).toMatchObject({ url: 'https://example.org/other', enabled: true, description: 'Back' });

      await hooks(tenant, 'delete', `/${id}`).expect(204);
      expectError(await hooks(tenant, 'get', `/${id}`), 404, 'not_found');
      expectError(await hooks(tenant, 'delete', `/${id}`), 404, 'not_found');
      expectError(await hooks(tenant, 'patch', `/${id}`).send({ enabled: true }), 404, 'not_found');
      expect((await hooks(tenant, 'get').expect(200)).body.items).toEqual([]);
    });

    it('refuses bad input with 400 and stores nothing', async () => {
      const tenant = await stack.createTenant();
      const bad: Array<Record<string, unknown>> = [
        { url: 'ftp://example.com/hook' },
        { url: 'file:///etc/passwd' },
        { url: 'not a url' },
        { url: 'https://example.com/', event_types: ['document.exploded'] },
        { url: 'https://example.com/', event_types: 'document.created' },
        { url: 'https://example.com/', colour: 'blue' },
        { url: 'https://example.com/', enabled: 'yes' },
        { description: 'no url' },
        {},
      ];
      for (const body of bad) expectError(await hooks(tenant, 'post').send(body), 400, 'validation_failed');
      expect((await hooks(tenant, 'get').expect(200)).body.items).toEqual([]);

      const { body: endpoint } = await hooks(tenant, 'post').send({ url: 'https://example.com/' }).expect(201);
      for (const body of [{}, { colour: 'blue' }, { url: 'gopher://example.com/' }, { event_types: ['nope'] }]) {
        expectError(await hooks(tenant, 'patch', `/${endpoint.id}`).send(body), 400, 'validation_failed');
      }
      expect((await hooks(tenant, 'get', `/${endpoint.id}`).expect(200)).body).toMatchObject({ url: 'https://example.com/', event_types: [] });
      expectError(await hooks(tenant, 'get', '/not-a-uuid'), 400, 'validation_failed');
    });

    it('pages the endpoint list with a cursor, newest first', async () => {
      const tenant = await stack.createTenant();
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) ids.push((await hooks(tenant, 'post').send({ url: `https://example.com/${i}` }).expect(201)).body.id);
      const first = (await hooks(tenant, 'get', '?limit=2').expect(200)).body;
      expect(first.items.map((e: EndpointBody) => e.id)).toEqual([ids[2], ids[1]]);
      expect(first.next_cursor).toEqual(expect.any(String));
      const second = (await hooks(tenant, 'get', `?limit=2&cursor=${first.next_cursor}`).expect(200)).body;
      expect(second).toEqual({ items: [expect.objectContaining({ id: ids[0] })], next_cursor: null });
    });

    it('lists every required event type with a description', async () => {
      const tenant = await stack.createTenant();
      const response = await hooks(tenant, 'get', '/event-types').expect(200);
      const types = (response.body.items as Array<{ type: string; description: string }>).map((item) => item.type);
      expect(types).toEqual(expect.arrayContaining(EVENT_TYPES));
      for (const item of response.body.items) expect(item.description).toEqual(expect.any(String));
    });
  });

  describe('events', () => {
    it('delivers document.created, document.indexed and index_job.completed as signed envelopes without the content', async () => {
      const tenant = await stack.createTenant();
      const target = await receiver();
      const endpoint = await addEndpoint(tenant, target);
      const marker = `unmistakable-content-${Date.now()}`;
      const doc = await postDocument(tenant, { content: `# Notes\n\n${marker} and some more words.`, tags: ['tides'] });
      await stack.waitForDocument(tenant.key, doc.id);
      const requests = await target.waitForRequests(3, { timeoutMs: 20_000 });
      expect(requests.map((r) => r.eventType).sort()).toEqual(['document.created', 'document.indexed', 'index_job.completed']);

      const sentAt = Date.now();
      for (const request of requests) {
        expect(request.verified).toBe(true);
        expect(request.method).toBe('POST');
        expect(request.path).toBe(`/hooks/${tenant.slug}`);
        expect(request.headers['content-type']).toMatch(/^application\/json/);
        expect(request.headers['user-agent']).toBe(`ragworks-webhooks/${VERSION}`);
        const body = request.json as Envelope;
        expect(Object.keys(body).sort()).toEqual(['created_at', 'data', 'id', 'tenant_id', 'type']);
        expect(body.tenant_id).toBe(tenant.id);
        expect(new Date(body.created_at).toISOString()).toBe(body.created_at);
        expect(request.headers['webhook-id']).toBe(body.id);
        const timestamp = Number(request.headers['webhook-timestamp']) * 1000;
        expect(Math.abs(timestamp - request.receivedAt)).toBeLessThan(10_000);
        expect(Math.abs(timestamp - sentAt)).toBeLessThan(60_000);
        expect(request.headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
        expect(request.rawBody).not.toContain(marker);
        expect(body.data).not.toHaveProperty('content');
      }
      expect(new Set(requests.map((r) => r.webhookId)).size).toBe(3);

      const byType = (type: string) => requests.find((r) => r.eventType === type)!.json as Envelope;
      expect(byType('document.created').data).toMatchObject({ id: doc.id, status: 'queued', version: 1, tags: ['tides'], job_id: doc.job_id });
      expect(byType('document.indexed').data).toMatchObject({ id: doc.id, status: 'indexed', version: 1 });
      expect(byType('index_job.completed').data).toMatchObject({ job_id: doc.job_id, status: 'completed', documents_total: 1, documents_completed: 1 });

      // Every delivery is logged as succeeded on this endpoint.
      const deliveries = await settledDeliveries(tenant, endpoint.id, 3);
      expect(deliveries.every((d) => d.status === 'succeeded' && d.attempts === 1 && d.last_status_code === 200 && d.origin === 'event')).toBe(true);
      expect(deliveries.map((d) => d.message_id).sort()).toEqual(requests.map((r) => r.webhookId).sort());
    });

    it('keeps the envelope under 20 KB however large the document state is', async () => {
      const tenant = await stack.createTenant();
      const target = await receiver();
      await addEndpoint(tenant, target, { event_types: ['document.created'] });
      const big = await postDocument(tenant, { metadata: { blob: 'm'.repeat(60 * 1024), source: 'scanner' } });
      // Characters JSON writes six bytes wide: 50 tags of 100 come to ~30 KB without any metadata.
      const wide = await postDocument(tenant, { tags: Array.from({ length: 50 }, (_, i) => `${String.fromCharCode(1 + (i % 8))}`.repeat(100)) });
      const requests = await target.waitForRequests(2, { timeoutMs: 20_000 });
      for (const request of requests) {
        expect(request.verified).toBe(true);
        expect(Buffer.byteLength(request.rawBody)).toBeLessThan(20 * 1024);
      }
      const data = (id: string) => (requests.find((r) => (r.json as Envelope).data.id === id)!.json as Envelope).data;
      expect(data(big.id)).toMatchObject({ id: big.id, status: 'queued', version: 1 });
      expect(data(wide.id)).toMatchObject({ id: wide.id, status: 'queued', version: 1 });
    });

    it('sends only subscribed types, and nothing to a disabled endpoint', async () => {
      const tenant = await stack.createTenant();
      const [all, indexedOnly, disabled] = [await receiver(), await receiver(), await receiver()];
      const allEndpoint = await addEndpoint(tenant, all);
      const indexedEndpoint = await addEndpoint(tenant, indexedOnly, { event_types: ['document.indexed'] });
      const disabledEndpoint = await addEndpoint(tenant, disabled, { enabled: false });
      const doc = await postDocument(tenant);
      await stack.waitForDocument(tenant.key, doc.id);
      await all.waitForRequests(3, { timeoutMs: 20_000 });
      const [indexed] = await indexedOnly.waitForRequests(1, { timeoutMs: 20_000 });
      expect(indexed).toMatchObject({ verified: true, eventType: 'document.indexed' });
      // Fan-out made every endpoint's deliveries before the catch-all endpoint got the last of its three.
      await settledDeliveries(tenant, allEndpoint.id, 3);
      expect((await settledDeliveries(tenant, indexedEndpoint.id, 1)).map((d) => d.event_type)).toEqual(['document.indexed']);
      expect((await listDeliveries(tenant, disabledEndpoint.id)).items).toEqual([]);
      expect(indexedOnly.requests).toHaveLength(1);
      expect(disabled.requests).toHaveLength(0);
    });

    it('delivers document.deleted when a document is deleted', async () => {
      const tenant = await stack.createTenant();
      const target = await receiver();
      await addEndpoint(tenant, target, { event_types: ['document.deleted'] });
      const doc = await postDocument(tenant, { title: 'Short-lived' });
      await stack.waitForDocument(tenant.key, doc.id);
      await stack.as(tenant.key, 'delete', `/api/documents/${doc.id}`).expect(204);
      const [deleted] = await target.waitForRequests(1, { timeoutMs: 20_000 });
      expect(deleted.verified).toBe(true);
      expect(deleted.json).toMatchObject({ type: 'document.deleted', tenant_id: tenant.id, data: { id: doc.id, title: 'Short-lived' } });
      expect((deleted.json as Envelope).data).not.toHaveProperty('content');
    });
  });

  describe('secret rotation', () => {
    it('signs with the old and the new secret for the grace period, each verifiable alone', async () => {
      const tenant = await stack.createTenant();
      const target = await receiver();
      const endpoint = await addEndpoint(tenant, target, { event_types: ['document.created'] });
      const oldSecret = endpoint.secret;

      const before = await hooks(tenant, 'post', `/${endpoint.id}/test`).expect(200);
      expect(before.body.status).toBe('succeeded');
      expect(target.requests[0].headers['webhook-signature'].split(' ')).toHaveLength(1);

      const rotated = await hooks(tenant, 'post', `/${endpoint.id}/rotate-secret`).expect(200);
      const newSecret: string = rotated.body.secret;
      expect(newSecret).not.toBe(oldSecret);
      expect(secretBytes(newSecret).length).toBeGreaterThanOrEqual(24);
      const graceEnds = Date.parse(rotated.body.previous_secret_expires_at);
      expect(graceEnds - Date.now()).toBeGreaterThan(23 * 3_600_000);
      expect(graceEnds - Date.now()).toBeLessThanOrEqual(24 * 3_600_000);
      expect((await hooks(tenant, 'get', `/${endpoint.id}`).expect(200)).body).not.toHaveProperty('secret');

      // The next delivery, made by a worker, carries both signatures.
      target.secrets = [];
      await postDocument(tenant);
      const [, delivered] = await target.waitForRequests(2, { timeoutMs: 20_000 });
      const signatures = delivered.headers['webhook-signature'].split(' ');
      expect(signatures).toHaveLength(2);
      for (const signature of signatures) expect(signature).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
      expect(verifies(delivered, oldSecret)).toBe(true);
      expect(verifies(delivered, newSecret)).toBe(true);
      expect(verifies(delivered, `whsec_${Buffer.alloc(32, 9).toString('base64')}`)).toBe(false);

      // A second rotation within the grace period would retire the old secret early: refused, saying when it is allowed.
      const again = await hooks(tenant, 'post', `/${endpoint.id}/rotate-secret`);
      expectError(again, 409, 'conflict');
      expect(again.body.error.details).toEqual({ rotate_again_at: rotated.body.previous_secret_expires_at });
      expect(again.body.error.message).toContain(rotated.body.previous_secret_expires_at);
      expect(JSON.stringify(again.body)).not.toContain('whsec_');
      // Nothing changed: both secrets still sign.
      expect((await hooks(tenant, 'get', `/${endpoint.id}`).expect(200)).body.previous_secret_expires_at).toBe(rotated.body.previous_secret_expires_at);
      await hooks(tenant, 'post', `/${endpoint.id}/test`).expect(200);
      const latest = target.requests[target.requests.length - 1];
      expect(latest.headers['webhook-signature'].split(' ')).toHaveLength(2);
      expect(verifies(latest, newSecret)).toBe(true);
      expect(verifies(latest, oldSecret)).toBe(true);
    });

    it('allows the next rotation once the grace period is over, and it retires the previous secret', async () => {
      const tenant = await stack.createTenant();
      const target = await receiver();
      const endpoint = await addEndpoint(tenant, target);
      const first = await hooks(tenant, 'post', `/${endpoint.id}/rotate-secret`).expect(200);
      // As if the 24 hours had passed.
      const expired = await stack.sql((db) => db('webhook_endpoints').where({ id: endpoint.id }).update({ previous_secret_expires_at: new Date(Date.now() - 1_000) }));
      expect(expired).toBe(1);
      const second = await hooks(tenant, 'post', `/${endpoint.id}/rotate-secret`).expect(200);
      expect(Date.parse(second.body.previous_secret_expires_at) - Date.now()).toBeGreaterThan(23 * 3_600_000);
      await hooks(tenant, 'post', `/${endpoint.id}/test`).expect(200);
      const [sent] = target.requests;
      expect(sent.headers['webhook-signature'].split(' ')).toHaveLength(2);
      expect(verifies(sent, second.body.secret)).toBe(true);
      expect(verifies(sent, first.body.secret)).toBe(true);
      expect(verifies(sent, endpoint.secret)).toBe(false);
      expectError(await hooks(tenant, 'post', `/${UNKNOWN_ID}/rotate-secret`), 404, 'not_found');
    });
  });

  describe('test sends', () => {
    it('returns the attempt of a successful and of a failing test send', async () => {
      const tenant = await stack.createTenant();
      const target = await receiver();
      const endpoint = await addEndpoint(tenant, target);

      const ok = await hooks(tenant, 'post', `/${endpoint.id}/test`).expect(200);
      expect(ok.body).toMatchObject({ endpoint_id: endpoint.id, event_type: 'webhook.test', origin: 'test', status: 'succeeded', attempts: [expect.any(Object)] });
      const [attempt] = ok.body.attempts as AttemptBody[];
      expect(attempt).toMatchObject({ attempt: 1, outcome: 'succeeded', status_code: 200, error: null, response_body: 'ok' });
      expect(attempt.duration_ms).toEqual(expect.any(Number));
      expect(attempt.duration_ms).toBeGreaterThanOrEqual(0);
      expect(target.requests).toHaveLength(1);
      expect(target.requests[0]).toMatchObject({ verified: true, eventType: 'webhook.test', webhookId: ok.body.message_id });
      expect(target.requests[0].json).toMatchObject({ type: 'webhook.test', tenant_id: tenant.id, data: { endpoint_id: endpoint.id } });
      expect(ok.body.event).toEqual(target.requests[0].json);

      target.respond({ status: 500, body: 'e'.repeat(10 * 1024) });
      const failed = await hooks(tenant, 'post', `/${endpoint.id}/test`).expect(200);
      expect(failed.body).toMatchObject({ status: 'failed', last_status_code: 500 });
      const [failedAttempt] = failed.body.attempts as AttemptBody[];
      expect(failedAttempt).toMatchObject({ attempt: 1, outcome: 'failed', status_code: 500, error: expect.stringContaining('500') });
      expect(failedAttempt.response_body).toMatch(/^e+$/);
      expect(Buffer.byteLength(failedAttempt.response_body!)).toBeGreaterThan(0);
      expect(Buffer.byteLength(failedAttempt.response_body!)).toBeLessThanOrEqual(4096);
      expect(target.requests).toHaveLength(2);

      const health = (await hooks(tenant, 'get', `/${endpoint.id}`).expect(200)).body.health;
      expect(health).toMatchObject({ status: 'failing', consecutive_failures: 1, attempts_24h: 2, success_rate_24h: 0.5 });
      expect(health.failing_since).not.toBeNull();

      // The same URL again keeps the streak; a new URL starts afresh (the old address's failures say nothing about it).
      const same = await hooks(tenant, 'patch', `/${endpoint.id}`).send({ url: endpoint.url, description: 'unchanged address' }).expect(200);
      expect(same.body.health).toMatchObject({ status: 'failing', consecutive_failures: 1, failing_since: health.failing_since });
      const moved = await hooks(tenant, 'patch', `/${endpoint.id}`).send({ url: target.url('/moved') }).expect(200);
      expect(moved.body).toMatchObject({ url: target.url('/moved'), enabled: true });
      expect(moved.body.health).toMatchObject({ status: 'healthy', consecutive_failures: 0, failing_since: null });

      // A disabled endpoint is not tested; an unknown one is not found.
      await hooks(tenant, 'patch', `/${endpoint.id}`).send({ enabled: false }).expect(200);
      expectError(await hooks(tenant, 'post', `/${endpoint.id}/test`), 409, 'conflict');
      expectError(await hooks(tenant, 'post', `/${UNKNOWN_ID}/test`), 404, 'not_found');
      expect(target.requests).toHaveLength(2);
    });

    it('logs any response body a receiver sends: binary with NUL bytes, multi-byte text cut at the limit', async () => {
      const tenant = await stack.createTenant();
      const target = await receiver();
      const endpoint = await addEndpoint(tenant, target);
      target.respond(
        { status: 200, headers: { 'Content-Type': 'application/octet-stream' }, body: 'GIF89a\u0000\u0001\u0002binary\u0000tail' },
        { status: 400, body: `${'a'.repeat(4095)}${'é'.repeat(100)}` },
      );
      const binary = await hooks(tenant, 'post', `/${endpoint.id}/test`).expect(200);
      expect(binary.body).toMatchObject({ status: 'succeeded', attempts: [{ outcome: 'succeeded', status_code: 200 }] });
      expect(binary.body.attempts[0].response_body).toMatch(/^GIF89a.*binary.*tail$/s);
      expect(binary.body.attempts[0].response_body).not.toContain('\u0000');

      const text = await hooks(tenant, 'post', `/${endpoint.id}/test`).expect(200);
      expect(text.body).toMatchObject({ status: 'failed', attempts: [{ outcome: 'failed', status_code: 400 }] });
      const stored: string = text.body.attempts[0].response_body;
      expect(Buffer.byteLength(stored)).toBeLessThanOrEqual(4096);
      expect(stored.startsWith('a'.repeat(4095))).toBe(true);
      expect(stored).not.toContain('\ufffd');
    });
  });

  describe('delivery log', () => {
    it('filters by outcome, event type and time, pages with a cursor and shows each delivery in full', async () => {
      const tenant = await stack.createTenant();
      const target = await receiver();
      const endpoint = await addEndpoint(tenant, target);
      for (const title of ['First', 'Second']) {
        const doc = await postDocument(tenant, { title });
        await stack.waitForDocument(tenant.key, doc.id);
      }
      await target.waitForRequests(6, { timeoutMs: 20_000 });
      target.respond({ status: 500, body: 'down for maintenance' });
      const failedTest = (await hooks(tenant, 'post', `/${endpoint.id}/test`).expect(200)).body;
      const all = await settledDeliveries(tenant, endpoint.id, 7);

      const ids = (items: DeliveryBody[]) => items.map((d) => d.id).sort();
      expect(ids((await listDeliveries(tenant, endpoint.id, '?outcome=failed')).items)).toEqual([failedTest.id]);
      expect((await listDeliveries(tenant, endpoint.id, '?outcome=succeeded&limit=100')).items).toHaveLength(6);
      expect((await listDeliveries(tenant, endpoint.id, '?outcome=pending')).items).toEqual([]);
      const created = (await listDeliveries(tenant, endpoint.id, '?event_type=document.created')).items;
      expect(created).toHaveLength(2);
      expect(created.every((d) => d.event_type === 'document.created')).toBe(true);
      expect((await listDeliveries(tenant, endpoint.id, '?event_type=webhook.test&outcome=succeeded')).items).toEqual([]);

      // A window cut from the log's own times: since is inclusive, until exclusive.
      const times = [...new Set(all.map((d) => Date.parse(d.created_at)))].sort((a, b) => a - b);
      expect(times.length).toBeGreaterThanOrEqual(3);
      const since = new Date(times[1]).toISOString();
      const until = new Date(times[times.length - 1]).toISOString();
      const inWindow = all.filter((d) => Date.parse(d.created_at) >= times[1] && Date.parse(d.created_at) < times[times.length - 1]);
      expect(inWindow.length).toBeGreaterThan(0);
      expect(inWindow.length).toBeLessThan(all.length);
      expect(ids((await listDeliveries(tenant, endpoint.id, `?since=${encodeURIComponent(since)}&until=${encodeURIComponent(until)}&limit=100`)).items)).toEqual(ids(inWindow));
      expect(ids((await listDeliveries(tenant, endpoint.id, `?since=${encodeURIComponent(since)}&limit=100`)).items)).toEqual(
        ids(all.filter((d) => Date.parse(d.created_at) >= times[1])),
      );
      for (const query of ['?outcome=delivered', '?event_type=document.exploded', '?since=yesterday', '?limit=0', '?limit=101', '?cursor=not-a-cursor']) {
        expectError(await hooks(tenant, 'get', `/${endpoint.id}/deliveries${query}`), 400, 'validation_failed');
      }

      // Cursor paging visits every delivery once, newest first.
      const paged: DeliveryBody[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const page: { items: DeliveryBody[]; next_cursor: string | null } = await listDeliveries(tenant, endpoint.id, `?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
        expect(page.items.length).toBeLessThanOrEqual(2);
        paged.push(...page.items);
        cursor = page.next_cursor;
        pages += 1;
      } while (cursor && pages < 10);
      expect(pages).toBe(4);
      expect(paged.map((d) => d.id)).toEqual(all.map((d) => d.id));
      expect(new Set(paged.map((d) => d.id)).size).toBe(7);

      // The detail: the envelope as sent and every attempt.
      const one = created[0];
      const detail = (await hooks(tenant, 'get', `/${endpoint.id}/deliveries/${one.id}`).expect(200)).body;
      const sent = target.requests.find((r) => r.webhookId === one.message_id)!;
      expect(detail).toMatchObject({ id: one.id, message_id: one.message_id, event_type: 'document.created', status: 'succeeded', attempts: [{ attempt: 1, outcome: 'succeeded', status_code: 200 }] });
      expect(detail.event).toEqual(sent.json);
      expect(detail.event).toMatchObject({ id: one.message_id, type: 'document.created', tenant_id: tenant.id });
      const failedDetail = (await hooks(tenant, 'get', `/${endpoint.id}/deliveries/${failedTest.id}`).expect(200)).body;
      expect(failedDetail.attempts).toMatchObject([{ outcome: 'failed', status_code: 500, response_body: 'down for maintenance' }]);

      expectError(await hooks(tenant, 'get', `/${endpoint.id}/deliveries/${UNKNOWN_ID}`), 404, 'not_found');
      expectError(await hooks(tenant, 'get', `/${UNKNOWN_ID}/deliveries`), 404, 'not_found');
      expectError(await hooks(tenant, 'get', `/${endpoint.id}/deliveries/nope`), 400, 'validation_failed');
      // A delivery is only found under its own endpoint.
      const other = await addEndpoint(tenant, await receiver(), { url: 'https://example.com/elsewhere' });
      expectError(await hooks(tenant, 'get', `/${other.id}/deliveries/${one.id}`), 404, 'not_found');
    });

    it('redelivers a message as a new delivery with the same webhook-id', async () => {
      const tenant = await stack.createTenant();
      const target = await receiver();
      const endpoint = await addEndpoint(tenant, target, { event_types: ['document.created'] });
      await postDocument(tenant);
      const [first] = await target.waitForRequests(1, { timeoutMs: 20_000 });
      const [original] = await settledDeliveries(tenant, endpoint.id, 1);

      const response = await hooks(tenant, 'post', `/${endpoint.id}/deliveries/${original.id}/redeliver`).expect(202);
      expect(response.body).toMatchObject({ message_id: original.message_id, endpoint_id: endpoint.id, event_type: 'document.created', origin: 'redelivery', attempts: 0 });
      expect(response.body.id).not.toBe(original.id);
      const [, again] = await target.waitForRequests(2, { timeoutMs: 20_000 });
      expect(again.verified).toBe(true);
      expect(again.webhookId).toBe(first.webhookId);
      expect(again.rawBody).toBe(first.rawBody);
      const log = await settledDeliveries(tenant, endpoint.id, 2);
      expect(log.find((d) => d.id === response.body.id)).toMatchObject({ status: 'succeeded', attempts: 1, origin: 'redelivery' });

      expectError(await hooks(tenant, 'post', `/${endpoint.id}/deliveries/${UNKNOWN_ID}/redeliver`), 404, 'not_found');
      await hooks(tenant, 'patch', `/${endpoint.id}`).send({ enabled: false }).expect(200);
      expectError(await hooks(tenant, 'post', `/${endpoint.id}/deliveries/${original.id}/redeliver`), 409, 'conflict');
      expect((await listDeliveries(tenant, endpoint.id)).items).toHaveLength(2);
    });
  });

  describe('replay', () => {
    it('counts in a dry run what a real replay sends, narrows by type and paces the sends', async () => {
      const tenant = await stack.createTenant();
      const target = await receiver();
      const endpoint = await addEndpoint(tenant, target);
      const since = new Date(Date.now() - 1_000).toISOString();
      // Five documents in one batch: 5 created + 5 indexed + 1 index_job.completed.
      const batch = await stack
        .as(tenant.key, 'post', '/api/documents/batch')
        .send({ documents: ['Ash', 'Birch', 'Cedar', 'Damson', 'Elm'].map((title) => ({ title, content: `# ${title}\n\nA tree called ${title}.` })) })
        .expect(202);
      for (const doc of batch.body.items) await stack.waitForDocument(tenant.key, doc.id);
      const originals = await target.waitForRequests(11, { timeoutMs: 20_000 });
      await settledDeliveries(tenant, endpoint.id, 11);
      // The test event is never replayed.
      await hooks(tenant, 'post', `/${endpoint.id}/test`).expect(200);
      const replay = (body: Record<string, unknown>) => hooks(tenant, 'post', `/${endpoint.id}/replay`).send(body);

      expect((await replay({ since, dry_run: true }).expect(200)).body).toMatchObject({ matched: 11, enqueued: 0 });
      const trees = ['document.created', 'document.indexed'];
      expect((await replay({ since, event_types: trees, dry_run: true }).expect(200)).body).toMatchObject({ matched: 10, enqueued: 0 });
      // Dry runs create no deliveries.
      expect((await listDeliveries(tenant, endpoint.id, '?limit=100')).items).toHaveLength(12);

      const real = await replay({ since, event_types: trees }).expect(200);
      expect(real.body).toMatchObject({ matched: 10, enqueued: 10 });
      const afterReplay = await target.waitForRequests(12 + 10, { timeoutMs: 30_000 });
      const replayed = afterReplay.slice(12);
      expect(replayed.every((r) => r.verified && trees.includes(r.eventType!))).toBe(true);
      const originalIds = (types: string[]) => originals.filter((r) => types.includes(r.eventType!)).map((r) => r.webhookId).sort();
      expect(replayed.map((r) => r.webhookId).sort()).toEqual(originalIds(trees));
      // Five a second: ten sends spread over about two seconds, not all at once.
      const times = replayed.map((r) => r.receivedAt);
      // Unpaced, all ten would land within a few hundred milliseconds; the bound leaves room for a busy machine.
      expect(Math.max(...times) - Math.min(...times)).toBeGreaterThanOrEqual(1_200);

      const jobs = await replay({ since, event_types: ['index_job.completed'] }).expect(200);
      expect(jobs.body).toMatchObject({ matched: 1, enqueued: 1 });
      const all = await target.waitForRequests(23, { timeoutMs: 20_000 });
      expect(all[22]).toMatchObject({ eventType: 'index_job.completed', webhookId: originalIds(['index_job.completed'])[0] });
      const log = await settledDeliveries(tenant, endpoint.id, 12 + 11);
      expect(log.filter((d) => d.origin === 'replay' && d.status === 'succeeded')).toHaveLength(11);
      expect(target.requests).toHaveLength(23);

      // A window in the future matches nothing.
      expect((await replay({ since: new Date(Date.now() + 3_600_000).toISOString() }).expect(200)).body).toMatchObject({ matched: 0, enqueued: 0 });
    });

    it('refuses a window whose end is not after its start, also across time zones', async () => {
      const tenant = await stack.createTenant();
      const endpoint = await addEndpoint(tenant, await receiver());
      const replay = (body: Record<string, unknown>) => hooks(tenant, 'post', `/${endpoint.id}/replay`).send(body);
      expectError(await replay({ since: '2030-01-01T10:00:00Z', until: '2030-01-01T10:00:00Z' }), 400, 'validation_failed');
      expectError(await replay({ since: '2030-01-01T10:00:00Z', until: '2030-01-01T09:00:00Z' }), 400, 'validation_failed');
      // 11:00+02:00 is 09:00Z: before since, although it sorts after it as text.
      expectError(await replay({ since: '2030-01-01T10:00:00Z', until: '2030-01-01T11:00:00+02:00' }), 400, 'validation_failed');
      // 09:00-02:00 is 11:00Z: after since, although it sorts before it as text.
      expect((await replay({ since: '2030-01-01T10:00:00Z', until: '2030-01-01T09:00:00-02:00', dry_run: true }).expect(200)).body).toMatchObject({ matched: 0 });
      for (const body of [{}, { since: 'yesterday' }, { since: '2030-01-01T10:00:00Z', event_types: ['nope'] }, { since: '2030-01-01T10:00:00Z', extra: 1 }]) {
        expectError(await replay(body), 400, 'validation_failed');
      }
      expectError(await hooks(tenant, 'post', `/${UNKNOWN_ID}/replay`).send({ since: '2030-01-01T10:00:00Z' }), 404, 'not_found');
    });
  });

  describe('tenant isolation and access', () => {
    it("keeps a tenant's endpoints, deliveries and events away from every other tenant", async () => {
      const a = await stack.createTenant();
      const b = await stack.createTenant();
      const [receiverA, receiverB] = [await receiver(), await receiver()];
      const endpointA = await addEndpoint(a, receiverA);
      const endpointB = await addEndpoint(b, receiverB);
      const doc = await postDocument(a);
      await stack.waitForDocument(a.key, doc.id);
      await receiverA.waitForRequests(3, { timeoutMs: 20_000 });
      const [deliveryA] = await settledDeliveries(a, endpointA.id, 3);

      const asB = (method: 'get' | 'post' | 'patch' | 'delete', path: string) => hooks(b, method, path);
      expectError(await asB('get', `/${endpointA.id}`), 404, 'not_found');
      expectError(await asB('patch', `/${endpointA.id}`).send({ enabled: false }), 404, 'not_found');
      expectError(await asB('delete', `/${endpointA.id}`), 404, 'not_found');
      expectError(await asB('post', `/${endpointA.id}/test`), 404, 'not_found');
      expectError(await asB('post', `/${endpointA.id}/rotate-secret`), 404, 'not_found');
      expectError(await asB('get', `/${endpointA.id}/deliveries`), 404, 'not_found');
      expectError(await asB('get', `/${endpointA.id}/deliveries/${deliveryA.id}`), 404, 'not_found');
      expectError(await asB('get', `/${endpointB.id}/deliveries/${deliveryA.id}`), 404, 'not_found');
      expectError(await asB('post', `/${endpointA.id}/deliveries/${deliveryA.id}/redeliver`), 404, 'not_found');
      expectError(await asB('post', `/${endpointB.id}/deliveries/${deliveryA.id}/redeliver`), 404, 'not_found');
      expectError(await asB('post', `/${endpointA.id}/replay`).send({ since: '2000-01-01T00:00:00Z' }), 404, 'not_found');
      expect((await asB('get', '').expect(200)).body.items.map((e: EndpointBody) => e.id)).toEqual([endpointB.id]);
      // B's replay only ever sees B's events: there are none.
      expect((await asB('post', `/${endpointB.id}/replay`).send({ since: '2000-01-01T00:00:00Z', dry_run: true }).expect(200)).body).toMatchObject({ matched: 0 });

      // A's endpoint is untouched, its secret unchanged, nothing more was sent to it.
      const still = (await hooks(a, 'get', `/${endpointA.id}`).expect(200)).body;
      expect(still).toMatchObject({ enabled: true, previous_secret_expires_at: null });
      expect(receiverA.requests).toHaveLength(3);
      expect(receiverA.requests.every((r) => r.verified)).toBe(true);

      // The operator names the tenant.
      await stack.operator('get', `/api/admin/webhooks/${endpointA.id}`, a.id).expect(200);
      await stack.operator('get', `/api/admin/webhooks/${endpointA.id}/deliveries`, a.slug).expect(200);
      expectError(await stack.operator('get', `/api/admin/webhooks/${endpointA.id}`, b.id), 404, 'not_found');
      expect((await stack.operator('get', '/api/admin/webhooks', a.id).expect(200)).body.items.map((e: EndpointBody) => e.id)).toEqual([endpointA.id]);
      const byOperator = await stack.operator('post', '/api/admin/webhooks', b.id).send({ url: 'https://example.com/operator' }).expect(201);
      expect((await asB('get', `/${byOperator.body.id}`).expect(200)).body.url).toBe('https://example.com/operator');

      // A's events never reached B: fan-out for A's events is complete, and B has no deliveries.
      expect((await listDeliveries(b, endpointB.id)).items).toEqual([]);
      expect(receiverB.requests).toHaveLength(0);
    });

    it('requires the webhooks:manage scope', async () => {
      const tenant = await stack.createTenant();
      const reader = await stack.operator('post', '/api/admin/api-keys', tenant.id).send({ name: 'reader', scopes: ['documents:read', 'documents:write', 'search'] }).expect(201);
      const manager = await stack.operator('post', '/api/admin/api-keys', tenant.id).send({ name: 'hooks', scopes: ['webhooks:manage'] }).expect(201);
      const endpoint = await stack.as(manager.body.key, 'post', '/api/admin/webhooks').send({ url: 'https://example.com/h' }).expect(201);
      for (const [method, path] of [
        ['get', ''],
        ['post', ''],
        ['get', '/event-types'],
        ['get', `/${endpoint.body.id}`],
        ['post', `/${endpoint.body.id}/rotate-secret`],
        ['get', `/${endpoint.body.id}/deliveries`],
        ['delete', `/${endpoint.body.id}`],
      ] as const) {
        expectError(await stack.as(reader.body.key, method, `/api/admin/webhooks${path}`).send(method === 'post' ? { url: 'https://example.com/x' } : undefined), 403, 'forbidden');
      }
      expect((await stack.as(manager.body.key, 'get', '/api/admin/webhooks').expect(200)).body.items).toHaveLength(1);
      expectError(await stack.operator('get', '/api/admin/webhooks'), 400, 'validation_failed');
    });
  });
});

describe('without private targets, with endpoint quotas (postgres, no workers)', () => {
  let stack: TestStack;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', workers: false });
  });
  afterAll(async () => {
    await stack?.close();
  });

  const hooks = (tenant: Tenant, method: 'get' | 'post' | 'patch', path = '') => stack.as(tenant.key, method, `/api/admin/webhooks${path}`);

  /** A tenant whose webhook_endpoints quota the operator has set to two. */
  async function tenantWithTwoEndpoints(): Promise<Tenant> {
    const tenant = await stack.createTenant();
    const patched = await stack.operator('patch', `/api/admin/tenants/${tenant.id}`).send({ quotas: { webhook_endpoints: 2 } }).expect(200);
    expect(patched.body.quotas.webhook_endpoints).toBe(2);
    return tenant;
  }

  it.each([
    'http://127.0.0.1/',
    'http://localhost/',
    'http://10.0.0.1/',
    'http://172.16.0.1/',
    'http://192.168.1.1/',
    'http://169.254.169.254/',
    'http://[::1]/',
    'http://[::ffff:127.0.0.1]/',
    'http://[::127.0.0.1]/',
    'http://100.64.0.1/',
    'ftp://example.com/',
  ])('refuses %s with 400 and stores nothing', async (url) => {
    const tenant = await stack.createTenant();
    const response = await hooks(tenant, 'post').send({ url });
    expectError(response, 400, 'validation_failed');
    expect(`${response.body.error.message} ${JSON.stringify(response.body.error.details ?? '')}`).toMatch(/url/i);
    expect((await hooks(tenant, 'get').expect(200)).body.items).toEqual([]);
  });

  it('refuses a change to a private URL and keeps the old one', async () => {
    const tenant = await stack.createTenant();
    const { body: endpoint } = await hooks(tenant, 'post').send({ url: 'https://example.com/hook' }).expect(201);
    expectError(await hooks(tenant, 'patch', `/${endpoint.id}`).send({ url: 'http://169.254.169.254/latest/meta-data/' }), 400, 'validation_failed');
    expect((await hooks(tenant, 'get', `/${endpoint.id}`).expect(200)).body.url).toBe('https://example.com/hook');
  });

  it('accepts a public URL without connecting to it', async () => {
    const tenant = await stack.createTenant();
    await hooks(tenant, 'post').send({ url: 'https://example.com/hook' }).expect(201);
    // A name that cannot resolve: creation does not look it up.
    await hooks(tenant, 'post').send({ url: 'https://hooks.ragworks.invalid/in' }).expect(201);
    expect((await hooks(tenant, 'get').expect(200)).body.items).toHaveLength(2);
  });

  it('refuses a third endpoint with 403 quota_exceeded, and frees the slot on delete', async () => {
    const tenant = await tenantWithTwoEndpoints();
    const first = await hooks(tenant, 'post').send({ url: 'https://example.com/1' }).expect(201);
    await hooks(tenant, 'post').send({ url: 'https://example.com/2' }).expect(201);
    const third = await hooks(tenant, 'post').send({ url: 'https://example.com/3' });
    expectError(third, 403, 'quota_exceeded');
    expect(third.body.error.details).toEqual({ quota: 'webhook_endpoints', limit: 2, used: 2 });
    expect((await hooks(tenant, 'get').expect(200)).body.items).toHaveLength(2);
    await stack.as(tenant.key, 'delete', `/api/admin/webhooks/${first.body.id}`).expect(204);
    await hooks(tenant, 'post').send({ url: 'https://example.com/3' }).expect(201);
    // Each tenant has its own quota.
    const other = await tenantWithTwoEndpoints();
    await hooks(other, 'post').send({ url: 'https://example.com/1' }).expect(201);
    await hooks(other, 'post').send({ url: 'https://example.com/2' }).expect(201);
  });

  it("holds a free tenant to its tier's one endpoint", async () => {
    const tenant = await stack.createTenant(undefined, 'free');
    await hooks(tenant, 'post').send({ url: 'https://example.com/1' }).expect(201);
    const second = await hooks(tenant, 'post').send({ url: 'https://example.com/2' });
    expectError(second, 403, 'quota_exceeded');
    expect(second.body.error.details).toEqual({ quota: 'webhook_endpoints', limit: 1, used: 1 });
    expect((await hooks(tenant, 'get').expect(200)).body.items).toHaveLength(1);
  });

  it('records a batch\'s document.created events in bulk: one insert per slice, not one per document', async () => {
    const subscribed = await stack.createTenant();
    await hooks(subscribed, 'post').send({ url: 'https://example.com/hook', event_types: ['document.created'] }).expect(201);
    const unsubscribed = await stack.createTenant();
    const knex = stack.platform.db.knex;
    // Every statement this process sends that inserts events, by tenant.
    const inserts = new Map<string, number>();
    const onQuery = (query: { sql: string; bindings?: unknown[] }) => {
      if (!/^insert into "?webhook_events"?/i.test(query.sql)) return;
      for (const tenant of [subscribed, unsubscribed]) {
        if (query.bindings?.includes(tenant.id)) inserts.set(tenant.id, (inserts.get(tenant.id) ?? 0) + 1);
      }
    };
    knex.on('query', onQuery);
    const documents = Array.from({ length: 250 }, (_, i) => ({ title: `Note ${i}`, content: `# Note ${i}\n\nWords ${i}.` }));
    try {
      for (const tenant of [subscribed, unsubscribed]) await stack.as(tenant.key, 'post', '/api/documents/batch').send({ documents }).expect(202);
    } finally {
      knex.off('query', onQuery);
    }
    // 250 events in slices of 200: two statements per batch.
    expect(inserts.get(subscribed.id)).toBe(2);
    expect(inserts.get(unsubscribed.id)).toBe(2);

    const events = async (tenantId: string) =>
      stack.sql((db) => db('webhook_events').select('id', 'type', 'payload', 'fanned_out_at').where({ tenant_id: tenantId })) as Promise<
        Array<{ id: string; type: string; payload: Envelope; fanned_out_at: Date | null }>
      >;
    const documentIds = async (key: string) => {
      const ids: string[] = [];
      let cursor: string | null = null;
      do {
        const page: { body: { items: Array<{ id: string }>; next_cursor: string | null } } = await stack.as(key, 'get', `/api/documents?limit=100${cursor ? `&cursor=${cursor}` : ''}`).expect(200);
        ids.push(...page.body.items.map((item) => item.id));
        cursor = page.body.next_cursor;
      } while (cursor);
      return ids.sort();
    };
    for (const tenant of [subscribed, unsubscribed]) {
      const stored = await events(tenant.id);
      // One envelope per document, each naming its own document, as recordEvent would store it.
      expect(stored).toHaveLength(250);
      expect(stored.every((event) => event.type === 'document.created' && event.payload.id === event.id && event.payload.tenant_id === tenant.id)).toBe(true);
      expect(stored.map((event) => event.payload.data.id as string).sort()).toEqual(await documentIds(tenant.key));
      expect(stored[0].payload.data).toMatchObject({ status: 'queued', version: 1 });
      expect(stored[0].payload.data).not.toHaveProperty('content');
    }
    // Only the tenant with an enabled endpoint has events left to fan out.
    expect((await events(subscribed.id)).every((event) => event.fanned_out_at === null)).toBe(true);
    expect((await events(unsubscribed.id)).every((event) => event.fanned_out_at !== null)).toBe(true);
  });

  it('never lets concurrent creations pass the quota', async () => {
    const tenant = await tenantWithTwoEndpoints();
    const responses = await Promise.all(Array.from({ length: 5 }, (_, i) => hooks(tenant, 'post').send({ url: `https://example.com/${i}` })));
    expect(responses.filter((r) => r.status === 201)).toHaveLength(2);
    const refused = responses.filter((r) => r.status !== 201);
    expect(refused).toHaveLength(3);
    for (const response of refused) expectError(response, 403, 'quota_exceeded');
    expect((await hooks(tenant, 'get').expect(200)).body.items).toHaveLength(2);
  });
});

describe('with an embeddings provider that refuses input (pglite)', () => {
  let stack: TestStack;
  let provider: FakeEmbeddingsProvider;

  beforeAll(async () => {
    provider = await startEmbeddingsProvider({ dimensions: 384, model: 'test-embedder', rejects: (input) => input.some((text) => text.includes('POISON')) });
    stack = await startStack({ database: 'pglite', env: { ...provider.env, EMBEDDINGS_MAX_RETRIES: '0', WEBHOOK_ALLOW_PRIVATE: 'true' } });
  }, PGLITE_START_TIMEOUT_MS);
  afterAll(async () => {
    await stack?.close();
    await provider?.close();
  });

  it('delivers document.failed and index_job.failed when indexing fails', async () => {
    const tenant = await stack.createTenant();
    const target = await receiver();
    const created = await stack.as(tenant.key, 'post', '/api/admin/webhooks').send({ url: target.url('/failures'), event_types: ['document.failed', 'index_job.failed'] }).expect(201);
    target.secrets = [created.body.secret];
    const doc = (await stack.as(tenant.key, 'post', '/api/documents').send({ title: 'Bad batch', content: '# POISON\n\nThe provider refuses this text.' }).expect(202)).body;
    await stack.waitForDocument(tenant.key, doc.id, 'failed');
    const requests = await target.waitForRequests(2, { timeoutMs: 30_000 });
    expect(requests.every((r) => r.verified)).toBe(true);
    const failed = requests.find((r) => r.eventType === 'document.failed')!.json as Envelope;
    expect(failed).toMatchObject({ tenant_id: tenant.id, data: { id: doc.id, status: 'failed', version: 1, error: expect.stringMatching(/400/) } });
    expect(failed.data).not.toHaveProperty('content');
    const jobFailed = requests.find((r) => r.eventType === 'index_job.failed')!.json as Envelope;
    expect(jobFailed.data).toMatchObject({ job_id: doc.job_id, status: 'failed', documents_failed: 1 });
  });
});
