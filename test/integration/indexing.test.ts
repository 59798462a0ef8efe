import { randomUUID } from 'node:crypto';
import type { Response } from 'supertest';
import { indexingQueue } from '../../queues';
import type { IndexingWork } from '../../src/domain/indexing/dispatch';
import { indexDocument, type IndexerDeps, type IndexOutcome } from '../../src/domain/indexing/indexer';
import { startEmbeddingsProvider, type FakeEmbeddingsProvider } from '../helpers/embeddings-provider';
import { startStack, type TestStack } from '../helpers/harness';
import { waitFor } from '../helpers/wait';

/** Index jobs (the HTTP API) and the indexing processor, on real queues and databases. */

type Tenant = { id: string; slug: string; key: string };

interface DocumentBody {
  id: string;
  status: string;
  version: number;
  chunk_count: number;
  job_id: string;
  indexed_at: string | null;
  error: string | null;
}

interface IndexJobBody {
  job_id: string;
  status: string;
  force_reindex: boolean;
  documents_total: number;
  documents_completed: number;
  documents_failed: number;
  started_at: string | null;
  completed_at: string | null;
  error: string | null;
  documents?: Array<{ document_id: string; version: number; status: string; error: string | null }>;
}

const UNKNOWN_ID = '0190b3a0-0000-7000-8000-000000000000';

/** Markdown long enough to make several chunks with the default chunking settings. */
const LONG_MARKDOWN = Array.from(
  { length: 6 },
  (_, section) => `## Section ${section}\n\n${Array.from({ length: 220 }, (__, word) => `term${section}w${word % 41}`).join(' ')}.`,
).join('\n\n');

function expectError(response: Response, status: number, code: string): void {
  expect(response.status).toBe(status);
  expect(response.headers['content-type']).toMatch(/application\/json/);
  expect(response.body.error).toMatchObject({ code, message: expect.any(String) });
}

async function createDocument(stack: TestStack, tenant: Tenant, body: Record<string, unknown>): Promise<DocumentBody> {
  const response = await stack.as(tenant.key, 'post', '/api/documents').send(body).expect(202);
  return response.body as DocumentBody;
}

async function getDocument(stack: TestStack, tenant: Tenant, id: string): Promise<DocumentBody> {
  return (await stack.as(tenant.key, 'get', `/api/documents/${id}`).expect(200)).body as DocumentBody;
}

async function getJob(stack: TestStack, tenant: Tenant, jobId: string): Promise<IndexJobBody> {
  return (await stack.as(tenant.key, 'get', `/api/index/jobs/${jobId}`).expect(200)).body as IndexJobBody;
}

/** Polls the job over HTTP until it reaches `status`; fails fast if it settles in another final state. */
async function waitForJob(stack: TestStack, tenant: Tenant, jobId: string, status: string): Promise<IndexJobBody> {
  return waitFor(
    async () => {
      const job = await getJob(stack, tenant, jobId);
      if (job.status !== status && ['completed', 'failed', 'canceled'].includes(job.status)) {
        throw new Error(`job ended ${job.status}: ${JSON.stringify(job)}`);
      }
      return job.status === status ? job : null;
    },
    { what: `index job ${jobId} to be ${status}`, timeoutMs: 40_000 },
  );
}

async function chunkRows(stack: TestStack, documentId: string): Promise<Array<{ id: string; ordinal: number; document_version: number }>> {
  return stack.sql((db) => db('chunks').select('id', 'ordinal', 'document_version').where({ document_id: documentId }).orderBy('ordinal'));
}

/** Exactly one set of chunks: as many rows as the document says, ordinals 0..n-1 each once. */
async function expectOneSetOfChunks(stack: TestStack, tenant: Tenant, documentId: string): Promise<void> {
  const document = await getDocument(stack, tenant, documentId);
  const rows = await chunkRows(stack, documentId);
  expect(document.chunk_count).toBeGreaterThan(0);
  expect(rows).toHaveLength(document.chunk_count);
  expect(rows.map((row) => row.ordinal)).toEqual(Array.from({ length: document.chunk_count }, (_, index) => index));
  expect(new Set(rows.map((row) => row.document_version))).toEqual(new Set([document.version]));
}

/** Sessions of this stack's database waiting for a lock. */
async function lockWaiters(stack: TestStack): Promise<number> {
  const result = await stack.platform.db.knex.raw(
    `select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`,
  );
  return result.rows[0].n as number;
}

/**
 * Runs the indexer for `work` and holds it inside its storing transaction
 * (item and document locked, chunks written, its event not yet) while
 * `during` starts; lets it go once `during` is waiting for a lock too. This
 * is the moment a user's request meets a worker mid-write.
 */
async function whileStoring<T>(stack: TestStack, work: IndexingWork, during: () => Promise<T>): Promise<{ outcome: unknown; result: T }> {
  const holder = await stack.platform.db.knex.transaction();
  try {
    // Only writers of events wait behind this lock, and this stack has no workers of its own writing any.
    await holder.raw('lock table webhook_events in share mode');
    const indexing = indexDocument(stack.platform.indexerDeps(), work).then(
      (outcome) => ({ ok: true as const, outcome }),
      (error: unknown) => ({ ok: false as const, error }),
    );
    await waitFor(async () => (await lockWaiters(stack)) >= 1, { what: 'the indexer to wait on the chunks lock' });
    const other = during().then(
      (result) => ({ ok: true as const, result }),
      (error: unknown) => ({ ok: false as const, error }),
    );
    await waitFor(async () => (await lockWaiters(stack)) >= 2, { what: 'the request to wait behind the indexer' });
    await holder.commit();
    const [indexed, finished] = await Promise.all([indexing, other]);
    if (!indexed.ok) throw indexed.error;
    if (!finished.ok) throw finished.error;
    return { outcome: indexed.outcome, result: finished.result };
  } finally {
    if (!holder.isCompleted()) await holder.rollback();
  }
}

const workOf = (tenant: Tenant, document: { id: string; job_id: string; version: number }): IndexingWork => ({
  tenantId: tenant.id,
  indexJobId: document.job_id,
  documentId: document.id,
  version: document.version,
});

describe('index jobs with workers (postgres)', () => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await startStack({ database: 'postgres' });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('POST /api/index without force completes at once and re-does nothing', async () => {
    const tenant = await stack.createTenant();
    const created = await createDocument(stack, tenant, { title: 'Long read', content: LONG_MARKDOWN });
    const indexed = (await stack.waitForDocument(tenant.key, created.id)) as unknown as DocumentBody;
    const chunksBefore = await chunkRows(stack, created.id);

    const response = await stack.as(tenant.key, 'post', '/api/index').send({ document_id: created.id }).expect(202);
    expect(response.body).toMatchObject({ job_id: expect.any(String), force_reindex: false, documents_total: 1 });
    const job = await waitForJob(stack, tenant, response.body.job_id, 'completed');
    expect(job).toMatchObject({ documents_total: 1, documents_completed: 1, documents_failed: 0, error: null });
    expect(job.documents).toEqual([{ document_id: created.id, version: 1, status: 'completed', error: null }]);

    const after = await getDocument(stack, tenant, created.id);
    expect(after).toMatchObject({ status: 'indexed', indexed_at: indexed.indexed_at, job_id: created.job_id });
    expect(await chunkRows(stack, created.id)).toEqual(chunksBefore);
  });

  it('POST /api/index with force_reindex indexes again and keeps one set of chunks', async () => {
    const tenant = await stack.createTenant();
    const created = await createDocument(stack, tenant, { title: 'Long read', content: LONG_MARKDOWN });
    const indexed = (await stack.waitForDocument(tenant.key, created.id)) as unknown as DocumentBody;
    expect(indexed.chunk_count).toBeGreaterThan(1);
    const chunksBefore = await chunkRows(stack, created.id);

    const response = await stack.as(tenant.key, 'post', '/api/index').send({ document_id: created.id, force_reindex: true }).expect(202);
    expect(response.body).toMatchObject({ force_reindex: true, documents_total: 1 });
    const job = await waitForJob(stack, tenant, response.body.job_id, 'completed');
    expect(job).toMatchObject({ documents_completed: 1, documents_failed: 0 });

    const after = await getDocument(stack, tenant, created.id);
    expect(after).toMatchObject({ status: 'indexed', version: 1, job_id: response.body.job_id, chunk_count: indexed.chunk_count });
    expect(after.indexed_at).not.toBe(indexed.indexed_at);
    await expectOneSetOfChunks(stack, tenant, created.id);
    // The chunks are new rows, not the old ones left in place.
    const oldIds = new Set(chunksBefore.map((row) => row.id));
    expect((await chunkRows(stack, created.id)).filter((row) => oldIds.has(row.id))).toEqual([]);
  });

  it('POST /api/index/batch runs to completion with visible progress and is listed', async () => {
    const tenant = await stack.createTenant();
    const batch = await stack
      .as(tenant.key, 'post', '/api/documents/batch')
      .send({ documents: Array.from({ length: 5 }, (_, index) => ({ title: `Batch ${index}`, content: `${LONG_MARKDOWN}\n\nextra ${index}` })) })
      .expect(202);
    const ids: string[] = batch.body.items.map((item: DocumentBody) => item.id);
    await waitForJob(stack, tenant, batch.body.job_id, 'completed');

    const response = await stack.as(tenant.key, 'post', '/api/index/batch').send({ document_ids: ids, force_reindex: true }).expect(202);
    expect(response.body).toMatchObject({ documents_total: 5, force_reindex: true });
    const seenCompleted = new Set<number>();
    const job = await waitFor(
      async () => {
        const current = await getJob(stack, tenant, response.body.job_id);
        seenCompleted.add(current.documents_completed);
        expect(current.documents_completed).toBeLessThanOrEqual(5);
        return current.status === 'completed' ? current : null;
      },
      { what: 'the batch index job to complete' },
    );
    expect(job).toMatchObject({ documents_total: 5, documents_completed: 5, documents_failed: 0, error: null });
    expect(job.started_at).toEqual(expect.any(String));
    expect(job.completed_at).toEqual(expect.any(String));
    expect(job.documents?.map((item) => item.status)).toEqual(Array(5).fill('completed'));
    for (const id of ids) await expectOneSetOfChunks(stack, tenant, id);

    const list = await stack.as(tenant.key, 'get', '/api/index/jobs').expect(200);
    expect(list.body.items.map((item: IndexJobBody) => item.job_id)).toEqual([response.body.job_id, batch.body.job_id]);
    expect(list.body.items[0]).not.toHaveProperty('documents');
    const completed = await stack.as(tenant.key, 'get', '/api/index/jobs?status=completed').expect(200);
    expect(completed.body.items).toHaveLength(2);
    const failed = await stack.as(tenant.key, 'get', '/api/index/jobs?status=failed').expect(200);
    expect(failed.body.items).toEqual([]);
    const paged = await stack.as(tenant.key, 'get', '/api/index/jobs?limit=1').expect(200);
    expect(paged.body.items.map((item: IndexJobBody) => item.job_id)).toEqual([response.body.job_id]);
    const rest = await stack.as(tenant.key, 'get', `/api/index/jobs?limit=1&cursor=${paged.body.next_cursor}`).expect(200);
    expect(rest.body).toMatchObject({ items: [{ job_id: batch.body.job_id }], next_cursor: null });
  });

  it('answers 404 naming the missing documents and creates nothing', async () => {
    const tenant = await stack.createTenant();
    const created = await createDocument(stack, tenant, { title: 'Real', content: 'a real document' });
    await stack.waitForDocument(tenant.key, created.id);
    const before = await stack.as(tenant.key, 'get', '/api/index/jobs').expect(200);

    const response = await stack.as(tenant.key, 'post', '/api/index/batch').send({ document_ids: [created.id, UNKNOWN_ID], force_reindex: true });
    expectError(response, 404, 'not_found');
    expect(response.body.error.details.missing).toEqual([UNKNOWN_ID]);
    expectError(await stack.as(tenant.key, 'post', '/api/index').send({ document_id: UNKNOWN_ID }), 404, 'not_found');

    const after = await stack.as(tenant.key, 'get', '/api/index/jobs').expect(200);
    expect(after.body.items).toEqual(before.body.items);
    expect(await getDocument(stack, tenant, created.id)).toMatchObject({ status: 'indexed', job_id: created.job_id });
  });

  it('refuses malformed index requests', async () => {
    const tenant = await stack.createTenant();
    expectError(await stack.as(tenant.key, 'post', '/api/index').send({ document_id: 'nope' }), 400, 'validation_failed');
    expectError(await stack.as(tenant.key, 'post', '/api/index').send({ document_id: UNKNOWN_ID, force_reindex: 'yes' }), 400, 'validation_failed');
    expectError(await stack.as(tenant.key, 'post', '/api/index/batch').send({ document_ids: [] }), 400, 'validation_failed');
    expectError(await stack.as(tenant.key, 'post', '/api/index/batch').send({ document_ids: Array(1001).fill(UNKNOWN_ID) }), 400, 'validation_failed');
    expectError(await stack.as(tenant.key, 'get', '/api/index/jobs/nope'), 400, 'validation_failed');
    expectError(await stack.as(tenant.key, 'get', `/api/index/jobs/${UNKNOWN_ID}`), 404, 'not_found');
    expectError(await stack.as(tenant.key, 'get', '/api/index/jobs?status=done'), 400, 'validation_failed');
    expect((await stack.as(tenant.key, 'get', '/api/index/jobs').expect(200)).body.items).toEqual([]);
  });

  it('running the processor again on finished work is skipped and changes nothing', async () => {
    const tenant = await stack.createTenant();
    const created = await createDocument(stack, tenant, { title: 'Once', content: LONG_MARKDOWN });
    const indexed = (await stack.waitForDocument(tenant.key, created.id)) as unknown as DocumentBody;
    const chunksBefore = await chunkRows(stack, created.id);

    const outcome = await indexDocument(stack.platform.indexerDeps(), workOf(tenant, created));
    expect(outcome.outcome).toBe('skipped');
    expect(await chunkRows(stack, created.id)).toEqual(chunksBefore);
    expect(await getDocument(stack, tenant, created.id)).toMatchObject({ status: 'indexed', indexed_at: indexed.indexed_at });
  });

  it('enqueueing finished work again under the same job id does not run it again', async () => {
    const tenant = await stack.createTenant();
    const created = await createDocument(stack, tenant, { title: 'Queued once', content: 'nothing special' });
    const indexed = (await stack.waitForDocument(tenant.key, created.id)) as unknown as DocumentBody;
    const queue = stack.platform.queues.queue(indexingQueue.name);
    const work = workOf(tenant, created);
    const jobId = indexingQueue.jobId(work);
    await waitFor(async () => (await queue.getJob(jobId))?.isCompleted(), { what: 'the BullMQ job to complete' });

    expect(await stack.platform.queues.enqueue(indexingQueue, work)).toBe(jobId);
    expect(await stack.platform.queues.enqueue(indexingQueue, work)).toBe(jobId);
    // Still the completed job: nothing new waits, and the document was not touched.
    expect(await (await queue.getJob(jobId))!.getState()).toBe('completed');
    expect(await queue.getJobCounts('waiting', 'active', 'delayed')).toEqual({ waiting: 0, active: 0, delayed: 0 });
    expect(await getDocument(stack, tenant, created.id)).toMatchObject({ indexed_at: indexed.indexed_at });
  });

  it("hides one tenant's index jobs from another", async () => {
    const a = await stack.createTenant();
    const b = await stack.createTenant();
    const created = await createDocument(stack, a, { title: 'Mine', content: 'belongs to A' });
    await stack.waitForDocument(a.key, created.id);
    const job = (await stack.as(a.key, 'post', '/api/index').send({ document_id: created.id, force_reindex: true }).expect(202)).body as IndexJobBody;

    expectError(await stack.as(b.key, 'get', `/api/index/jobs/${job.job_id}`), 404, 'not_found');
    expectError(await stack.as(b.key, 'get', `/api/index/jobs/${created.job_id}`), 404, 'not_found');
    expectError(await stack.as(b.key, 'post', `/api/index/jobs/${job.job_id}/cancel`), 404, 'not_found');
    expectError(await stack.operator('post', `/api/index/jobs/${job.job_id}/cancel`, b.slug), 404, 'not_found');
    expectError(await stack.as(b.key, 'post', '/api/index').send({ document_id: created.id }), 404, 'not_found');
    expect((await stack.as(b.key, 'get', '/api/index/jobs').expect(200)).body.items).toEqual([]);

    // A's job was not canceled by B's attempts.
    await waitForJob(stack, a, job.job_id, 'completed');
    expect((await stack.operator('get', `/api/index/jobs/${job.job_id}`, a.slug).expect(200)).body.status).toBe('completed');
  });
});

describe('index jobs without workers (postgres)', () => {
  let stack: TestStack;
  beforeAll(async () => {
    // No workers: queued work stays queued until a test runs it, so every step can be observed.
    stack = await startStack({ database: 'postgres', workers: false });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('shows progress item by item as a batch is processed', async () => {
    const tenant = await stack.createTenant();
    const batch = await stack
      .as(tenant.key, 'post', '/api/documents/batch')
      .send({ documents: Array.from({ length: 3 }, (_, index) => ({ title: `Step ${index}`, content: `step number ${index}` })) })
      .expect(202);
    const items = batch.body.items as DocumentBody[];
    expect(await getJob(stack, tenant, batch.body.job_id)).toMatchObject({ status: 'queued', documents_total: 3, documents_completed: 0, started_at: null });

    expect(await indexDocument(stack.platform.indexerDeps(), workOf(tenant, items[0]))).toMatchObject({ outcome: 'indexed' });
    expect(await getJob(stack, tenant, batch.body.job_id)).toMatchObject({
      status: 'processing',
      documents_completed: 1,
      started_at: expect.any(String),
      completed_at: null,
    });
    await indexDocument(stack.platform.indexerDeps(), workOf(tenant, items[1]));
    expect(await getJob(stack, tenant, batch.body.job_id)).toMatchObject({ status: 'processing', documents_completed: 2 });
    await indexDocument(stack.platform.indexerDeps(), workOf(tenant, items[2]));
    expect(await getJob(stack, tenant, batch.body.job_id)).toMatchObject({ status: 'completed', documents_completed: 3, completed_at: expect.any(String) });
  });

  it('cancels a queued job: documents canceled, queue job withdrawn, second cancel 409', async () => {
    const tenant = await stack.createTenant();
    const queue = stack.platform.queues.queue(indexingQueue.name);
    const batch = await stack
      .as(tenant.key, 'post', '/api/documents/batch')
      .send({ documents: [{ title: 'Never', content: 'never indexed' }, { title: 'Nor this', content: 'also never indexed' }] })
      .expect(202);
    const items = batch.body.items as DocumentBody[];
    const jobIds = items.map((item) => indexingQueue.jobId(workOf(tenant, item)));
    for (const jobId of jobIds) expect(await (await queue.getJob(jobId))?.getState()).toBe('waiting');
    const waitingBefore = (await queue.getJobCounts('waiting')).waiting;

    const canceled = await stack.as(tenant.key, 'post', `/api/index/jobs/${batch.body.job_id}/cancel`).expect(200);
    expect(canceled.body).toMatchObject({ job_id: batch.body.job_id, status: 'canceled', documents_total: 2, completed_at: expect.any(String) });
    for (const item of items) expect(await getDocument(stack, tenant, item.id)).toMatchObject({ status: 'canceled', chunk_count: 0 });
    const detail = await getJob(stack, tenant, batch.body.job_id);
    expect(detail.documents?.map((item) => item.status)).toEqual(['canceled', 'canceled']);
    for (const jobId of jobIds) expect(await queue.getJob(jobId)).toBeUndefined();
    expect((await queue.getJobCounts('waiting')).waiting).toBe(waitingBefore - 2);

    const again = await stack.as(tenant.key, 'post', `/api/index/jobs/${batch.body.job_id}/cancel`);
    expectError(again, 409, 'conflict');
    expectError(await stack.as(tenant.key, 'post', `/api/index/jobs/${UNKNOWN_ID}/cancel`), 404, 'not_found');
    expectError(await stack.as(tenant.key, 'post', '/api/index/jobs/nope/cancel'), 400, 'validation_failed');

    // Work for the canceled job that still reached a worker does nothing.
    expect(await indexDocument(stack.platform.indexerDeps(), workOf(tenant, items[0]))).toMatchObject({ outcome: 'skipped' });
    expect(await chunkRows(stack, items[0].id)).toEqual([]);
  });

  it('a finished job cannot be canceled', async () => {
    const tenant = await stack.createTenant();
    const created = await createDocument(stack, tenant, { title: 'Done', content: 'finished work' });
    await indexDocument(stack.platform.indexerDeps(), workOf(tenant, created));
    expectError(await stack.as(tenant.key, 'post', `/api/index/jobs/${created.job_id}/cancel`), 409, 'conflict');
    expect(await getDocument(stack, tenant, created.id)).toMatchObject({ status: 'indexed' });
  });

  it('the same item run twice at once leaves one set of chunks', async () => {
    const tenant = await stack.createTenant();
    const created = await createDocument(stack, tenant, { title: 'Race', content: LONG_MARKDOWN });
    const work = workOf(tenant, created);
    const outcomes = await Promise.all([indexDocument(stack.platform.indexerDeps(), work), indexDocument(stack.platform.indexerDeps(), work)]);
    expect(outcomes.map((outcome) => outcome.outcome).sort()).toEqual(['indexed', 'skipped']);
    expect(await getDocument(stack, tenant, created.id)).toMatchObject({ status: 'indexed' });
    await expectOneSetOfChunks(stack, tenant, created.id);
    expect(await getJob(stack, tenant, created.job_id)).toMatchObject({ status: 'completed', documents_completed: 1 });
  });

  /**
   * Holds the storing of a first document (its transaction waits on a lock of the chunks table), so the
   * documents prepared meanwhile queue behind it in the process's store batcher; `indexing` starts them,
   * and is released once each of them has left the worker threads.
   */
  async function storedBehindOne(
    tenant: Tenant,
    first: DocumentBody,
    indexing: (deps: IndexerDeps) => Array<Promise<IndexOutcome>>,
    prepared: number,
  ): Promise<PromiseSettledResult<IndexOutcome>[]> {
    const holder = await stack.platform.db.knex.transaction();
    try {
      await holder.raw('lock table chunks in share mode');
      const deps = stack.platform.indexerDeps();
      const firstRun = indexDocument(deps, workOf(tenant, first));
      await waitFor(async () => (await lockWaiters(stack)) >= 1, { what: 'the first store to wait on the chunks lock' });
      // The real worker threads, counted: a document that has left them is in the batcher's queue a tick later.
      let done = 0;
      const counted: IndexerDeps = {
        ...deps,
        cpu: Object.assign(Object.create(deps.cpu), { run: (...args: Parameters<typeof deps.cpu.run>) => deps.cpu.run(...args).finally(() => (done += 1)) }),
      };
      const runs = indexing(counted);
      await waitFor(() => done >= prepared, { what: `${prepared} documents to be prepared` });
      await new Promise((resolve) => setTimeout(resolve, 50));
      await holder.commit();
      return await Promise.allSettled([firstRun, ...runs]);
    } finally {
      if (!holder.isCompleted()) await holder.rollback();
    }
  }

  it('documents prepared while another is being stored are stored together, in one transaction', async () => {
    const tenant = await stack.createTenant();
    const batch = await stack
      .as(tenant.key, 'post', '/api/documents/batch')
      .send({ documents: Array.from({ length: 6 }, (_, index) => ({ title: `Together ${index}`, content: `${LONG_MARKDOWN}\n\ncommon${index}` })) })
      .expect(202);
    const items = batch.body.items as DocumentBody[];
    const outcomes = await storedBehindOne(tenant, items[0], (deps) => items.slice(1).map((item) => indexDocument(deps, workOf(tenant, item))), 5);
    expect(outcomes.map((outcome) => outcome.status === 'fulfilled' && outcome.value.outcome)).toEqual(Array(6).fill('indexed'));

    const documents = await Promise.all(items.map((item) => getDocument(stack, tenant, item.id)));
    for (const item of items) await expectOneSetOfChunks(stack, tenant, item.id);
    // now() is the transaction's start: the five queued behind the first share it, the first does not.
    const [first, ...together] = documents.map((document) => document.indexed_at);
    expect(new Set(together).size).toBe(1);
    expect(together[0]).not.toBe(first);
    expect(await getJob(stack, tenant, batch.body.job_id)).toMatchObject({ status: 'completed', documents_completed: 6, documents_failed: 0 });
    const events = await stack.sql((db) => db('webhook_events').where({ tenant_id: tenant.id, type: 'document.indexed' }).select('payload'));
    expect(events.map((event) => event.payload.data.id).sort()).toEqual(items.map((item) => item.id).sort());
    const hits = await stack.as(tenant.key, 'post', '/api/search').send({ query: 'common4', mode: 'keyword' }).expect(200);
    expect(hits.body.results.map((hit: { document_id: string }) => hit.document_id)).toEqual([items[4].id]);
  });

  it('a batch that fails as a whole is stored document by document', async () => {
    const tenant = await stack.createTenant();
    const batch = await stack
      .as(tenant.key, 'post', '/api/documents/batch')
      .send({ documents: Array.from({ length: 3 }, (_, index) => ({ title: `Apart ${index}`, content: LONG_MARKDOWN })) })
      .expect(202);
    const items = batch.body.items as DocumentBody[];
    // The same work twice in one batch inserts its chunks twice: the batch's transaction fails on their uniqueness.
    const outcomes = await storedBehindOne(
      tenant,
      items[0],
      (deps) => [indexDocument(deps, workOf(tenant, items[1])), indexDocument(deps, workOf(tenant, items[1])), indexDocument(deps, workOf(tenant, items[2]))],
      3,
    );
    const values = outcomes.map((outcome) => (outcome.status === 'fulfilled' ? outcome.value.outcome : String(outcome.reason)));
    expect(values[0]).toBe('indexed');
    expect([values[1], values[2]].sort()).toEqual(['indexed', 'skipped']);
    expect(values[3]).toBe('indexed');
    for (const item of items) await expectOneSetOfChunks(stack, tenant, item.id);
    expect(await getJob(stack, tenant, batch.body.job_id)).toMatchObject({ status: 'completed', documents_completed: 3 });
  });

  it('a cancel arriving while a document is being stored waits for it and answers 409', async () => {
    const tenant = await stack.createTenant();
    const created = await createDocument(stack, tenant, { title: 'Mid-write', content: LONG_MARKDOWN });
    const { outcome, result } = await whileStoring(stack, workOf(tenant, created), () =>
      stack.as(tenant.key, 'post', `/api/index/jobs/${created.job_id}/cancel`).then((response) => response),
    );
    expect(outcome).toMatchObject({ outcome: 'indexed' });
    // The write finished first, so the job was already completed when the cancel got its turn.
    expectError(result, 409, 'conflict');
    expect(await getJob(stack, tenant, created.job_id)).toMatchObject({ status: 'completed', documents_completed: 1 });
    expect(await getDocument(stack, tenant, created.id)).toMatchObject({ status: 'indexed' });
    await expectOneSetOfChunks(stack, tenant, created.id);
  });

  it('a delete arriving while a document is being stored leaves no chunks behind', async () => {
    const tenant = await stack.createTenant();
    const created = await createDocument(stack, tenant, { title: 'Mid-write', content: LONG_MARKDOWN });
    const { outcome, result } = await whileStoring(stack, workOf(tenant, created), () =>
      stack.as(tenant.key, 'delete', `/api/documents/${created.id}`).then((response) => response),
    );
    expect(outcome).toMatchObject({ outcome: 'indexed' });
    expect(result.status).toBe(204);
    expectError(await stack.as(tenant.key, 'get', `/api/documents/${created.id}`), 404, 'not_found');
    expect(await chunkRows(stack, created.id)).toEqual([]);
  });

  it('deleting a document whose indexing is queued finishes its job', async () => {
    const tenant = await stack.createTenant();
    const created = await createDocument(stack, tenant, { title: 'Short-lived', content: 'deleted before any worker saw it' });
    await stack.as(tenant.key, 'delete', `/api/documents/${created.id}`).expect(204);
    const job = await getJob(stack, tenant, created.job_id);
    expect(job.documents).toEqual([{ document_id: created.id, version: 1, status: 'canceled', error: expect.stringMatching(/deleted/i) }]);
    // Nothing is left to do, so the job must not sit in `queued` forever; nothing was indexed, so it ends canceled.
    expect(job).toMatchObject({ status: 'canceled', documents_completed: 0, documents_failed: 0, completed_at: expect.any(String) });
    // The queued work that reaches a worker later does nothing.
    expect(await indexDocument(stack.platform.indexerDeps(), workOf(tenant, created))).toMatchObject({ outcome: 'skipped' });
    expect(await chunkRows(stack, created.id)).toEqual([]);
  });

  it('enqueueing the same payload twice gives one BullMQ job', async () => {
    const tenant = await stack.createTenant();
    const queue = stack.platform.queues.queue(indexingQueue.name);
    // A payload no document path has enqueued yet, so the first call really adds it.
    const work: IndexingWork = { tenantId: tenant.id, indexJobId: randomUUID(), documentId: randomUUID(), version: 1 };
    const waitingBefore = (await queue.getJobCounts('waiting')).waiting;
    const first = await stack.platform.queues.enqueue(indexingQueue, work);
    const second = await stack.platform.queues.enqueue(indexingQueue, work);
    expect(second).toBe(first);
    expect(first).toBe(indexingQueue.jobId(work));
    expect((await queue.getJobCounts('waiting')).waiting).toBe(waitingBefore + 1);
    await queue.remove(first);
  });

  it('a PATCH supersedes the queued version; the newer one is indexed', async () => {
    const tenant = await stack.createTenant();
    const v1 = await createDocument(stack, tenant, { title: 'Draft', content: 'the first draft mentions walruses' });
    const v2 = (await stack.as(tenant.key, 'patch', `/api/documents/${v1.id}`).send({ content: 'the second draft mentions narwhals' }).expect(202))
      .body as DocumentBody;
    expect(v2).toMatchObject({ version: 2, status: 'queued' });
    expect(v2.job_id).not.toBe(v1.job_id);

    // The older work reaches a worker first: it must not index stale content.
    const stale = await indexDocument(stack.platform.indexerDeps(), workOf(tenant, v1));
    expect(stale).toMatchObject({ outcome: 'skipped' });
    const oldJob = await getJob(stack, tenant, v1.job_id);
    expect(oldJob.documents).toEqual([{ document_id: v1.id, version: 1, status: 'canceled', error: expect.stringMatching(/superseded/i) }]);
    expect(oldJob).toMatchObject({ status: 'canceled', error: expect.stringMatching(/superseded/) });
    expect(await getDocument(stack, tenant, v1.id)).toMatchObject({ status: 'queued', version: 2, job_id: v2.job_id });
    expect(await chunkRows(stack, v1.id)).toEqual([]);

    expect(await indexDocument(stack.platform.indexerDeps(), workOf(tenant, v2))).toMatchObject({ outcome: 'indexed' });
    expect(await getDocument(stack, tenant, v1.id)).toMatchObject({ status: 'indexed', version: 2 });
    await expectOneSetOfChunks(stack, tenant, v1.id);
    expect(await getJob(stack, tenant, v2.job_id)).toMatchObject({ status: 'completed', documents_completed: 1 });
    const hits = await stack.as(tenant.key, 'post', '/api/search').send({ query: 'walruses', mode: 'keyword' }).expect(200);
    expect(hits.body.results).toEqual([]);
  });
});

describe('a batch with a document the embeddings provider refuses (pglite)', () => {
  let provider: FakeEmbeddingsProvider;
  let stack: TestStack;

  beforeAll(async () => {
    // Refuses any input containing POISON, as a provider refuses content it will not embed.
    provider = await startEmbeddingsProvider({ dimensions: 384, model: 'test-model', rejects: (input) => input.some((text) => text.includes('POISON')) });
    stack = await startStack({ database: 'pglite', env: provider.env });
  });
  afterAll(async () => {
    await stack?.close();
    await provider?.close();
  });

  it('ends failed with the per-document error; the other documents are indexed', async () => {
    const tenant = await stack.createTenant();
    const batch = await stack
      .as(tenant.key, 'post', '/api/documents/batch')
      .send({
        documents: [
          { title: 'Good one', content: 'Ordinary text about herons.' },
          { title: 'Bad one', content: 'This text carries the word POISON.' },
          { title: 'Good two', content: 'Ordinary text about egrets.' },
        ],
      })
      .expect(202);
    const [good1, bad, good2] = batch.body.items as DocumentBody[];

    const job = await waitForJob(stack, tenant, batch.body.job_id, 'failed');
    expect(job).toMatchObject({ documents_total: 3, documents_completed: 2, documents_failed: 1, completed_at: expect.any(String) });
    expect(job.error).toEqual(expect.stringContaining('1 of 3'));
    const entry = job.documents?.find((item) => item.document_id === bad.id);
    expect(entry).toMatchObject({ status: 'failed', error: expect.stringContaining('HTTP 400') });
    expect(job.documents?.filter((item) => item.document_id !== bad.id).map((item) => item.status)).toEqual(['completed', 'completed']);

    const failed = await getDocument(stack, tenant, bad.id);
    expect(failed).toMatchObject({ status: 'failed', chunk_count: 0, error_code: 'embedding_failed' });
    expect(failed.error).toEqual(expect.stringContaining('HTTP 400'));
    for (const good of [good1, good2]) {
      expect(await getDocument(stack, tenant, good.id)).toMatchObject({ status: 'indexed', error: null, error_code: null });
    }
    // The provider's model and dimension are stored with the chunks.
    const models = await stack.sql((db) => db('chunks').distinct('embedding_model', 'embedding_dims').whereIn('document_id', [good1.id, good2.id]));
    expect(models).toEqual([{ embedding_model: 'test-model', embedding_dims: 384 }]);
    expect(provider.models).toEqual(new Set(['test-model']));
    const failedList = await stack.as(tenant.key, 'get', '/api/index/jobs?status=failed').expect(200);
    expect(failedList.body.items.map((item: IndexJobBody) => item.job_id)).toEqual([batch.body.job_id]);
    const failedDocuments = await stack.as(tenant.key, 'get', '/api/documents?status=failed').expect(200);
    expect(failedDocuments.body.items.map((item: DocumentBody) => item.id)).toEqual([bad.id]);
  });
});
