import pg from 'pg';
import { indexingQueue } from '../../queues';
import { WorkerRuntime } from '../../workers/runtime';
import { createTestDatabase } from '../helpers/databases';
import { startEmbeddingsProvider, type FakeEmbeddingsProvider } from '../helpers/embeddings-provider';
import { startStack, type TestStack } from '../helpers/harness';
import { startTcpProxy, targetOf, throughProxy, type TcpProxy } from '../helpers/tcp-proxy';
import { waitFor } from '../helpers/wait';

/**
 * How indexing jobs retry: an embeddings provider outage is waited out on a
 * schedule of over an hour (scaled down here by INDEX_RETRY_BASE_MS); a
 * job that loses its own database connection spends its attempts and ends
 * failed; a real database outage is waited out without spending attempts,
 * but only WORKER_DATABASE_RETRIES times.
 */

jest.setTimeout(120_000);

const PGLITE_START_TIMEOUT_MS = 120_000;

type Tenant = { id: string; key: string };

async function postDocument(stack: TestStack, tenant: Tenant, title: string, content: string): Promise<{ id: string; job_id: string }> {
  const response = await stack.as(tenant.key, 'post', '/api/documents').send({ title, content }).expect(202);
  return response.body;
}

function bullJob(stack: TestStack, tenant: Tenant, document: { id: string; job_id: string }) {
  return stack.platform.queues.queue(indexingQueue.name).getJob(indexingQueue.jobId({ tenantId: tenant.id, indexJobId: document.job_id, documentId: document.id, version: 1 }));
}

/** The job once BullMQ has it in `state`: the last attempt marks the document a moment before its job moves. */
function bullJobOnceIn(state: 'completed' | 'failed', stack: TestStack, tenant: Tenant, document: { id: string; job_id: string }) {
  return waitFor(
    async () => {
      const job = await bullJob(stack, tenant, document);
      return job && (await job.getState()) === state ? job : null;
    },
    { what: `the job to be ${state}` },
  );
}

describe('an embeddings provider outage (pglite)', () => {
  let provider: FakeEmbeddingsProvider;
  let stack: TestStack;
  let tenant: Tenant;

  beforeAll(async () => {
    provider = await startEmbeddingsProvider({ dimensions: 384, model: 'outage-model' });
    // One request per attempt, and the schedule's 2 s base scaled down to 5 ms: its 16 attempts take about 12 s.
    stack = await startStack({ database: 'pglite', env: { ...provider.env, EMBEDDINGS_MAX_RETRIES: '0', INDEX_RETRY_BASE_MS: '5' } });
    tenant = await stack.createTenant();
  }, PGLITE_START_TIMEOUT_MS);
  afterAll(async () => {
    await stack?.close();
    await provider?.close();
  });

  it('keeps retrying past the five attempts that used to fail it, and indexes the document once the provider is back', async () => {
    let refusals = 0;
    provider.unavailable = (input) => input.some((text) => text.includes('BRIEF-OUTAGE')) && refusals++ < 8;
    const document = await postDocument(stack, tenant, 'Herons', 'Grey herons wade the shallows. BRIEF-OUTAGE');

    const indexed = await stack.waitForDocument(tenant.key, document.id, 'indexed');
    expect(indexed).toMatchObject({ error: null, error_code: null });
    expect(indexed.chunk_count).toBeGreaterThan(0);
    expect(refusals).toBeGreaterThanOrEqual(8);
    const job = await bullJobOnceIn('completed', stack, tenant, document);
    // Eight attempts met the outage, the ninth succeeded.
    expect(job.attemptsMade).toBe(9);
    expect(job.opts.attempts).toBe(16);
  });

  it('fails the document for good with embedding_failed once the whole schedule is spent, and dead-letters it', async () => {
    provider.unavailable = (input) => input.some((text) => text.includes('LASTING-OUTAGE'));
    const document = await postDocument(stack, tenant, 'Egrets', 'White egrets stand still. LASTING-OUTAGE');

    const failed = await waitFor(
      async () => {
        const response = await stack.as(tenant.key, 'get', `/api/documents/${document.id}`).expect(200);
        return response.body.status === 'failed' ? response.body : null;
      },
      { timeoutMs: 90_000, what: 'the document to fail' },
    );
    expect(failed).toMatchObject({ error_code: 'embedding_failed', error: expect.stringContaining('HTTP 503') });
    const job = await bullJobOnceIn('failed', stack, tenant, document);
    expect(job.attemptsMade).toBe(16);
    const deadLetter = await waitFor(() => stack.sql((db) => db('dead_letters').first('*').where({ queue: 'indexing', job_id: job.id })));
    expect(deadLetter).toMatchObject({ error_class: 'EmbeddingError', attempts: 16, max_attempts: 16 });
  });
});

describe('a job whose own statement kills its database connection (postgres)', () => {
  let stack: TestStack;
  let tenant: Tenant;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', env: { INDEX_RETRY_BASE_MS: '10' } });
    tenant = await stack.createTenant();
    // As the owner, a trigger that makes the application role's chunk insert end its own backend, for marked content only.
    const owner = new pg.Client({ connectionString: stack.env.MIGRATION_DATABASE_URL });
    await owner.connect();
    try {
      await owner.query(`
        create function kill_own_backend() returns trigger language plpgsql as $$
        begin
          if new.content like '%KILL-MY-CONNECTION%' then perform pg_terminate_backend(pg_backend_pid()); end if;
          return new;
        end $$;
        create trigger kill_own_backend before insert on chunks for each row execute function kill_own_backend();
      `);
    } finally {
      await owner.end();
    }
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('spends an attempt each time (the database answers pings), ends failed and dead-lettered instead of looping', async () => {
    const poisoned = await postDocument(stack, tenant, 'Suicidal', 'This document says KILL-MY-CONNECTION when stored.');
    const healthy = await postDocument(stack, tenant, 'Healthy', 'This one is stored like any other.');

    // Before the fix the job was re-delayed every 5 s for ever, never spending an attempt.
    const failed = await waitFor(
      async () => {
        const response = await stack.as(tenant.key, 'get', `/api/documents/${poisoned.id}`).expect(200);
        return response.body.status === 'failed' ? response.body : null;
      },
      { timeoutMs: 30_000, what: 'the document to fail' },
    );
    expect(failed).toMatchObject({ error_code: 'indexing_failed', error: expect.stringMatching(/terminat/i) });
    const job = await bullJobOnceIn('failed', stack, tenant, poisoned);
    // The five attempts any failure but a provider outage gets, none of them free.
    expect(job.attemptsMade).toBe(5);
    expect(job.data.databaseRetries).toBeUndefined();
    const deadLetter = await waitFor(() => stack.sql((db) => db('dead_letters').first('*').where({ queue: 'indexing', job_id: job.id })));
    expect(deadLetter).toMatchObject({ attempts: 5, max_attempts: 16 });
    // The database was up all along: the workers never paused, and the other document was indexed.
    expect(stack.workers!.isPaused()).toBe(false);
    await stack.waitForDocument(tenant.key, healthy.id, 'indexed');
  });
});

describe('a real database outage longer than WORKER_DATABASE_RETRIES allows (postgres through a proxy)', () => {
  let stack: TestStack;
  let proxy: TcpProxy;
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  const runtimes: WorkerRuntime[] = [];

  beforeAll(async () => {
    database = await createTestDatabase();
    proxy = await startTcpProxy(targetOf(database.applicationUrl, 5432));
    stack = await startStack({
      database: 'postgres',
      workers: false,
      env: {
        DATABASE_URL: throughProxy(database.applicationUrl, proxy),
        MIGRATION_DATABASE_URL: database.url,
        WORKER_DATABASE_RETRIES: '2',
        // Long enough that the test gives the database back before a second attempt.
        INDEX_RETRY_BASE_MS: '4000',
      },
    });
  });
  afterAll(async () => {
    proxy?.restore();
    for (const runtime of runtimes) await runtime.drain(5_000);
    await stack?.close();
    await proxy?.close();
    await database?.drop();
  });

  it('puts the job back without spending an attempt twice, then spends one, and indexes it once the database is back', async () => {
    const tenant = await stack.createTenant();
    const document = await postDocument(stack, tenant, 'Patience', 'Words that wait for the database.');
    proxy.cut();
    try {
      await waitFor(() => !stack.platform.health.isUp('database'), { what: 'the database to be noticed down' });
      // Started after the outage was noticed, this worker is not paused by it: it takes the job and meets the dead database.
      const runtime = new WorkerRuntime(stack.platform, [indexingQueue.name]);
      runtimes.push(runtime);
      runtime.start();
      const job = await waitFor(
        async () => {
          const current = await bullJob(stack, tenant, document);
          return current && current.attemptsMade >= 1 ? current : null;
        },
        { timeoutMs: 60_000, what: 'the job to spend an attempt' },
      );
      expect(job.data.databaseRetries).toBe(2);
      expect(job.attemptsMade).toBe(1);
      expect(await job.getState()).toBe('delayed');
    } finally {
      proxy.restore();
    }
    await stack.waitForDocument(tenant.key, document.id, 'indexed');
    const job = await bullJob(stack, tenant, document);
    expect(job!.attemptsMade).toBe(2);
  });
});
