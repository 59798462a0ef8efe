import { randomBytes } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import net from 'node:net';
import os from 'node:os';
import ipaddr from 'ipaddr.js';
import type { Knex } from 'knex';
import { withTenant } from '../../src/db/tenant-scope';
import { webhooksQueue } from '../../queues';
import { attemptDelivery, fanOut, findStuckWebhookWork, getDelivery, replay, type DeliveryDeps } from '../../src/domain/webhooks/deliveries';
import { createEndpoint, deleteEndpoint } from '../../src/domain/webhooks/endpoints';
import { recordEvent, type EventSink } from '../../src/domain/webhooks/events';
import { sendSigned, type SendResult } from '../../src/domain/webhooks/sender';
import { TIER_QUOTAS } from '../../src/domain/tenants/quotas';
import { startStack, type TestStack } from '../helpers/harness';
import { waitFor } from '../helpers/wait';
import { startWebhookReceiver, type ReceivedRequest, type WebhookReceiver } from '../helpers/webhook-receiver';

// Deliveries here go through real retries on a seconds-long schedule; waits are on conditions.
jest.setTimeout(60_000);

type Tenant = { id: string; slug: string; key: string };
type Method = 'get' | 'post' | 'patch' | 'delete';

interface Attempt {
  attempt: number;
  outcome: 'succeeded' | 'failed';
  status_code: number | null;
  duration_ms: number;
  error: string | null;
  response_body: string | null;
  created_at: string;
}
interface Delivery {
  id: string;
  message_id: string;
  endpoint_id: string;
  event_type: string;
  origin: string;
  status: 'pending' | 'succeeded' | 'failed' | 'canceled';
  attempts: number;
  last_status_code: number | null;
  last_error: string | null;
  next_attempt_at: string | null;
  delivered_at: string | null;
}
interface DeliveryDetail extends Omit<Delivery, 'attempts'> {
  event: { id: string; type: string; tenant_id: string; data: Record<string, unknown> };
  attempts: Attempt[];
}
interface EndpointView {
  id: string;
  enabled: boolean;
  disabled_reason: string | null;
  health: { status: string; consecutive_failures: number; failing_since: string | null; last_success_at: string | null; last_failure_at: string | null };
}

/** Receivers opened by a test, closed after it whatever happens. */
const receivers: WebhookReceiver[] = [];
async function receiver(): Promise<WebhookReceiver> {
  const opened = await startWebhookReceiver();
  receivers.push(opened);
  return opened;
}
afterEach(async () => {
  await Promise.all(receivers.splice(0).map((opened) => opened.close()));
});

/** The calls a tenant makes, bound to one stack and one tenant's key. */
function client(stack: TestStack, tenant: Tenant) {
  const call = (method: Method, url: string) => stack.as(tenant.key, method, url);
  const api = {
    id: tenant.id,
    /** Creates an endpoint and points the receiver's signature check at its secret. */
    async endpoint(target: WebhookReceiver | string, eventTypes: string[] = ['document.created'], path = '/hook') {
      const url = typeof target === 'string' ? target : target.url(path);
      const response = await call('post', '/api/admin/webhooks').send({ url, event_types: eventTypes }).expect(201);
      expect(response.body.secret).toMatch(/^whsec_/);
      if (typeof target !== 'string') target.secrets = [response.body.secret];
      return { id: response.body.id as string, secret: response.body.secret as string };
    },
    async getEndpoint(id: string): Promise<EndpointView> {
      return (await call('get', `/api/admin/webhooks/${id}`).expect(200)).body;
    },
    /** Posts one small document; its `document.created` event is what gets delivered. */
    async postDocument(title = 'A note'): Promise<string> {
      const response = await call('post', '/api/documents').send({ title, content: `# ${title}\n\nSome words about lighthouses.` }).expect(202);
      return response.body.id;
    },
    async deliveries(endpointId: string): Promise<Delivery[]> {
      return (await call('get', `/api/admin/webhooks/${endpointId}/deliveries`).expect(200)).body.items;
    },
    async delivery(endpointId: string, deliveryId: string): Promise<DeliveryDetail> {
      return (await call('get', `/api/admin/webhooks/${endpointId}/deliveries/${deliveryId}`).expect(200)).body;
    },
    /** The endpoint's only delivery, once `done` says it has reached the wanted state. */
    async waitForDelivery(endpointId: string, done: (delivery: Delivery) => boolean, what: string, timeoutMs = 30_000): Promise<Delivery> {
      return waitFor(
        async () => {
          const items = await api.deliveries(endpointId);
          if (items.length > 1) throw new Error(`expected one delivery, found ${items.length}`);
          return items[0] && done(items[0]) ? items[0] : null;
        },
        { what, timeoutMs, intervalMs: 100 },
      );
    },
    call,
  };
  return api;
}

/** A Prometheus sample's value from /metrics text (0 when the series is absent). */
function sample(metrics: string, series: string): number {
  const line = metrics.split('\n').find((candidate) => candidate.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

const webhookIds = (requests: ReceivedRequest[]) => [...new Set(requests.map((request) => request.webhookId))];

describe('webhook delivery (private targets allowed, schedule 0,1,1,1,1 s)', () => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await startStack({
      database: 'postgres',
      env: {
        WEBHOOK_ALLOW_PRIVATE: 'true',
        WEBHOOK_RETRY_SCHEDULE: '0,1,1,1,1',
        WEBHOOK_TIMEOUT_MS: '2000',
        WEBHOOK_ENDPOINT_CONCURRENCY: '1',
        WORKER_CONCURRENCY: '4',
      },
    });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('receiver down, then up: failed attempts log the connection error, the last one succeeds', async () => {
    const tenant = client(stack, await stack.createTenant());
    const down = await receiver();
    await down.down();
    const endpoint = await tenant.endpoint(down);
    await tenant.postDocument();

    await tenant.waitForDelivery(endpoint.id, (delivery) => delivery.attempts >= 2, 'two failed attempts while the receiver is down');
    await down.up();
    const delivered = await tenant.waitForDelivery(endpoint.id, (delivery) => delivery.status !== 'pending', 'the delivery to finish');
    expect(delivered).toMatchObject({ status: 'succeeded', last_status_code: 200, last_error: null, next_attempt_at: null });

    const detail = await tenant.delivery(endpoint.id, delivered.id);
    const failed = detail.attempts.slice(0, -1);
    expect(failed.length).toBeGreaterThanOrEqual(2);
    for (const attempt of failed) {
      expect(attempt).toMatchObject({ outcome: 'failed', status_code: null });
      expect(attempt.error).toMatch(/ECONNREFUSED|ECONNRESET/);
    }
    expect(detail.attempts.at(-1)).toMatchObject({ outcome: 'succeeded', status_code: 200, error: null, response_body: 'ok' });
    expect(detail.attempts.map((attempt) => attempt.attempt)).toEqual(detail.attempts.map((_, index) => index + 1));

    // The one request that got through is signed and names the stored message.
    expect(down.requests).toHaveLength(1);
    const [received] = down.requests;
    expect(received).toMatchObject({ method: 'POST', path: '/hook', verified: true, webhookId: detail.message_id, eventType: 'document.created' });
    expect(received.headers['content-type']).toBe('application/json');
    expect(received.headers['user-agent']).toMatch(/^ragworks-webhooks\//);
    expect(received.json).toEqual(detail.event);
  });

  it('500 three times, then 200: delivered on the 4th attempt, every attempt logged, health back to healthy', async () => {
    const tenant = client(stack, await stack.createTenant());
    const flaky = await receiver();
    flaky.respond({ status: 500, body: 'boom 1' }, { status: 500, body: 'boom 2' }, { status: 500, body: 'boom 3' });
    const endpoint = await tenant.endpoint(flaky);
    await tenant.postDocument();

    // Half-way, the endpoint's health shows the streak.
    await waitFor(async () => (await tenant.getEndpoint(endpoint.id)).health.consecutive_failures >= 2, { what: 'a failure streak' });
    const failing = await tenant.getEndpoint(endpoint.id);
    expect(failing.health).toMatchObject({ status: 'failing' });
    expect(failing.health.failing_since).not.toBeNull();

    const delivered = await tenant.waitForDelivery(endpoint.id, (delivery) => delivery.status !== 'pending', 'the delivery to finish');
    expect(delivered).toMatchObject({ status: 'succeeded', attempts: 4, last_status_code: 200, next_attempt_at: null });
    const detail = await tenant.delivery(endpoint.id, delivered.id);
    expect(detail.attempts.map(({ attempt, outcome, status_code, error, response_body }) => ({ attempt, outcome, status_code, error, response_body }))).toEqual([
      { attempt: 1, outcome: 'failed', status_code: 500, error: 'HTTP 500', response_body: 'boom 1' },
      { attempt: 2, outcome: 'failed', status_code: 500, error: 'HTTP 500', response_body: 'boom 2' },
      { attempt: 3, outcome: 'failed', status_code: 500, error: 'HTTP 500', response_body: 'boom 3' },
      { attempt: 4, outcome: 'succeeded', status_code: 200, error: null, response_body: 'ok' },
    ]);
    for (const attempt of detail.attempts) expect(attempt.duration_ms).toBeGreaterThanOrEqual(0);

    // Every attempt carried the same message id and a valid signature.
    expect(flaky.requests).toHaveLength(4);
    expect(webhookIds(flaky.requests)).toEqual([detail.message_id]);
    expect(flaky.requests.every((request) => request.verified)).toBe(true);

    const healthy = await tenant.getEndpoint(endpoint.id);
    expect(healthy.health).toMatchObject({ status: 'healthy', consecutive_failures: 0, failing_since: null });
    expect(healthy.health.last_success_at).not.toBeNull();
  });

  it('429 with Retry-After: 2 waits about 2 s although the schedule says 1 s, and shows next_attempt_at meanwhile', async () => {
    const tenant = client(stack, await stack.createTenant());
    const limited = await receiver();
    limited.respond({ status: 429, headers: { 'Retry-After': '2' }, body: 'slow down' });
    const endpoint = await tenant.endpoint(limited);
    await tenant.postDocument();

    const waiting = await tenant.waitForDelivery(
      endpoint.id,
      (delivery) => delivery.status === 'pending' && delivery.attempts === 1 && delivery.next_attempt_at !== null,
      'the delivery to wait for its retry',
    );
    expect(waiting).toMatchObject({ last_status_code: 429 });
    const firstAttempt = (await tenant.delivery(endpoint.id, waiting.id)).attempts[0];
    expect(Date.parse(waiting.next_attempt_at!) - Date.parse(firstAttempt.created_at)).toBeGreaterThanOrEqual(1_800);

    const delivered = await tenant.waitForDelivery(endpoint.id, (delivery) => delivery.status !== 'pending', 'the delivery to finish');
    expect(delivered).toMatchObject({ status: 'succeeded', attempts: 2, next_attempt_at: null });
    expect(limited.requests).toHaveLength(2);
    expect(limited.requests[1].receivedAt - limited.requests[0].receivedAt).toBeGreaterThanOrEqual(1_800);
    expect(webhookIds(limited.requests)).toEqual([delivered.message_id]);
  });

  it('410 disables the endpoint at once, tells the tenant\'s other endpoint, and PATCH enabled:true brings it back', async () => {
    const tenant = client(stack, await stack.createTenant());
    const goneReceiver = await receiver();
    goneReceiver.defaultResponse = { status: 410, body: 'gone' };
    const watcherReceiver = await receiver();
    const gone = await tenant.endpoint(goneReceiver);
    const watcher = await tenant.endpoint(watcherReceiver, ['webhook.endpoint_disabled']);
    const disabledCount = async () => sample((await stack.operator('get', '/metrics').expect(200)).text, 'ragworks_webhook_endpoints_disabled_total');
    const disabledBefore = await disabledCount();
    await tenant.postDocument();

    const [notice] = await watcherReceiver.waitForRequests(1);
    expect(notice).toMatchObject({ verified: true, eventType: 'webhook.endpoint_disabled' });
    const noticeData = (notice.json as { data: { endpoint_id: string; url: string; reason: string } }).data;
    expect(noticeData).toMatchObject({ endpoint_id: gone.id, url: goneReceiver.url('/hook') });
    expect(noticeData.reason).toMatch(/410/);

    const disabled = await tenant.getEndpoint(gone.id);
    expect(disabled).toMatchObject({ enabled: false, health: { status: 'disabled' } });
    expect(disabled.disabled_reason).toMatch(/410/);

    // One attempt, and its job is finished for good: nothing will try again.
    const [delivery] = await tenant.deliveries(gone.id);
    expect(delivery).toMatchObject({ status: 'failed', attempts: 1, last_status_code: 410 });
    // The worker fails the job (and counts the disabling) just after the attempt is stored: wait for it.
    const job = await waitFor(
      async () => {
        const found = await stack.platform.queues.queue(webhooksQueue.name).getJob(`${delivery.message_id}-${gone.id}`);
        return found && (await found.getState()) === 'failed' ? found : null;
      },
      { what: 'the 410 delivery job to be failed' },
    );
    expect(job.attemptsMade).toBe(1);
    expect(goneReceiver.requests).toHaveLength(1);
    await waitFor(async () => (await disabledCount()) === disabledBefore + 1, { what: 'ragworks_webhook_endpoints_disabled_total to count the endpoint' });
    // The watcher logged the notice as a delivery of its own (stored just after the receiver answered).
    await waitFor(
      async () => {
        const items = await tenant.deliveries(watcher.id);
        return items.length === 1 && items[0].event_type === 'webhook.endpoint_disabled' && items[0].status === 'succeeded';
      },
      { what: 'the watcher\'s delivery of the notice to be logged as succeeded' },
    );

    const enabled = await tenant.call('patch', `/api/admin/webhooks/${gone.id}`).send({ enabled: true }).expect(200);
    expect(enabled.body).toMatchObject({ enabled: true, disabled_reason: null, health: { status: 'healthy', consecutive_failures: 0 } });
    goneReceiver.defaultResponse = { status: 204 };
    await tenant.postDocument('After re-enabling');
    const [, again] = await goneReceiver.waitForRequests(2);
    expect(again).toMatchObject({ verified: true, eventType: 'document.created' });
    expect(again.webhookId).not.toBe(delivery.message_id);
    await waitFor(async () => (await tenant.deliveries(gone.id)).some((item) => item.status === 'succeeded'), { what: 'the new delivery to succeed' });
  });

  it('a receiver slower than WEBHOOK_TIMEOUT_MS: the attempt fails with a timeout and the retry succeeds', async () => {
    const tenant = client(stack, await stack.createTenant());
    const slow = await receiver();
    slow.respond({ status: 200, delayMs: 4_000 });
    const endpoint = await tenant.endpoint(slow);
    await tenant.postDocument();

    const delivered = await tenant.waitForDelivery(endpoint.id, (delivery) => delivery.status !== 'pending', 'the delivery to finish');
    expect(delivered).toMatchObject({ status: 'succeeded', attempts: 2 });
    const detail = await tenant.delivery(endpoint.id, delivered.id);
    expect(detail.attempts[0]).toMatchObject({ outcome: 'failed', status_code: null });
    expect(detail.attempts[0].error).toMatch(/no response within 2000 ms/);
    expect(detail.attempts[1]).toMatchObject({ outcome: 'succeeded', status_code: 200 });
    expect(webhookIds(await slow.waitForRequests(2))).toEqual([delivered.message_id]);
  });

  it('a redirect is not followed: the attempt fails naming the redirect and the other receiver gets nothing', async () => {
    const tenant = client(stack, await stack.createTenant());
    const redirecting = await receiver();
    const elsewhere = await receiver();
    elsewhere.secrets = [`whsec_${randomBytes(32).toString('base64')}`];
    const target = elsewhere.url('/stolen');
    redirecting.respond({ status: 302, headers: { Location: target } });
    const endpoint = await tenant.endpoint(redirecting);
    await tenant.postDocument();

    const delivered = await tenant.waitForDelivery(endpoint.id, (delivery) => delivery.status !== 'pending', 'the delivery to finish');
    expect(delivered).toMatchObject({ status: 'succeeded', attempts: 2 });
    const [first] = (await tenant.delivery(endpoint.id, delivered.id)).attempts;
    expect(first).toMatchObject({ outcome: 'failed', status_code: 302 });
    expect(first.error).toMatch(/redirect/i);
    expect(first.error).toContain(target);
    expect(redirecting.requests).toHaveLength(2);
    expect(elsewhere.requests).toHaveLength(0);
  });

  it('fairness: a slow endpoint holds one worker at a time and a fast endpoint\'s deliveries are not held up behind it', async () => {
    const tenant = client(stack, await stack.createTenant());
    const slowReceiver = await receiver();
    slowReceiver.defaultResponse = { status: 200, delayMs: 750 };
    const fastReceiver = await receiver();
    const slow = await tenant.endpoint(slowReceiver);
    const fast = await tenant.endpoint(fastReceiver);
    const documents = Array.from({ length: 8 }, (_, n) => ({ title: `Note ${n}`, content: `# Note ${n}\n\nWords ${n}.` }));
    await tenant.call('post', '/api/documents/batch').send({ documents }).expect(202);

    const fastRequests = await fastReceiver.waitForRequests(8);
    const slowRequests = await slowReceiver.waitForRequests(8, { timeoutMs: 45_000 });
    expect(slowReceiver.maxInFlight).toBe(1);
    expect(Math.max(...fastRequests.map((request) => request.receivedAt))).toBeLessThan(Math.max(...slowRequests.map((request) => request.receivedAt)));
    // Each endpoint got every event once, and both logs say so.
    expect(new Set(webhookIds(fastRequests)).size).toBe(8);
    expect(new Set(webhookIds(slowRequests)).size).toBe(8);
    for (const endpointId of [slow.id, fast.id]) {
      await waitFor(async () => (await tenant.deliveries(endpointId)).filter((item) => item.status === 'succeeded').length === 8, {
        what: 'eight succeeded deliveries',
      });
    }
  });

  it('metrics: attempts by outcome, the attempt duration histogram and the backlog gauge', async () => {
    const metrics = (await stack.operator('get', '/metrics').expect(200)).text;
    // The tests above delivered, retried and lost an endpoint to 410.
    expect(sample(metrics, 'ragworks_webhook_attempts_total{outcome="delivered"}')).toBeGreaterThan(0);
    expect(sample(metrics, 'ragworks_webhook_attempts_total{outcome="retry"}')).toBeGreaterThan(0);
    expect(sample(metrics, 'ragworks_webhook_attempts_total{outcome="gone"}')).toBe(1);
    expect(sample(metrics, 'ragworks_webhook_attempt_duration_seconds_count{outcome="delivered"}')).toBe(
      sample(metrics, 'ragworks_webhook_attempts_total{outcome="delivered"}'),
    );
    expect(metrics).toMatch(/^ragworks_webhook_attempt_duration_seconds_bucket\{le="\+Inf",outcome="delivered"\} \d+$/m);
    expect(metrics).toMatch(/^ragworks_webhook_backlog \d+$/m);
  });
});

describe('auto-disable after WEBHOOK_DISABLE_AFTER_HOURS of failures (0.0005 h = 1.8 s)', () => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await startStack({
      database: 'postgres',
      env: { WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_RETRY_SCHEDULE: '0,1,1,1,1', WEBHOOK_DISABLE_AFTER_HOURS: '0.0005' },
    });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('an endpoint that only fails is disabled once its streak passes the threshold, and the other endpoint hears of it', async () => {
    const tenant = client(stack, await stack.createTenant());
    const brokenReceiver = await receiver();
    brokenReceiver.defaultResponse = { status: 500, body: 'down for maintenance' };
    const watcherReceiver = await receiver();
    const broken = await tenant.endpoint(brokenReceiver);
    await tenant.endpoint(watcherReceiver, ['webhook.endpoint_disabled']);
    const metric = async () => sample((await stack.operator('get', '/metrics').expect(200)).text, 'ragworks_webhook_endpoints_disabled_total');
    const disabledBefore = await metric();
    await tenant.postDocument();

    const [notice] = await watcherReceiver.waitForRequests(1);
    expect(notice).toMatchObject({ verified: true, eventType: 'webhook.endpoint_disabled' });
    const noticeData = (notice.json as { data: { endpoint_id: string; reason: string; failing_since: string } }).data;
    expect(noticeData.endpoint_id).toBe(broken.id);
    expect(noticeData.reason).toMatch(/0\.0005 hours/);

    const disabled = await tenant.getEndpoint(broken.id);
    expect(disabled).toMatchObject({ enabled: false, health: { status: 'disabled' } });
    expect(disabled.disabled_reason).toMatch(/failed for 0\.0005 hours/);
    // Counted by the worker just after the attempt is stored.
    await waitFor(async () => (await metric()) === disabledBefore + 1, { what: 'ragworks_webhook_endpoints_disabled_total to count the endpoint' });

    // It took at least two failed attempts and 1.8 s of failing to get there.
    const delivery = await tenant.waitForDelivery(broken.id, (item) => item.status !== 'pending', 'the broken endpoint\'s delivery to stop');
    const detail = await tenant.delivery(broken.id, delivery.id);
    expect(detail.attempts.length).toBeGreaterThanOrEqual(2);
    expect(detail.attempts.every((attempt) => attempt.outcome === 'failed' && attempt.status_code === 500)).toBe(true);
    expect(Date.parse(detail.attempts.at(-1)!.created_at) - Date.parse(detail.attempts[0].created_at)).toBeGreaterThanOrEqual(1_500);
    // The attempt that disabled the endpoint ends its delivery: it is not tried again.
    expect(delivery.status).toBe('failed');
    expect(brokenReceiver.requests).toHaveLength(detail.attempts.length);
    expect(webhookIds(brokenReceiver.requests)).toEqual([delivery.message_id]);
  });
});

describe('retries exhausted (schedule 0,1,1 s)', () => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', env: { WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_RETRY_SCHEDULE: '0,1,1' } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('three failed attempts fail the delivery and its BullMQ job', async () => {
    const tenant = client(stack, await stack.createTenant());
    const broken = await receiver();
    broken.defaultResponse = { status: 500 };
    const endpoint = await tenant.endpoint(broken);
    await tenant.postDocument();

    const failed = await tenant.waitForDelivery(endpoint.id, (delivery) => delivery.status !== 'pending', 'the delivery to give up');
    expect(failed).toMatchObject({ status: 'failed', attempts: 3, last_status_code: 500, next_attempt_at: null, delivered_at: null });
    const detail = await tenant.delivery(endpoint.id, failed.id);
    expect(detail.attempts.map((attempt) => [attempt.attempt, attempt.status_code])).toEqual([
      [1, 500],
      [2, 500],
      [3, 500],
    ]);
    expect(broken.requests).toHaveLength(3);

    const jobId = `${failed.message_id}-${endpoint.id}`;
    const jobs = await waitFor(
      async () => {
        const response = await stack.operator('get', '/api/admin/jobs?queue=webhooks&state=failed').expect(200);
        return (response.body.items as Array<{ id: string }>).some((job) => job.id === jobId) ? response.body.items : null;
      },
      { what: 'the failed webhooks job' },
    );
    const job = jobs.find((item: { id: string }) => item.id === jobId);
    expect(job).toMatchObject({ queue: 'webhooks', state: 'failed', tenant_id: tenant.id, attempts_made: 3 });
    expect(job.failed_reason).toMatch(/HTTP 500/);
    // A gave-up endpoint is only failing, not disabled (the threshold is days away).
    expect(await tenant.getEndpoint(endpoint.id)).toMatchObject({ enabled: true, health: { status: 'failing', consecutive_failures: 3 } });
  });
});

/** A host name other than `localhost` that this machine resolves to a loopback address, for the connect-time check. */
async function loopbackName(): Promise<string> {
  const candidates = [os.hostname(), 'localhost.'];
  for (const name of candidates) {
    const addresses = await lookup(name, { all: true }).catch(() => []);
    if (addresses.length > 0 && addresses.every((address) => ipaddr.process(address.address).range() === 'loopback')) return name;
  }
  throw new Error(`none of ${candidates.join(', ')} resolves to loopback here; the DNS-based SSRF case needs one`);
}

describe('SSRF defence at connect time (private targets refused)', () => {
  let stack: TestStack;
  beforeAll(async () => {
    // Only the synchronous test send is used: no workers needed.
    stack = await startStack({ database: 'postgres', workers: false, env: { WEBHOOK_ALLOW_PRIVATE: 'false' } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('a URL whose host name resolves to loopback passes creation but its test send is refused before connecting', async () => {
    const tenant = client(stack, await stack.createTenant());
    const target = await receiver();
    const name = await loopbackName();
    const endpoint = await tenant.endpoint(`http://${name}:${target.port}/hook`);

    const response = await tenant.call('post', `/api/admin/webhooks/${endpoint.id}/test`).expect(200);
    expect(response.body).toMatchObject({ event_type: 'webhook.test', status: 'failed', attempts: [{ attempt: 1, outcome: 'failed', status_code: null }] });
    // The log names the configured host only, never the address the name resolved to (internal DNS answers stay private).
    expect(response.body.attempts[0].error).toBe(`refused: ${name} does not resolve to a public address`);
    expect(response.body.attempts[0].error).not.toMatch(/127\.|::1|family/);
    expect(target.requests).toHaveLength(0);
    // The same literal address is refused outright when the endpoint is created.
    const refused = await tenant.call('post', '/api/admin/webhooks').send({ url: target.url('/hook') }).expect(400);
    expect(refused.body.error).toMatchObject({ code: 'validation_failed' });
  });

  it('sendSigned refuses loopback, private, link-local and metadata addresses unless allowPrivate', async () => {
    const target = await receiver();
    const secret = `whsec_${randomBytes(32).toString('base64')}`;
    target.secrets = [secret];
    const send = (url: string, allowPrivate: boolean) =>
      sendSigned({ url, messageId: 'msg_ssrf', body: '{"type":"webhook.test"}', secrets: [secret], userAgent: 'ragworks-webhooks/test', timeoutMs: 2_000, allowPrivate, propagateTrace: false });

    const refusedUrls = [
      `http://127.0.0.1:${target.port}/`,
      `http://[::1]:${target.port}/`,
      `http://[::ffff:127.0.0.1]:${target.port}/`,
      // IPv4-compatible IPv6 (::/96): the filter would take it for a public unicast address.
      `http://[::127.0.0.1]:${target.port}/`,
      `http://localhost:${target.port}/`,
      `http://${await loopbackName()}:${target.port}/`,
      'http://10.0.0.1/',
      'http://172.16.0.1/',
      'http://192.168.1.1/',
      'http://169.254.169.254/latest/meta-data/',
    ];
    const outcomes = await Promise.all(refusedUrls.map(async (url) => ({ url, result: await send(url, false) })));
    for (const { url, result } of outcomes) {
      expect({ url, ok: result.ok, statusCode: result.statusCode, error: result.error }).toEqual({
        url,
        ok: false,
        statusCode: null,
        error: `refused: ${new URL(url).hostname} does not resolve to a public address`,
      });
    }
    expect(target.requests).toHaveLength(0);

    const allowed = await send(`http://127.0.0.1:${target.port}/`, true);
    expect(allowed).toMatchObject({ ok: true, statusCode: 200, error: null, responseBody: 'ok' });
    expect(target.requests).toHaveLength(1);
    expect(target.requests[0]).toMatchObject({ verified: true, webhookId: 'msg_ssrf' });
  });

  it('a URL that would redirect to a loopback receiver reaches neither: refused at connect time, and redirects are never followed', async () => {
    // No public server can be reached offline, so the first hop is a name that resolves to loopback; both layers are shown.
    const target = await receiver();
    const redirecting = await receiver();
    redirecting.defaultResponse = { status: 307, headers: { Location: target.url('/internal') } };
    const send = (url: string, allowPrivate: boolean) =>
      sendSigned({ url, messageId: 'msg_redirect', body: '{}', secrets: [`whsec_${randomBytes(32).toString('base64')}`], userAgent: 'ragworks-webhooks/test', timeoutMs: 2_000, allowPrivate, propagateTrace: false });
    const name = await loopbackName();

    const refused = await send(`http://${name}:${redirecting.port}/hook`, false);
    expect(refused).toMatchObject({ ok: false, statusCode: null, error: `refused: ${name} does not resolve to a public address` });
    expect(redirecting.requests).toHaveLength(0);

    // Even where the first hop may be reached, its redirect to the loopback receiver is only reported.
    const notFollowed = await send(`http://${name}:${redirecting.port}/hook`, true);
    expect(notFollowed).toMatchObject({ ok: false, statusCode: 307 });
    expect(notFollowed.error).toMatch(/redirects are not followed/);
    expect(redirecting.requests).toHaveLength(1);
    expect(target.requests).toHaveLength(0);
  });

  it('an https URL to a loopback address is refused before any connection, so before any TLS', async () => {
    // A bare TCP listener: any connection attempt, TLS or not, is counted (and dropped).
    const connections: net.Socket[] = [];
    const listener = net.createServer((socket) => {
      connections.push(socket);
      socket.destroy();
    });
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    try {
      const port = (listener.address() as net.AddressInfo).port;
      const send = (allowPrivate: boolean) =>
        sendSigned({ url: `https://127.0.0.1:${port}/hook`, messageId: 'msg_tls', body: '{}', secrets: [`whsec_${randomBytes(32).toString('base64')}`], userAgent: 'ragworks-webhooks/test', timeoutMs: 2_000, allowPrivate, propagateTrace: false });
      expect(await send(false)).toMatchObject({ ok: false, statusCode: null, error: 'refused: 127.0.0.1 does not resolve to a public address' });
      expect(connections).toHaveLength(0);
      // The listener is reachable: allowed, the same send does connect (and fails in the TLS handshake).
      const allowed = await send(true);
      expect(allowed).toMatchObject({ ok: false, statusCode: null });
      expect(connections).toHaveLength(1);
    } finally {
      await new Promise((resolve) => listener.close(resolve));
    }
  });
});

/**
 * Fails with a clear message when a send has not settled long after its own
 * deadline (a hung promise would otherwise only show as a jest timeout).
 */
async function settled(send: Promise<SendResult>, what: string): Promise<SendResult> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: sendSigned still pending 20 s later`)), 20_000);
  });
  try {
    return await Promise.race([send, hung]);
  } finally {
    clearTimeout(timer);
  }
}

describe('sendSigned against receivers that misbehave after the headers', () => {
  const secret = `whsec_${randomBytes(32).toString('base64')}`;
  const send = (target: WebhookReceiver, timeoutMs: number) =>
    sendSigned({ url: target.url('/hook'), messageId: 'msg_misbehave', body: '{"type":"webhook.test"}', secrets: [secret], userAgent: 'ragworks-webhooks/test', timeoutMs, allowPrivate: true, propagateTrace: false });

  it.each([
    ['closed', false],
    ['reset', true],
  ])('a connection %s in the middle of the body settles as a failed attempt that names the status', async (how, reset) => {
    const target = await receiver();
    target.respond({ status: 200, cutAfter: { body: 'partial body', reset } });
    const result = await settled(send(target, 10_000), `connection ${how} mid-body`);
    expect(result).toMatchObject({ ok: false, statusCode: 200, responseBody: 'partial body' });
    expect(result.error).toMatch(/^HTTP 200, but .* before the response ended$/);
    expect(target.requests).toHaveLength(1);
  });

  it('WEBHOOK_TIMEOUT_MS bounds the whole response: a receiver trickling its body a byte at a time fails at the deadline', async () => {
    const target = await receiver();
    // 30 bytes over about 6 s; an idle timeout of 1 s would never fire.
    target.respond({ status: 200, trickle: { chunk: '.', intervalMs: 200, count: 30 } });
    const result = await settled(send(target, 1_000), 'trickling body');
    expect(result).toMatchObject({ ok: false, statusCode: 200 });
    expect(result.error).toBe('HTTP 200, but the response did not end within 1000 ms');
    // The connection was dropped, not read to its end.
    await waitFor(() => target.requests[0]?.hungUp, { what: 'the receiver to see the client hang up' });
    expect(target.requests[0].bytesSent).toBeLessThan(30);
  });

  it('an endless body is read only as far as the 4 KB kept: the attempt ends with the status, not at the deadline', async () => {
    const target = await receiver();
    target.respond({ status: 200, endless: true }, { status: 503, headers: { 'Retry-After': '7' }, endless: true });
    const ok = await settled(send(target, 30_000), 'endless 200 body');
    expect(ok).toMatchObject({ ok: true, statusCode: 200, error: null, responseBody: 'x'.repeat(4096) });
    await waitFor(() => target.requests[0]?.hungUp, { what: 'the receiver to see the client hang up' });

    const unavailable = await settled(send(target, 30_000), 'endless 503 body');
    expect(unavailable).toMatchObject({ ok: false, statusCode: 503, error: 'HTTP 503', retryAfterMs: 7_000, responseBody: 'x'.repeat(4096) });
    await waitFor(() => target.requests[1]?.hungUp, { what: 'the receiver to see the client hang up' });
  });
});

describe('delivery bookkeeping, driven directly (no workers)', () => {
  let stack: TestStack;
  let db: Knex;
  let deps: DeliveryDeps;
  const silent: EventSink = { announce: async () => undefined };

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', workers: false });
    db = stack.platform.db.knex;
    // Private targets allowed for these calls only: the receivers are on 127.0.0.1.
    const platformDeps = stack.platform.deliveryDeps();
    deps = { ...platformDeps, settings: { ...platformDeps.settings, allowPrivate: true, timeoutMs: 10_000 } };
  });
  afterAll(async () => {
    await stack?.close();
  });

  /** A tenant, an endpoint on `target`, and one pending delivery of a fresh event to it. */
  async function pendingDelivery(target: WebhookReceiver) {
    const tenant = await stack.createTenant();
    const { endpoint, secret } = await createEndpoint(db, tenant.id, { url: target.url('/hook') }, { allowPrivate: true }, TIER_QUOTAS.unlimited);
    target.secrets = [secret];
    const event = await withTenant(db, tenant.id, (trx) => recordEvent(trx, silent, tenant.id, 'document.created', { id: 'doc-1' }));
    const [work] = await fanOut(db, tenant.id, event.id);
    return { tenant, endpoint, event, work };
  }

  it('a late attempt overlapping one that succeeded does not turn the delivery back to pending', async () => {
    const target = await receiver();
    const { tenant, endpoint, work } = await pendingDelivery(target);
    // The first request is answered late and badly, the second at once and well.
    target.respond({ status: 500, body: 'late', delayMs: 1_500 }, { status: 200, body: 'ok' });
    const late = attemptDelivery(deps, tenant.id, work.deliveryId, false);
    await target.waitForRequests(1);
    const prompt = await attemptDelivery(deps, tenant.id, work.deliveryId, false);
    expect(prompt).toMatchObject({ kind: 'delivered' });
    // Its failure came after the delivery succeeded: no retry is asked for.
    expect(await late).toMatchObject({ kind: 'skipped' });

    const delivery = await getDelivery(db, tenant.id, endpoint.id, work.deliveryId);
    expect(delivery).toMatchObject({ status: 'succeeded', last_status_code: 200, last_error: null, next_attempt_at: null });
    expect(delivery.delivered_at).not.toBeNull();
    // Both attempts happened and both are logged.
    expect(delivery.attempts.map(({ attempt, outcome, status_code }) => ({ attempt, outcome, status_code }))).toEqual([
      { attempt: 1, outcome: 'succeeded', status_code: 200 },
      { attempt: 2, outcome: 'failed', status_code: 500 },
    ]);
    expect(target.requests.every((request) => request.verified)).toBe(true);
  });

  it.each([
    ['failed', { status: 500, body: 'no' }],
    ['succeeded', { status: 200, body: 'ok' }],
  ])('an endpoint deleted while a %s attempt is in flight: the attempt is skipped, nothing is recorded, nothing throws', async (_outcome, answer) => {
    const target = await receiver();
    const { tenant, endpoint, work } = await pendingDelivery(target);
    target.respond({ ...answer, delayMs: 1_000 });
    const attempt = attemptDelivery(deps, tenant.id, work.deliveryId, false);
    await target.waitForRequests(1);
    await deleteEndpoint(db, tenant.id, endpoint.id);
    expect(await attempt).toEqual({ kind: 'skipped', reason: expect.stringMatching(/deleted/) });
    expect(await stack.sql((all) => all('webhook_deliveries').where({ id: work.deliveryId }).first())).toBeUndefined();
    expect(await stack.sql((all) => all('webhook_attempts').where({ delivery_id: work.deliveryId }).first())).toBeUndefined();
  });

  it('a paced replay stamps each delivery with its due time, and the stuck-work scan passes over waits that are due later', async () => {
    const target = await receiver();
    const { tenant, endpoint, event } = await pendingDelivery(target);
    for (const id of ['doc-2', 'doc-3']) await withTenant(db, tenant.id, (trx) => recordEvent(trx, silent, tenant.id, 'document.created', { id }));
    const before = Date.now();
    const replayed = await replay(db, tenant.id, endpoint.id, { since: new Date(before - 3_600_000).toISOString(), dry_run: false }, { spacingMs: 60_000 });
    expect(replayed.matched).toBe(3);
    const rows: Array<{ id: string; next_attempt_at: Date | null }> = await stack.sql((all) =>
      all('webhook_deliveries')
        .select('id', 'next_attempt_at')
        .whereIn('id', replayed.work.map((work) => work.deliveryId)),
    );
    expect(rows).toHaveLength(3);
    const dueAt = new Map(rows.map((row) => [row.id, row.next_attempt_at]));
    // In the order the route enqueues them: the first at once, then one spacing apart.
    const [first, second, third] = replayed.work.map((work) => dueAt.get(work.deliveryId) ?? null);
    expect(first).toBeNull();
    expect(second!.getTime() - before).toBeGreaterThanOrEqual(60_000);
    expect(third!.getTime() - second!.getTime()).toBe(60_000);

    // Make every delivery of this tenant look old, as the reconcile tick would see them an hour on.
    const aged = await stack.sql((all) => all('webhook_deliveries').where({ tenant_id: tenant.id }).update({ updated_at: all.raw(`now() - interval '1 hour'`) }));
    expect(aged).toBe(4);
    const [fanned] = await stack.sql((all) => all('webhook_deliveries').select('id').where({ tenant_id: tenant.id, event_id: event.id, origin: 'event' }));
    const stuck = new Set((await findStuckWebhookWork(db, 60)).deliveries.filter((work) => work.tenantId === tenant.id).map((work) => work.deliveryId));
    // Due now (no time set, or the first replayed): found. Due later: left to their delayed jobs.
    expect(stuck).toEqual(new Set([fanned.id, replayed.work[0].deliveryId]));
  });

  it('replay refuses a window holding more events than its limit, and creates nothing', async () => {
    const target = await receiver();
    const { tenant, endpoint } = await pendingDelivery(target);
    for (const id of ['doc-2', 'doc-3']) await withTenant(db, tenant.id, (trx) => recordEvent(trx, silent, tenant.id, 'document.created', { id }));
    const request = { since: new Date(Date.now() - 3_600_000).toISOString(), dry_run: false };
    const deliveries = async () => Number((await stack.sql((all) => all('webhook_deliveries').where({ tenant_id: tenant.id }).count({ n: '*' })))[0].n);
    const existing = await deliveries();
    expect(existing).toBe(1);
    await expect(replay(db, tenant.id, endpoint.id, request, { limit: 2 })).rejects.toMatchObject({ status: 400, code: 'validation_failed', details: { limit: 2 } });
    await expect(replay(db, tenant.id, endpoint.id, { ...request, dry_run: true }, { limit: 2 })).rejects.toMatchObject({ status: 400 });
    expect(await deliveries()).toBe(existing);
    // At the limit exactly, it goes ahead.
    expect((await replay(db, tenant.id, endpoint.id, request, { limit: 3 })).matched).toBe(3);
  });

  it('webhook_deliveries has indexes on event_id and tenant_id for the cascades from events and tenants', async () => {
    const { rows } = await db.raw(`select indexdef from pg_indexes where tablename = 'webhook_deliveries'`);
    const definitions: string[] = rows.map((row: { indexdef: string }) => row.indexdef);
    // A plain (non-partial) index leading with the column: the only kind a cascade's lookup can use.
    for (const column of ['event_id', 'tenant_id']) {
      expect(definitions.some((definition) => new RegExp(`\\(${column}[,)]`).test(definition) && !/ WHERE /.test(definition))).toBe(true);
    }
  });
});
