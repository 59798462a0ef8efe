import type request from 'supertest';
import { queueRedriver } from '../../queues/retries';
import { redriveMatching } from '../../src/domain/dead-letters/redrive';
import { startEmbeddingsProvider, type FakeEmbeddingsProvider } from '../helpers/embeddings-provider';
import { startStack, type TestStack } from '../helpers/harness';
import { waitFor } from '../helpers/wait';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver';

type Tenant = { id: string; slug: string; key: string };

interface DeadLetterBody {
  id: string;
  queue: string;
  job_id: string;
  job_name: string;
  tenant_id: string | null;
  state: 'open' | 'redriven' | 'discarded';
  payload: Record<string, unknown>;
  error_class: string;
  error_message: string;
  attempts: number;
  max_attempts: number | null;
  failed_at: string;
  redriven_at: string | null;
  redrive_count: number;
  last_redrive_job_id: string | null;
  discarded_at: string | null;
}

/** PGlite compiles and migrates in-process; on a loaded machine that alone can take most of a minute. */
const PGLITE_START_TIMEOUT_MS = 120_000;
/** Input the fake provider refuses (HTTP 400) until a test lets it through: the job fails as unrecoverable. */
const POISON = 'POISON';

function expectError(response: request.Response, status: number, code: string): void {
  expect(response.status).toBe(status);
  expect(response.body.error).toMatchObject({ code, message: expect.any(String) });
}

/** A Prometheus sample's value from /metrics (0 when the series is absent). */
async function metric(stack: TestStack, series: string): Promise<number> {
  const text: string = (await stack.operator('get', '/metrics').expect(200)).text;
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

const recordedTotal = (stack: TestStack, queue: string) => metric(stack, `ragworks_dead_letters_total{queue="${queue}"}`);
const openGauge = (stack: TestStack, queue: string) => metric(stack, `ragworks_dead_letters_open{queue="${queue}"}`);

describe('dead letters (pglite, workers, a real embeddings provider and webhook receiver)', () => {
  let stack: TestStack;
  let provider: FakeEmbeddingsProvider;
  let receiver: WebhookReceiver;
  let a: Tenant;
  let b: Tenant;
  /** Tenant B's key with only the jobs:manage scope. */
  let bJobs: string;
  const poisoned: string[] = [];
  const deadLetterOf = new Map<string, DeadLetterBody>();

  async function list(query: string, as?: { key?: string; tenant?: string }): Promise<DeadLetterBody[]> {
    const response = as?.key
      ? await stack.as(as.key, 'get', `/api/admin/dead-letters?${query}`).expect(200)
      : await stack.operator('get', `/api/admin/dead-letters?${query}`, as?.tenant).expect(200);
    return response.body.items as DeadLetterBody[];
  }

  async function openFor(queue: string, match: (row: DeadLetterBody) => boolean, what: string): Promise<DeadLetterBody> {
    return waitFor(async () => (await list(`queue=${queue}&limit=100`)).find(match), { what });
  }

  async function postDocument(tenant: Tenant, title: string, extra = ''): Promise<string> {
    const response = await stack
      .as(tenant.key, 'post', '/api/documents')
      .send({ title, content: `# ${title}\n\nSome words about ${title.toLowerCase()} to index. ${extra}` })
      .expect(202);
    return response.body.id as string;
  }

  beforeAll(async () => {
    provider = await startEmbeddingsProvider({ dimensions: 384, model: 'test-embedder', rejects: (input) => input.some((text) => text.includes(POISON)) });
    receiver = await startWebhookReceiver();
    stack = await startStack({
      database: 'pglite',
      env: { ...provider.env, EMBEDDINGS_MAX_RETRIES: '0', WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_RETRY_SCHEDULE: '0,0', WEBHOOK_TIMEOUT_MS: '2000' },
    });
    a = await stack.createTenant();
    b = await stack.createTenant();
    bJobs = (await stack.operator('post', '/api/admin/api-keys', b.id).send({ name: 'jobs only', scopes: ['jobs:manage'] }).expect(201)).body.key;
  }, PGLITE_START_TIMEOUT_MS);
  afterAll(async () => {
    await stack?.close();
    await provider?.close();
    await receiver?.close();
  });

  it('records a job that fails for good with its queue, redacted payload, error and attempts, and counts it in /metrics', async () => {
    const totalBefore = await recordedTotal(stack, 'indexing');
    expect(await openGauge(stack, 'indexing')).toBe(0);

    for (const title of ['Apples', 'Pears', 'Plums']) poisoned.push(await postDocument(a, title, POISON));
    for (const id of poisoned) {
      const failed = await stack.waitForDocument(a.key, id, 'failed');
      expect(failed.error).toMatch(/HTTP 400/);
    }
    const indexing = stack.platform.queues.queue('indexing');
    // Jobs no processor can run: one for tenant A with a secret in it, one for B, and a scheduler tick without a tenant.
    await indexing.add('indexing', { tenantId: a.id, bad: 1, api_key: 'do-not-show-me' }, { jobId: 'dl-bad-a', attempts: 1 });
    await indexing.add('indexing', { tenantId: b.id, bad: 2 }, { jobId: 'dl-bad-b', attempts: 1 });
    await stack.platform.queues.queue('reconcile').add('reconcile', { tick: 'not a time' }, { jobId: 'dl-tick', attempts: 1 });

    for (const id of poisoned) {
      deadLetterOf.set(id, await openFor('indexing', (row) => row.payload.documentId === id, `the dead letter of ${id}`));
    }
    const first = deadLetterOf.get(poisoned[0])!;
    const document = (await stack.as(a.key, 'get', `/api/documents/${poisoned[0]}`).expect(200)).body;
    expect(first).toMatchObject({
      queue: 'indexing',
      job_name: 'indexing',
      tenant_id: a.id,
      state: 'open',
      payload: { tenantId: a.id, documentId: poisoned[0], version: 1, indexJobId: document.job_id },
      // The cause's class: the job was failed at once (BullMQ saw an UnrecoverableError) because a provider that refuses the input is not retried.
      error_class: 'EmbeddingError',
      attempts: 1,
      max_attempts: 16,
      redriven_at: null,
      redrive_count: 0,
      discarded_at: null,
    });
    expect(first.job_id).toContain(poisoned[0]);
    expect(first.error_message).toMatch(/HTTP 400/);
    // The attempts match what BullMQ (and so Bull Board) shows for the job.
    const job = await indexing.getJob(first.job_id);
    expect(await job!.getState()).toBe('failed');
    expect(job!.attemptsMade).toBe(first.attempts);

    const bad = await openFor('indexing', (row) => row.job_id === 'dl-bad-a', 'the dead letter of the invalid job');
    expect(bad).toMatchObject({ tenant_id: a.id, error_class: 'UnrecoverableError', attempts: 1, max_attempts: 1 });
    expect(bad.payload).toEqual({ tenantId: a.id, bad: 1, api_key: '[redacted]' });
    expect(bad.error_message).toMatch(/^Invalid payload/);
    const tick = await openFor('reconcile', (row) => row.job_id === 'dl-tick', 'the dead letter of the invalid tick');
    expect(tick).toMatchObject({ tenant_id: null, payload: { tick: 'not a time' } });
    await openFor('indexing', (row) => row.job_id === 'dl-bad-b', "the dead letter of B's invalid job");

    const detail = await stack.operator('get', `/api/admin/dead-letters/${bad.id}`).expect(200);
    expect(detail.body).toMatchObject({ id: bad.id, job_state: 'failed', payload: { api_key: '[redacted]' } });
    expect(detail.body.stacktrace).toMatch(/UnrecoverableError: Invalid payload/);
    expect(JSON.stringify(detail.body)).not.toContain('do-not-show-me');
    // A tenant's key sees the message, not the stack trace.
    const asTenant = await stack.as(a.key, 'get', `/api/admin/dead-letters/${bad.id}`).expect(200);
    expect(asTenant.body).toMatchObject({ error_message: bad.error_message, stacktrace: null });

    expect((await recordedTotal(stack, 'indexing')) - totalBefore).toBe(5);
    expect(await openGauge(stack, 'indexing')).toBe(5);
    expect(await openGauge(stack, 'reconcile')).toBe(1);
  });

  it('records the same job failing for good again once: its open row is updated, not doubled', async () => {
    const total = await recordedTotal(stack, 'indexing');
    // Retried behind ragworks' back (straight through BullMQ, so nothing closes its dead letter), the invalid job fails for good a second time.
    await (await stack.platform.queues.queue('indexing').getJob('dl-bad-a'))!.retry('failed');
    const again = await waitFor(
      async () => (await list('queue=indexing&limit=100')).find((row) => row.job_id === 'dl-bad-a' && row.attempts === 2),
      { what: 'the invalid job to fail for good again' },
    );
    expect(again.state).toBe('open');
    const rows = await stack.sql((db) => db('dead_letters').select('id', 'redriven_at', 'discarded_at').where({ queue: 'indexing', job_id: 'dl-bad-a' }));
    expect(rows).toEqual([{ id: again.id, redriven_at: null, discarded_at: null }]);
    expect(await recordedTotal(stack, 'indexing')).toBe(total);
    expect(await openGauge(stack, 'indexing')).toBe(5);
  });

  it('filters and pages the list, and refuses bad input', async () => {
    const ids = (rows: DeadLetterBody[]) => rows.map((row) => row.id).sort();
    const poisonIds = poisoned.map((id) => deadLetterOf.get(id)!.id).sort();
    const everyIndexing = await list('queue=indexing&limit=100');
    expect(everyIndexing).toHaveLength(5);
    // Newest first.
    expect(everyIndexing.map((row) => row.id)).toEqual([...everyIndexing.map((row) => row.id)].sort().reverse());
    expect(ids(await list('queue=indexing&message_contains=http%20400'))).toEqual(poisonIds);
    expect((await list('message_contains=INVALID%20payload')).map((row) => row.job_id).sort()).toEqual(['dl-bad-a', 'dl-bad-b', 'dl-tick']);
    expect(ids(await list('error_class=EmbeddingError'))).toEqual(poisonIds);
    expect((await list('error_class=UnrecoverableError&limit=100')).map((row) => row.job_id).sort()).toEqual(['dl-bad-a', 'dl-bad-b', 'dl-tick']);
    expect((await list(`tenant=${b.id}`)).map((row) => row.job_id)).toEqual(['dl-bad-b']);
    expect(await list('queue=reconcile')).toHaveLength(1);
    expect(await list('state=redriven')).toHaveLength(0);
    expect(await list('state=discarded')).toHaveLength(0);

    const firstPage = await stack.operator('get', '/api/admin/dead-letters?queue=indexing&limit=2').expect(200);
    expect(firstPage.body.items).toHaveLength(2);
    expect(firstPage.body.next_cursor).toEqual(expect.any(String));
    const secondPage = await stack.operator('get', `/api/admin/dead-letters?queue=indexing&limit=2&cursor=${firstPage.body.next_cursor}`).expect(200);
    expect(secondPage.body.items).toHaveLength(2);
    expect(secondPage.body.items.map((row: DeadLetterBody) => row.id)).toEqual(everyIndexing.slice(2, 4).map((row) => row.id));

    for (const query of ['state=buried', 'queue=nope', 'limit=0', 'limit=101', 'cursor=bm90LWEtdXVpZA', 'tenant=acme', 'message_contains=']) {
      expectError(await stack.operator('get', `/api/admin/dead-letters?${query}`), 400, 'validation_failed');
    }
    expectError(await stack.operator('get', '/api/admin/dead-letters/not-an-id'), 400, 'validation_failed');
    expectError(await stack.operator('get', '/api/admin/dead-letters/018f0000-0000-7000-8000-000000000000'), 404, 'not_found');
    expectError(await stack.operator('post', '/api/admin/dead-letters/018f0000-0000-7000-8000-000000000000/redrive'), 404, 'not_found');
    expectError(await stack.operator('delete', '/api/admin/dead-letters/018f0000-0000-7000-8000-000000000000'), 404, 'not_found');
    expectError(await stack.operator('post', '/api/admin/dead-letters/redrive').send({ queue: 'indexing' }), 400, 'validation_failed');
    expectError(await stack.operator('post', '/api/admin/dead-letters/redrive').send({ dry_run: 'yes' }), 400, 'validation_failed');
    expectError(await stack.operator('post', '/api/admin/dead-letters/redrive').send({ dry_run: true, state: 'open' }), 400, 'validation_failed');
  });

  it('keeps tenants apart: a key sees and acts on its own tenant only; rows without a tenant are the operator’s', async () => {
    const aRow = deadLetterOf.get(poisoned[0])!;
    const bRows = await list('', { key: bJobs });
    expect(bRows.map((row) => row.job_id)).toEqual(['dl-bad-b']);
    expect((await list('limit=100', { key: a.key })).every((row) => row.tenant_id === a.id)).toBe(true);
    expect(await list('queue=reconcile', { key: a.key })).toHaveLength(0);
    expect((await list('queue=indexing&limit=100', { tenant: b.id })).map((row) => row.job_id)).toEqual(['dl-bad-b']);
    // Asking for another tenant's rows by filter finds nothing either.
    expect(await list(`tenant=${a.id}`, { key: bJobs })).toHaveLength(0);

    expectError(await stack.as(bJobs, 'get', `/api/admin/dead-letters/${aRow.id}`), 404, 'not_found');
    expectError(await stack.as(bJobs, 'post', `/api/admin/dead-letters/${aRow.id}/redrive`), 404, 'not_found');
    expectError(await stack.as(bJobs, 'delete', `/api/admin/dead-letters/${aRow.id}`), 404, 'not_found');
    expectError(await stack.operator('get', `/api/admin/dead-letters/${aRow.id}`, b.id), 404, 'not_found');
    expect((await stack.as(bJobs, 'post', '/api/admin/dead-letters/redrive').send({ dry_run: true, queue: 'indexing' }).expect(200)).body).toMatchObject({
      matched: 1,
      redriven: 0,
    });
    expect((await stack.as(bJobs, 'post', '/api/admin/dead-letters/discard').send({ dry_run: true, message_contains: 'HTTP 400' }).expect(200)).body).toEqual({
      matched: 0,
      discarded: 0,
    });
    // A key without jobs:manage is refused outright.
    const reader = (await stack.operator('post', '/api/admin/api-keys', a.id).send({ name: 'reader', scopes: ['documents:read'] }).expect(201)).body.key;
    expectError(await stack.as(reader, 'get', '/api/admin/dead-letters'), 403, 'forbidden');
    expect((await stack.operator('get', `/api/admin/dead-letters/${aRow.id}`).expect(200)).body.state).toBe('open');
  });

  it('counts in a dry run exactly the open dead letters matching the filter, and changes nothing', async () => {
    const dryRun = async (body: object) => (await stack.operator('post', '/api/admin/dead-letters/redrive').send({ dry_run: true, ...body }).expect(200)).body;
    expect(await dryRun({})).toEqual({ matched: 6, redriven: 0, skipped: [], limit: 500 });
    expect(await dryRun({ queue: 'indexing', message_contains: 'http 400' })).toMatchObject({ matched: 3, redriven: 0 });
    expect(await dryRun({ error_class: 'UnrecoverableError', message_contains: 'Invalid payload' })).toMatchObject({ matched: 3 });
    expect(await dryRun({ queue: 'reconcile' })).toMatchObject({ matched: 1 });
    expect(await dryRun({ tenant: a.id })).toMatchObject({ matched: 4 });
    expect(await dryRun({ error_class: 'Error' })).toMatchObject({ matched: 0 });
    expect((await stack.as(a.key, 'post', '/api/admin/dead-letters/redrive').send({ dry_run: true }).expect(200)).body).toMatchObject({ matched: 4 });

    expect(await list('limit=100')).toHaveLength(6);
    expect(await list('state=redriven')).toHaveLength(0);
    expect((await stack.operator('get', '/api/admin/queues').expect(200)).body.find((queue: { name: string }) => queue.name === 'indexing').counts).toMatchObject({
      failed: 5,
      waiting: 0,
      active: 0,
    });
    for (const id of poisoned) expect((await stack.as(a.key, 'get', `/api/documents/${id}`).expect(200)).body.status).toBe('failed');
  });

  it('redrives one dead letter: the failed job runs again with fresh attempts and the document ends indexed', async () => {
    provider.rejects = () => false;
    const row = deadLetterOf.get(poisoned[0])!;
    const response = await stack.as(a.key, 'post', `/api/admin/dead-letters/${row.id}/redrive`).expect(200);
    expect(response.body).toMatchObject({ method: 'retried', dead_letter: { id: row.id, state: 'redriven', redrive_count: 1, last_redrive_job_id: row.job_id } });
    expect(response.body.dead_letter.redriven_at).not.toBeNull();

    const indexed = await stack.waitForDocument(a.key, poisoned[0], 'indexed');
    expect(indexed).toMatchObject({ error: null });
    expect(indexed.chunk_count).toBeGreaterThan(0);
    const indexJob = await stack.as(a.key, 'get', `/api/index/jobs/${indexed.job_id}`).expect(200);
    expect(indexJob.body).toMatchObject({ status: 'completed', documents_completed: 1, documents_failed: 0 });
    const job = await stack.platform.queues.queue('indexing').getJob(row.job_id);
    expect(await job!.getState()).toBe('completed');
    // A fresh budget: the count starts again rather than going on from the failed run's.
    expect(job!.attemptsMade).toBe(1);

    // Kept as history, no longer open: a second redrive is refused.
    expect((await list('state=redriven')).map((redriven) => redriven.id)).toEqual([row.id]);
    const again = await stack.operator('post', `/api/admin/dead-letters/${row.id}/redrive`);
    expectError(again, 409, 'conflict');
    expect(again.body.error.details).toEqual({ state: 'redriven' });
    expect(await openGauge(stack, 'indexing')).toBe(4);
  });

  it('redrives a dead letter whose job BullMQ no longer holds by adding it again from the stored payload', async () => {
    const row = deadLetterOf.get(poisoned[1])!;
    const indexing = stack.platform.queues.queue('indexing');
    // As after the failed-job retention: the job is gone.
    expect(await indexing.remove(row.job_id)).toBe(1);
    expect((await stack.operator('get', `/api/admin/dead-letters/${row.id}`).expect(200)).body.job_state).toBe('unknown');

    const response = await stack.operator('post', `/api/admin/dead-letters/${row.id}/redrive`).expect(200);
    expect(response.body).toMatchObject({ method: 'requeued', dead_letter: { state: 'redriven', last_redrive_job_id: row.job_id } });
    await stack.waitForDocument(a.key, poisoned[1], 'indexed');
    expect((await indexing.getJob(row.job_id))!.opts.attempts).toBe(16);

    // An invalid payload cannot be added again once its job is gone: refused, and the row stays open.
    const bad = (await list('queue=indexing')).find((candidate) => candidate.job_id === 'dl-bad-b')!;
    expect(await indexing.remove('dl-bad-b')).toBe(1);
    const refused = await stack.operator('post', `/api/admin/dead-letters/${bad.id}/redrive`);
    expectError(refused, 409, 'conflict');
    expect(refused.body.error.message).toMatch(/not one the indexing queue accepts/);
    expect((await stack.operator('get', `/api/admin/dead-letters/${bad.id}`).expect(200)).body).toMatchObject({ state: 'open', redrive_count: 0, redriven_at: null });
  });

  it('redrives in bulk exactly the rows matching the filter', async () => {
    const before = await list('limit=100');
    const response = await stack.operator('post', '/api/admin/dead-letters/redrive').send({ dry_run: false, queue: 'indexing', message_contains: 'HTTP 400' }).expect(200);
    expect(response.body).toEqual({ matched: 1, redriven: 1, skipped: [], limit: 500 });
    await stack.waitForDocument(a.key, poisoned[2], 'indexed');
    const after = await list('limit=100');
    expect(after.map((row) => row.id).sort()).toEqual(before.filter((row) => row.payload.documentId !== poisoned[2]).map((row) => row.id).sort());

    // At most `limit` per request; the rest stay open for the next one.
    await stack.platform.queues.queue('reconcile').add('reconcile', { tick: 'still not a time' }, { jobId: 'dl-tick-2', attempts: 1 });
    await openFor('reconcile', (row) => row.job_id === 'dl-tick-2', 'the second invalid tick');
    const deps = { db: stack.platform.db.knex, jobs: queueRedriver(stack.platform.queues), reopen: async () => null };
    const capped = await redriveMatching(deps, undefined, { queue: 'reconcile' }, { dryRun: false, limit: 1 });
    expect(capped).toMatchObject({ matched: 2, redriven: 1, limit: 1 });
    // Oldest first: the first tick was redriven, the second waits for the next request.
    expect((await list('queue=reconcile&state=redriven')).map((row) => row.job_id)).toEqual(['dl-tick']);
    expect((await list('queue=reconcile')).map((row) => row.job_id)).toContain('dl-tick-2');
    // Really run again, the invalid tick fails for good again: a new open row beside the redriven one.
    await openFor('reconcile', (row) => row.job_id === 'dl-tick', 'the redriven tick to fail again');
  });

  describe('webhook deliveries that gave up', () => {
    let endpointId: string;

    const seen = new Set<string>();

    /** Indexes a document whose document.indexed delivery fails both its attempts (the receiver answers 500). */
    async function failedDelivery(title: string): Promise<{ documentId: string; row: DeadLetterBody; deliveryId: string }> {
      const documentId = await postDocument(a, title);
      await stack.waitForDocument(a.key, documentId, 'indexed');
      const row = await openFor('webhooks', (candidate) => !seen.has(candidate.id), `the dead delivery of ${title}`);
      seen.add(row.id);
      expect(row.error_message).toMatch(/no attempts left/);
      const deliveryId = row.payload.deliveryId as string;
      const delivery = await stack.as(a.key, 'get', `/api/admin/webhooks/${endpointId}/deliveries/${deliveryId}`).expect(200);
      expect(delivery.body.status).toBe('failed');
      expect(delivery.body.attempts).toHaveLength(2);
      expect((delivery.body.event as { data: { id: string } }).data.id).toBe(documentId);
      return { documentId, row, deliveryId };
    }

    beforeAll(async () => {
      receiver.defaultResponse = { status: 500, body: 'down' };
      const created = await stack.as(a.key, 'post', '/api/admin/webhooks').send({ url: receiver.url('/hook'), event_types: ['document.indexed'] }).expect(201);
      endpointId = created.body.id;
      receiver.secrets = [created.body.secret];
    });

    it('redriven, a delivery that gave up is sent again and delivered to the receiver', async () => {
      const total = await recordedTotal(stack, 'webhooks');
      const { row, deliveryId } = await failedDelivery('Webhook one');
      expect(row).toMatchObject({
        queue: 'webhooks',
        tenant_id: a.id,
        error_class: 'UnrecoverableError',
        attempts: 2,
        max_attempts: 2,
        payload: { tenantId: a.id, deliveryId, endpointId, origin: 'event' },
      });
      expect(await recordedTotal(stack, 'webhooks')).toBe(total + 1);
      expect(await openGauge(stack, 'webhooks')).toBe(1);

      receiver.defaultResponse = { status: 204 };
      const received = receiver.requests.length;
      await stack.as(a.key, 'post', `/api/admin/dead-letters/${row.id}/redrive`).expect(200);
      const [delivered] = await receiver.waitForRequests(received + 1);
      expect(receiver.requests[received]).toMatchObject({ verified: true, webhookId: delivered.webhookId, eventType: 'document.indexed' });
      const delivery = await waitFor(
        async () => {
          const body = (await stack.as(a.key, 'get', `/api/admin/webhooks/${endpointId}/deliveries/${deliveryId}`).expect(200)).body;
          return body.status === 'succeeded' ? body : null;
        },
        { what: 'the redriven delivery to succeed' },
      );
      // Its attempts so far stay in the log: two that failed, and the redriven one.
      expect(delivery.last_status_code).toBe(204);
      expect(delivery.attempts.map((attempt: { outcome: string }) => attempt.outcome)).toEqual(['failed', 'failed', 'succeeded']);
      expect(await openGauge(stack, 'webhooks')).toBe(0);
    });

    it('retried from the jobs API instead, the delivery is reopened the same way and its dead letter closed', async () => {
      receiver.defaultResponse = { status: 500, body: 'down' };
      const { row, deliveryId } = await failedDelivery('Webhook two');
      receiver.defaultResponse = { status: 200, body: 'ok' };
      await stack.operator('post', `/api/admin/jobs/webhooks/${encodeURIComponent(row.job_id)}/retry`).expect(200);
      await waitFor(
        async () => (await stack.as(a.key, 'get', `/api/admin/webhooks/${endpointId}/deliveries/${deliveryId}`).expect(200)).body.status === 'succeeded',
        { what: 'the retried delivery to succeed' },
      );
      const closed = (await stack.operator('get', `/api/admin/dead-letters/${row.id}`).expect(200)).body;
      expect(closed).toMatchObject({ state: 'redriven', redrive_count: 1, last_redrive_job_id: row.job_id });
    });

    it('refuses to redrive a delivery whose endpoint is disabled, and discards it instead', async () => {
      receiver.defaultResponse = { status: 500, body: 'down' };
      const { row, deliveryId } = await failedDelivery('Webhook three');
      await stack.as(a.key, 'patch', `/api/admin/webhooks/${endpointId}`).send({ enabled: false }).expect(200);
      const received = receiver.requests.length;

      const refused = await stack.as(a.key, 'post', `/api/admin/dead-letters/${row.id}/redrive`);
      expectError(refused, 409, 'conflict');
      expect(refused.body.error.message).toMatch(/endpoint is disabled/);
      expect((await stack.as(a.key, 'get', `/api/admin/dead-letters/${row.id}`).expect(200)).body).toMatchObject({ state: 'open', redrive_count: 0 });
      expect((await stack.as(a.key, 'get', `/api/admin/webhooks/${endpointId}/deliveries/${deliveryId}`).expect(200)).body.status).toBe('failed');

      const discarded = await stack.as(a.key, 'delete', `/api/admin/dead-letters/${row.id}`).expect(200);
      expect(discarded.body).toMatchObject({ id: row.id, state: 'discarded', redriven_at: null });
      expect(discarded.body.discarded_at).not.toBeNull();
      expect((await list('state=discarded')).map((candidate) => candidate.id)).toEqual([row.id]);
      expect(await list('queue=webhooks')).toHaveLength(0);
      const discardAgain = await stack.as(a.key, 'delete', `/api/admin/dead-letters/${row.id}`);
      expectError(discardAgain, 409, 'conflict');
      expect(discardAgain.body.error.details).toEqual({ state: 'discarded' });
      expectError(await stack.as(a.key, 'post', `/api/admin/dead-letters/${row.id}/redrive`), 409, 'conflict');
      expect(receiver.requests.length).toBe(received);
    });

    it('retried from the jobs API after its dead letter was discarded, the delivery is still reopened and delivered', async () => {
      await stack.as(a.key, 'patch', `/api/admin/webhooks/${endpointId}`).send({ enabled: true }).expect(200);
      receiver.defaultResponse = { status: 500, body: 'down' };
      const { row, deliveryId } = await failedDelivery('Webhook discarded first');
      await stack.operator('delete', `/api/admin/dead-letters/${row.id}`).expect(200);
      receiver.defaultResponse = { status: 200, body: 'ok' };
      await stack.operator('post', `/api/admin/jobs/webhooks/${encodeURIComponent(row.job_id)}/retry`).expect(200);
      await waitFor(
        async () => (await stack.as(a.key, 'get', `/api/admin/webhooks/${endpointId}/deliveries/${deliveryId}`).expect(200)).body.status === 'succeeded',
        { what: 'the retried delivery to succeed' },
      );
    });
  });

  it('discards in bulk what matches, after a dry run that changes nothing', async () => {
    const open = await list('limit=100');
    const invalid = open.filter((row) => row.error_message.startsWith('Invalid payload'));
    expect(invalid.length).toBeGreaterThan(0);
    const discard = (body: object) => stack.operator('post', '/api/admin/dead-letters/discard').send(body).expect(200);
    expect((await discard({ dry_run: true, message_contains: 'invalid payload' })).body).toEqual({ matched: invalid.length, discarded: 0 });
    expect(await list('limit=100')).toHaveLength(open.length);
    expect((await discard({ dry_run: false, message_contains: 'invalid payload' })).body).toEqual({ matched: invalid.length, discarded: invalid.length });
    expect(await list('limit=100')).toHaveLength(open.length - invalid.length);
    expect(await openGauge(stack, 'indexing')).toBe(open.filter((row) => row.queue === 'indexing').length - invalid.filter((row) => row.queue === 'indexing').length);
  });
});

describe('dead letters on PostgreSQL, as the application role', () => {
  let stack: TestStack;
  let tenant: Tenant;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres' });
    tenant = await stack.createTenant();
  });
  afterAll(async () => {
    await stack?.close();
  });

  async function open(query: string, key?: string): Promise<DeadLetterBody[]> {
    const url = `/api/admin/dead-letters?${query}`;
    return ((key ? await stack.as(key, 'get', url) : await stack.operator('get', url)).body.items ?? []) as DeadLetterBody[];
  }

  it('records, isolates and redrives; a redriven job that fails again is a new open row beside the old one', async () => {
    const before = await recordedTotal(stack, 'webhook-fanout');
    const fanout = stack.platform.queues.queue('webhook-fanout');
    await fanout.add('webhook-fanout', { tenantId: tenant.id, eventId: 'not-a-uuid', signing_secret: 'whsec_hidden' }, { jobId: 'pg-bad', attempts: 1 });
    await fanout.add('webhook-fanout', { tenantId: 'nobody' }, { jobId: 'pg-bad-tenantless', attempts: 1 });
    const [row] = await waitFor(async () => {
      const rows = await open('queue=webhook-fanout');
      return rows.length === 2 ? rows.filter((candidate) => candidate.job_id === 'pg-bad') : null;
    }, { what: 'two dead fan-outs' });
    expect(row).toMatchObject({ tenant_id: tenant.id, attempts: 1, payload: { tenantId: tenant.id, eventId: 'not-a-uuid', signing_secret: '[redacted]' } });
    expect(await recordedTotal(stack, 'webhook-fanout')).toBe(before + 2);
    expect(await openGauge(stack, 'webhook-fanout')).toBe(2);
    // Not a tenant's uuid: the row belongs to no tenant, and the tenant's key does not see it.
    expect((await open('queue=webhook-fanout', tenant.key)).map((candidate) => candidate.job_id)).toEqual(['pg-bad']);

    const redriven = await stack.as(tenant.key, 'post', `/api/admin/dead-letters/${row.id}/redrive`).expect(200);
    expect(redriven.body.method).toBe('retried');
    const again = await waitFor(async () => (await open('queue=webhook-fanout', tenant.key)).find((candidate) => candidate.job_id === 'pg-bad'), {
      what: 'the redriven job to fail for good again',
    });
    expect(again.id).not.toBe(row.id);
    expect(again.attempts).toBe(1);
    expect((await open('state=redriven', tenant.key)).map((candidate) => candidate.id)).toEqual([row.id]);
    expect(await recordedTotal(stack, 'webhook-fanout')).toBe(before + 3);
    expect(await openGauge(stack, 'webhook-fanout')).toBe(2);
  });
});
