import request from 'supertest';
import { DATABASE_RETRIES, QUEUE_NAMES, reconcileQueue } from '../../queues';
import { startEmbeddingsProvider, type FakeEmbeddingsProvider } from '../helpers/embeddings-provider';
import { startStack, type TestStack } from '../helpers/harness';
import { waitFor } from '../helpers/wait';

interface QueueBody {
  name: string;
  counts: { waiting: number; active: number; delayed: number; completed: number; failed: number; paused: number };
  oldest_waiting_age_seconds: number;
  is_paused: boolean;
  workers: number;
}

interface JobBody {
  id: string;
  queue: string;
  name: string;
  state: string;
  tenant_id: string | null;
  attempts_made: number;
  failed_reason: string | null;
  created_at: string;
  finished_at: string | null;
}

type Tenant = { id: string; slug: string; key: string };

/** PGlite compiles and migrates in-process; on a loaded machine that alone can take most of a minute. */
const PGLITE_START_TIMEOUT_MS = 120_000;

function expectError(response: request.Response, status: number, code: string): void {
  expect(response.status).toBe(status);
  expect(response.body.error).toMatchObject({ code, message: expect.any(String) });
}

async function queues(stack: TestStack): Promise<Record<string, QueueBody>> {
  const response = await stack.operator('get', '/api/admin/queues').expect(200);
  return Object.fromEntries((response.body as QueueBody[]).map((queue) => [queue.name, queue]));
}

async function jobs(stack: TestStack, query: string, tenant?: string): Promise<JobBody[]> {
  const response = await stack.operator('get', `/api/admin/jobs?${query}`, tenant).expect(200);
  return response.body.items as JobBody[];
}

/** The BullMQ job that indexes a document: its id names the document. */
async function indexingJobOf(stack: TestStack, documentId: string, state: string): Promise<JobBody> {
  return waitFor(async () => (await jobs(stack, `queue=indexing&state=${state}&limit=100`)).find((job) => job.id.includes(documentId)), {
    what: `the indexing job of ${documentId} to be ${state}`,
  });
}

async function postDocument(stack: TestStack, tenant: Tenant, title: string): Promise<string> {
  const response = await stack
    .as(tenant.key, 'post', '/api/documents')
    .send({ title, content: `# ${title}\n\nSome words about ${title.toLowerCase()} to index.` })
    .expect(202);
  return response.body.id as string;
}

describe('jobs and queues admin', () => {
  describe('with jobs held in the queue (no workers, postgres)', () => {
    let stack: TestStack;
    let a: Tenant;
    let b: Tenant;
    let aDocument: string;
    let bDocument: string;

    beforeAll(async () => {
      stack = await startStack({ database: 'postgres', workers: false });
      a = await stack.createTenant();
      b = await stack.createTenant();
      aDocument = await postDocument(stack, a, 'Alpha');
      bDocument = await postDocument(stack, b, 'Bravo');
    });
    afterAll(async () => {
      await stack?.close();
    });

    it('describes both queues with counts, oldest waiting age, pause state and workers', async () => {
      const response = await stack.operator('get', '/api/admin/queues').expect(200);
      expect((response.body as QueueBody[]).map((queue) => queue.name).sort()).toEqual([...QUEUE_NAMES].sort());
      for (const queue of response.body as QueueBody[]) {
        expect(Object.keys(queue.counts)).toEqual(expect.arrayContaining(['waiting', 'active', 'delayed', 'completed', 'failed', 'paused']));
        expect(queue).toMatchObject({ is_paused: false, workers: 0 });
      }
      const byName = await waitFor(async () => {
        const current = await queues(stack);
        return current.indexing.oldest_waiting_age_seconds > 0 ? current : null;
      });
      expect(byName.indexing.counts).toMatchObject({ waiting: 2, active: 0, failed: 0, completed: 0, paused: 0 });
      expect(byName.reconcile.counts).toMatchObject({ waiting: 0, active: 0, failed: 0 });
      expect(byName.reconcile.oldest_waiting_age_seconds).toBe(0);
    });

    it('lists waiting jobs with their tenant and shows one with its data', async () => {
      const waiting = await jobs(stack, 'queue=indexing&state=waiting');
      expect(waiting).toHaveLength(2);
      const aJob = waiting.find((job) => job.id.includes(aDocument))!;
      expect(aJob).toMatchObject({ queue: 'indexing', name: 'indexing', state: 'waiting', tenant_id: a.id, attempts_made: 0, failed_reason: null, finished_at: null });
      expect(waiting.find((job) => job.id.includes(bDocument))!.tenant_id).toBe(b.id);
      // Without a queue, every queue is searched.
      expect((await jobs(stack, 'state=waiting')).map((job) => job.id).sort()).toEqual(waiting.map((job) => job.id).sort());

      const detail = await stack.operator('get', `/api/admin/jobs/indexing/${encodeURIComponent(aJob.id)}`).expect(200);
      expect(detail.body).toMatchObject({ id: aJob.id, state: 'waiting', tenant_id: a.id, data: { tenantId: a.id, documentId: aDocument, version: 1 } });
      const document = await stack.as(a.key, 'get', `/api/documents/${aDocument}`).expect(200);
      expect(detail.body.data.indexJobId).toBe(document.body.job_id);
      expect(Array.isArray(detail.body.logs)).toBe(true);
    });

    it('answers 404 for an unknown job and 400 for an unknown queue or state', async () => {
      expectError(await stack.operator('get', '/api/admin/jobs/indexing/no-such-job'), 404, 'not_found');
      expectError(await stack.operator('get', '/api/admin/jobs/emails/1'), 400, 'validation_failed');
      expectError(await stack.operator('get', '/api/admin/jobs?queue=emails'), 400, 'validation_failed');
      expectError(await stack.operator('get', '/api/admin/jobs?state=sleeping'), 400, 'validation_failed');
      expectError(await stack.operator('post', '/api/admin/jobs/indexing/no-such-job/retry'), 404, 'not_found');
      expectError(await stack.operator('post', '/api/admin/queues/emails/retry-failed').send({}), 400, 'validation_failed');
      expectError(await stack.operator('post', '/api/admin/queues/emails/pause'), 400, 'validation_failed');
    });

    it('refuses to retry a job that is not failed with 409 and leaves it waiting', async () => {
      const job = await indexingJobOf(stack, aDocument, 'waiting');
      const response = await stack.operator('post', `/api/admin/jobs/indexing/${encodeURIComponent(job.id)}/retry`);
      expectError(response, 409, 'conflict');
      expect(response.body.error.details).toEqual({ state: 'waiting' });
      expect((await queues(stack)).indexing.counts.waiting).toBe(2);
    });

    it('reports the documented platform stats', async () => {
      const response = await stack.operator('get', '/api/admin/stats').expect(200);
      const documents = Number((await stack.sql((db) => db('documents').count('* as n').first()))?.n);
      expect(documents).toBe(2);
      expect(response.body).toMatchObject({
        total_documents: documents,
        indexed_documents: 0,
        total_chunks: 0,
        active_jobs: 0,
        pending_jobs: 2,
        failed_jobs: 0,
        queue_depth: 2,
        uptime_secs: expect.any(Number),
      });
      expect(response.body.uptime_secs).toBeGreaterThanOrEqual(0);
    });

    it('counts the jobs of a paused queue once in the platform stats', async () => {
      await stack.operator('post', '/api/admin/queues/indexing/pause').expect(200);
      try {
        const paused = await stack.operator('get', '/api/admin/stats').expect(200);
        expect(paused.body).toMatchObject({ pending_jobs: 2, queue_depth: 2 });
      } finally {
        await stack.operator('post', '/api/admin/queues/indexing/resume').expect(200);
      }
    });

    it("shows a jobs:manage key only its own tenant's jobs", async () => {
      const manager = (await stack.operator('post', '/api/admin/api-keys', a.id).send({ name: 'jobs', scopes: ['jobs:manage'] }).expect(201)).body.key;
      const own = await stack.as(manager, 'get', '/api/admin/jobs?queue=indexing&state=waiting').expect(200);
      expect(own.body.items.map((job: JobBody) => job.tenant_id)).toEqual([a.id]);
      expect(own.body.items[0].id).toContain(aDocument);
      const everyQueue = await stack.as(manager, 'get', '/api/admin/jobs?state=waiting').expect(200);
      expect(everyQueue.body.items.map((job: JobBody) => job.tenant_id)).toEqual([a.id]);

      const bJob = await indexingJobOf(stack, bDocument, 'waiting');
      const aJob = await indexingJobOf(stack, aDocument, 'waiting');
      await stack.as(manager, 'get', `/api/admin/jobs/indexing/${encodeURIComponent(aJob.id)}`).expect(200);
      expectError(await stack.as(manager, 'get', `/api/admin/jobs/indexing/${encodeURIComponent(bJob.id)}`), 404, 'not_found');
      expectError(await stack.as(manager, 'post', `/api/admin/jobs/indexing/${encodeURIComponent(bJob.id)}/retry`), 404, 'not_found');
      const retried = await stack.as(manager, 'post', '/api/admin/queues/indexing/retry-failed').send({ dry_run: true }).expect(200);
      expect(retried.body).toEqual({ matched: 0, retried: 0 });

      // The operator naming a tenant sees that tenant's jobs only.
      expect((await jobs(stack, 'queue=indexing&state=waiting', b.slug)).map((job) => job.tenant_id)).toEqual([b.id]);
    });

    it('refuses the jobs routes to a key without jobs:manage and the operator-only routes to any key', async () => {
      const reader = (await stack.operator('post', '/api/admin/api-keys', a.id).send({ name: 'reader', scopes: ['documents:read', 'documents:write', 'search'] }).expect(201)).body.key;
      expectError(await stack.as(reader, 'get', '/api/admin/jobs?queue=indexing'), 403, 'forbidden');
      expectError(await stack.as(reader, 'post', '/api/admin/queues/indexing/retry-failed').send({}), 403, 'forbidden');
      const manager = (await stack.operator('post', '/api/admin/api-keys', a.id).send({ name: 'jobs', scopes: ['jobs:manage'] }).expect(201)).body.key;
      expectError(await stack.as(manager, 'get', '/api/admin/queues'), 403, 'forbidden');
      expectError(await stack.as(manager, 'post', '/api/admin/queues/indexing/pause'), 403, 'forbidden');
      expectError(await stack.as(manager, 'get', '/api/admin/stats'), 403, 'forbidden');
      expectError(await stack.as(a.key, 'get', '/api/admin/queues'), 403, 'forbidden');
      expect((await queues(stack)).indexing.is_paused).toBe(false);
    });
  });

  describe('with workers and an embeddings provider that rejects input (pglite)', () => {
    let stack: TestStack;
    let tenant: Tenant;
    let provider: FakeEmbeddingsProvider;
    const documents: string[] = [];

    beforeAll(async () => {
      // Refuses every input until a test lets it embed.
      provider = await startEmbeddingsProvider({ dimensions: 384, model: 'test-embedder', rejects: () => true });
      stack = await startStack({ database: 'pglite', env: { ...provider.env, EMBEDDINGS_MAX_RETRIES: '0' } });
      tenant = await stack.createTenant();
    }, PGLITE_START_TIMEOUT_MS);
    afterAll(async () => {
      await stack?.close();
      await provider?.close();
    });

    it('lists real failed jobs with their reasons and shows a job with its secrets redacted', async () => {
      for (const title of ['Apples', 'Pears', 'Plums']) documents.push(await postDocument(stack, tenant, title));
      for (const id of documents) {
        const failed = await stack.waitForDocument(tenant.key, id, 'failed');
        expect(failed.error).toMatch(/HTTP 400/);
      }
      await stack.platform.queues
        .queue('indexing')
        .add('indexing', { bad: 1, api_key: 'do-not-show-me' }, { jobId: 'bad-1', attempts: 1 });
      await waitFor(async () => (await queues(stack)).indexing.counts.failed === 4, { what: 'four failed indexing jobs' });

      const failed = await jobs(stack, 'queue=indexing&state=failed');
      expect(failed).toHaveLength(4);
      expect(failed.filter((job) => /HTTP 400/.test(job.failed_reason ?? ''))).toHaveLength(3);
      const bad = failed.find((job) => job.id === 'bad-1')!;
      expect(bad).toMatchObject({ state: 'failed', tenant_id: null, attempts_made: 1 });
      expect(bad.failed_reason).toMatch(/Invalid payload/);
      expect(bad.finished_at).not.toBeNull();
      // failed is the default state.
      expect((await jobs(stack, 'queue=indexing')).map((job) => job.id).sort()).toEqual(failed.map((job) => job.id).sort());

      const detail = await stack.operator('get', '/api/admin/jobs/indexing/bad-1').expect(200);
      expect(detail.body.data).toEqual({ bad: 1, api_key: '[redacted]' });
      expect(JSON.stringify(detail.body)).not.toContain('do-not-show-me');
      expect(detail.body.stacktrace.length).toBeGreaterThan(0);
    });

    it('counts failed jobs in a dry run without moving any, honouring the reason filter', async () => {
      const failedBefore = (await jobs(stack, 'queue=indexing&state=failed')).map((job) => job.id).sort();
      const retry = (body: object) => stack.operator('post', '/api/admin/queues/indexing/retry-failed').send(body).expect(200);
      expect((await retry({ dry_run: true })).body).toEqual({ matched: 4, retried: 0 });
      expect((await retry({ dry_run: true, failed_reason_contains: 'invalid PAYLOAD' })).body).toEqual({ matched: 1, retried: 0 });
      expect((await retry({ dry_run: true, failed_reason_contains: 'HTTP 400' })).body).toEqual({ matched: 3, retried: 0 });
      expect((await retry({ dry_run: true, failed_reason_contains: 'no reason looks like this' })).body).toEqual({ matched: 0, retried: 0 });
      expectError(await stack.operator('post', '/api/admin/queues/indexing/retry-failed').send({ dry_run: 'yes' }), 400, 'validation_failed');
      expectError(await stack.operator('post', '/api/admin/queues/indexing/retry-failed').send({ failed_reason_contains: '' }), 400, 'validation_failed');

      expect((await queues(stack)).indexing.counts).toMatchObject({ failed: 4, waiting: 0, active: 0 });
      expect((await jobs(stack, 'queue=indexing&state=failed')).map((job) => job.id).sort()).toEqual(failedBefore);
      for (const id of documents) expect((await stack.as(tenant.key, 'get', `/api/documents/${id}`).expect(200)).body.status).toBe('failed');
    });

    it('retries one failed job once the provider works again, and refuses to retry it when completed', async () => {
      provider.rejects = () => false;
      const job = await indexingJobOf(stack, documents[0], 'failed');
      // It had used up its attempt-free re-delays for database outages: a retry's fresh budget includes those.
      const held = (await stack.platform.queues.queue('indexing').getJob(job.id))!;
      await held.updateData({ ...held.data, [DATABASE_RETRIES]: stack.config.WORKER_DATABASE_RETRIES });
      const response = await stack.operator('post', `/api/admin/jobs/indexing/${encodeURIComponent(job.id)}/retry`).expect(200);
      expect(response.body).toMatchObject({ id: job.id, queue: 'indexing', retried: true });
      const indexed = await stack.waitForDocument(tenant.key, documents[0], 'indexed');
      expect(indexed.chunk_count).toBeGreaterThan(0);
      expect(indexed.error).toBeNull();
      // The document's index job, failed before, now reads completed.
      const indexJob = await stack.as(tenant.key, 'get', `/api/index/jobs/${indexed.job_id}`).expect(200);
      expect(indexJob.body).toMatchObject({ status: 'completed', documents_completed: 1, documents_failed: 0, error: null });
      expect(indexJob.body.completed_at).not.toBeNull();
      const detail = await stack.operator('get', `/api/admin/jobs/indexing/${encodeURIComponent(job.id)}`).expect(200);
      expect(detail.body.data).not.toHaveProperty(DATABASE_RETRIES);

      await indexingJobOf(stack, documents[0], 'completed');
      const again = await stack.operator('post', `/api/admin/jobs/indexing/${encodeURIComponent(job.id)}/retry`);
      expectError(again, 409, 'conflict');
      expect(again.body.error.details).toEqual({ state: 'completed' });
      expect((await queues(stack)).indexing.counts.failed).toBe(3);
    });

    it('retries exactly the failed jobs that match, and the failed count drops', async () => {
      const response = await stack
        .operator('post', '/api/admin/queues/indexing/retry-failed')
        .send({ failed_reason_contains: 'HTTP 400' })
        .expect(200);
      expect(response.body).toEqual({ matched: 2, retried: 2 });
      // Only the invalid payload is left failed: the retried jobs left the failed set at once.
      expect((await jobs(stack, 'queue=indexing&state=failed')).map((job) => job.id)).toEqual(['bad-1']);
      for (const id of documents.slice(1)) await stack.waitForDocument(tenant.key, id, 'indexed');
      const found = await stack.as(tenant.key, 'post', '/api/search').send({ query: 'plums', mode: 'hybrid' }).expect(200);
      expect(found.body.results[0].document_id).toBe(documents[2]);

      // Without a filter the rest is retried, with a fresh budget; the invalid payload fails again on its own.
      const [before] = await jobs(stack, 'queue=indexing&state=failed');
      const rest = await stack.operator('post', '/api/admin/queues/indexing/retry-failed').send({}).expect(200);
      expect(rest.body).toEqual({ matched: 1, retried: 1 });
      const again = await waitFor(
        async () => {
          const [bad] = await jobs(stack, 'queue=indexing&state=failed');
          return bad?.id === 'bad-1' && bad.finished_at! > before.finished_at! ? bad : null;
        },
        { what: 'the invalid job to fail a second time' },
      );
      expect(again.attempts_made).toBe(1);
    });

    it('reports failed jobs and indexed documents in the platform stats', async () => {
      const stats = await stack.operator('get', '/api/admin/stats').expect(200);
      const current = await queues(stack);
      expect(stats.body).toMatchObject({
        total_documents: 3,
        indexed_documents: 3,
        failed_jobs: current.indexing.counts.failed + current.reconcile.counts.failed,
      });
      expect(stats.body.failed_jobs).toBe(1);
      const chunks = Number((await stack.sql((db) => db('chunks').count('* as n').first()))?.n);
      expect(stats.body.total_chunks).toBe(chunks);
    });

    it('holds new jobs while the queue is paused, with workers running, and runs them on resume', async () => {
      const paused = await stack.operator('post', '/api/admin/queues/indexing/pause').expect(200);
      expect(paused.body).toMatchObject({ name: 'indexing', is_paused: true });
      const listed = await queues(stack);
      expect(listed.indexing.is_paused).toBe(true);
      expect(listed.reconcile.is_paused).toBe(false);
      expect(listed.indexing.workers).toBeGreaterThan(0);

      const held = await postDocument(stack, tenant, 'Quinces');
      // A job on the other queue completing shows the workers are alive and fetching meanwhile.
      const tick = new Date().toISOString();
      const reconcileId = await stack.platform.queues.enqueue(reconcileQueue, { tick });
      await waitFor(async () => (await jobs(stack, 'queue=reconcile&state=completed')).some((job) => job.id === reconcileId), {
        what: 'the reconcile job to complete',
      });
      const whilePaused = await queues(stack);
      expect(whilePaused.indexing.counts).toMatchObject({ paused: 1, active: 0 });
      expect((await stack.as(tenant.key, 'get', `/api/documents/${held}`).expect(200)).body.status).toBe('queued');

      const resumed = await stack.operator('post', '/api/admin/queues/indexing/resume').expect(200);
      expect(resumed.body).toMatchObject({ name: 'indexing', is_paused: false });
      expect((await queues(stack)).indexing.is_paused).toBe(false);
      await stack.waitForDocument(tenant.key, held, 'indexed');
    });
  });
});
