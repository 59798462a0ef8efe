import request from 'supertest';
import { indexingQueue, reconcileQueue } from '../../queues';
import { WorkerRuntime } from '../../workers/runtime';
import { createTestDatabase } from '../helpers/databases';
import { startStack, type TestStack } from '../helpers/harness';
import { startRagworks, unusedPort } from '../helpers/processes';
import { waitFor } from '../helpers/wait';

jest.setTimeout(120_000);

describe('hostile input never reaches a 500', () => {
  let stack: TestStack;
  let tenant: { id: string; slug: string; key: string };

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', workers: false });
    tenant = await stack.createTenant();
  });
  afterAll(async () => {
    await stack?.close();
  });

  const documentCount = async () => Number((await stack.sql((db) => db('documents').where({ tenant_id: tenant.id }).count('* as n').first()))?.n);

  it('answers 400 to a path it cannot decode', async () => {
    const response = await request(stack.app).get('/api/documents/%E0%A4%A').set('Authorization', `Bearer ${tenant.key}`);
    expect(response.status).toBe(400);
    expect(response.body.error.code).toBe('validation_failed');
  });

  it.each([
    ['a year PostgreSQL cannot store', '0000-01-01T00:00:00Z'],
    ['an offset beyond what PostgreSQL reads', '2026-01-01T00:00:00+23:59'],
  ])('answers 400 to a search date filter with %s', async (_what, value) => {
    for (const field of ['created_from', 'created_to']) {
      const response = await stack.as(tenant.key, 'post', '/api/search').send({ query: 'anything', mode: 'keyword', filters: { [field]: value } });
      expect(response.status).toBe(400);
      expect(response.body.error.code).toBe('validation_failed');
    }
  });

  it('refuses metadata jsonb cannot hold, and stores nothing', async () => {
    const before = await documentCount();
    let nested: unknown = 'deep';
    for (let level = 0; level < 40; level += 1) nested = { level: nested };
    const bodies = [
      `{"title":"t","content":"c","metadata":{"a":"\\ud800"}}`,
      `{"title":"t","content":"c","metadata":{"\\udfff":"key"}}`,
      JSON.stringify({ title: 't', content: 'c', metadata: { nested } }),
      `{"title":"t","content":"c","metadata":{"a":${'['.repeat(30_000)}${']'.repeat(30_000)}}}`,
    ];
    for (const body of bodies) {
      const response = await stack.as(tenant.key, 'post', '/api/documents').set('Content-Type', 'application/json').send(body);
      expect(response.status).toBeGreaterThanOrEqual(400);
      expect(response.status).toBeLessThan(500);
      expect(response.body.error.code).toMatch(/validation_failed|invalid_json/);
    }
    expect(await documentCount()).toBe(before);
  });

  it('refuses job ids that name BullMQ keys instead of jobs', async () => {
    for (const id of ['wait', 'events', 'meta', 'id', 'a:b']) {
      const response = await stack.operator('get', `/api/admin/jobs/indexing/${encodeURIComponent(id)}`);
      expect(response.status).toBe(400);
    }
  });

  it('accepts the date filters on GET /api/search too', async () => {
    const response = await stack.as(tenant.key, 'get', '/api/search?q=anything&mode=keyword&created_from=2020-01-01T00:00:00Z&created_to=2020-01-02T00:00:00Z');
    expect(response.status).toBe(200);
    expect(response.body.results).toEqual([]);
  });

  it('a document whose queue job failed for good is marked failed by reconcile instead of being re-run for ever', async () => {
    const created = await stack.as(tenant.key, 'post', '/api/documents').send({ title: 'Crasher', content: 'Stands in for a document that kills its workers.' }).expect(202);
    const work = { tenantId: tenant.id, indexJobId: created.body.job_id, documentId: created.body.id, version: 1 };
    const queue = stack.platform.queues.queue(indexingQueue.name);
    const jobId = indexingQueue.jobId(work);
    // The job fails for good without its processor recording anything, as when the stalled-job check gives up on it.
    await queue.remove(jobId);
    await queue.add(indexingQueue.name, { broken: true }, { jobId, attempts: 1 });
    const indexer = new WorkerRuntime(stack.platform, ['indexing']);
    indexer.start();
    try {
      await waitFor(async () => (await (await queue.getJob(jobId))?.getState()) === 'failed', { what: 'the job to fail' });
    } finally {
      await indexer.drain(5_000);
    }
    const aged = await stack.sql((db) => db('index_job_items').where({ document_id: created.body.id }).update({ updated_at: db.raw(`now() - interval '1 hour'`) }));
    expect(aged).toBe(1);

    const reconciler = new WorkerRuntime(stack.platform, ['reconcile']);
    reconciler.start();
    try {
      await stack.platform.queues.enqueue(reconcileQueue, { tick: new Date().toISOString() });
      const document = await stack.waitForDocument(tenant.key, created.body.id, 'failed');
      expect(document.error).toMatch(/Invalid payload/);
      const job = await stack.as(tenant.key, 'get', `/api/index/jobs/${created.body.job_id}`).expect(200);
      expect(job.body.status).toBe('failed');
      // Not re-enqueued: the failed job is still the one in Redis.
      expect(await (await queue.getJob(jobId))?.getState()).toBe('failed');
    } finally {
      await reconciler.drain(5_000);
    }
  });
});

describe('the migrate role', () => {
  it('needs only the database: it migrates with Redis unreachable', async () => {
    const database = await createTestDatabase();
    try {
      const child = startRagworks('migrate', {
        DATABASE_URL: database.url,
        REDIS_URL: `redis://127.0.0.1:${await unusedPort()}`,
        ADMIN_TOKEN: 'test-operator-token-0123456789abcdef',
        LOG_LEVEL: 'info',
      });
      expect(await child.waitForExit(90_000)).toEqual({ code: 0, signal: null });
      expect(child.messages('database migrated')).toHaveLength(1);
    } finally {
      await database.drop();
    }
  });
});
