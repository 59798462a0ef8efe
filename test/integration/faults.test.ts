import type { Job } from 'bullmq';
import pg from 'pg';
import request from 'supertest';
import { indexingQueue, reconcileQueue } from '../../queues';
import { createDocuments } from '../../src/domain/documents/documents';
import { TIER_QUOTAS } from '../../src/domain/tenants/quotas';
import { unavailableDependency } from '../../src/errors';
import type { DependencyName } from '../../src/health';
import { WorkerRuntime } from '../../workers/runtime';
import { createTestDatabase, REDIS_URL, uniqueName } from '../helpers/databases';
import { startStack, type TestStack } from '../helpers/harness';
import { startTcpProxy, targetOf, throughProxy, type TcpProxy } from '../helpers/tcp-proxy';
import { waitFor } from '../helpers/wait';

/**
 * PostgreSQL and Redis taken away from a running ragworks and given back,
 * through TCP proxies in front of the shared servers: the API answers 503
 * `dependency_unavailable` meanwhile, workers pause without spending
 * attempts, and everything recovers by itself.
 */

/** Long enough for ioredis' reconnect back-off, BullMQ's blocking connections and the knex pool to notice. */
const RECOVERY_MS = 20_000;

type DocumentBody = { id: string; title: string; status: string; version: number; job_id: string };

describe('dependencies lost while running', () => {
  let stack: TestStack;
  let redisProxy: TcpProxy;
  let pgProxy: TcpProxy;
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  let tenant: { id: string; key: string };
  const healthChanges: Array<[DependencyName, boolean]> = [];
  const extraRuntimes: WorkerRuntime[] = [];

  beforeAll(async () => {
    database = await createTestDatabase();
    redisProxy = await startTcpProxy(targetOf(REDIS_URL, 6379));
    pgProxy = await startTcpProxy(targetOf(database.url, 5432));
    stack = await startStack({
      database: 'postgres',
      env: {
        REDIS_URL: throughProxy(REDIS_URL, redisProxy),
        DATABASE_URL: throughProxy(database.applicationUrl, pgProxy),
        MIGRATION_DATABASE_URL: database.url,
        RECONCILE_STUCK_AFTER_SECONDS: '1',
      },
    });
    stack.platform.health.on('change', (name, up) => healthChanges.push([name, up]));
    tenant = await stack.createTenant();
  });

  afterAll(async () => {
    // Give the dependencies back first, so a failed test cannot keep the stack from closing.
    redisProxy?.restore();
    pgProxy?.restore();
    for (const runtime of extraRuntimes) await runtime.drain(5_000);
    await stack?.close();
    await redisProxy?.close();
    await pgProxy?.close();
    await database?.drop();
  });

  const api = () => request(stack.app);
  const post = (title: string) =>
    stack.as(tenant.key, 'post', '/api/documents').send({ title, content: `# ${title}\n\nThe harbour master logs every ship that enters the bay.` });
  const indexingJob = (document: DocumentBody) =>
    indexingQueue.jobId({ tenantId: tenant.id, indexJobId: document.job_id, documentId: document.id, version: document.version });
  const getJob = async (jobId: string): Promise<Job | undefined> => stack.platform.queues.queue(indexingQueue.name).getJob(jobId);
  const readiness = async (expected: number) => {
    const response = await api().get('/readyz');
    return response.status === expected ? response : null;
  };

  it('sees every connection of the stack go through the proxies', () => {
    // Otherwise cutting them would prove nothing: the producer, the workers and their blocking connections.
    expect(redisProxy.openConnections).toBeGreaterThan(1);
    expect(pgProxy.openConnections).toBeGreaterThan(0);
  });

  it('answers 503 while Redis is lost, stores nothing, and recovers without a restart', async () => {
    const title = uniqueName('rejected-while-redis-down');
    redisProxy.cut();
    try {
      const notReady = await waitFor(() => readiness(503), { timeoutMs: RECOVERY_MS, what: '/readyz to report Redis down' });
      expect(notReady.body).toEqual({ status: 'unavailable', checks: { database: 'up', redis: 'down' } });

      const rejected = await post(title);
      expect(rejected.status).toBe(503);
      expect(rejected.headers['content-type']).toMatch(/^application\/json/);
      expect(rejected.headers['retry-after']).toMatch(/^\d+$/);
      expect(rejected.body.error).toMatchObject({ code: 'dependency_unavailable', details: { dependency: 'redis' } });
      expect(typeof rejected.body.error.message).toBe('string');

      const health = await api().get('/api/health').expect(200);
      expect(health.body.status).toBe('degraded');
      expect(health.body.services.redis.status).toBe('down');
      expect(health.body.services.database.status).toBe('up');

      await api().get('/healthz').expect(200, { status: 'ok' });

      // What a Redis call fails with meanwhile is recognised as Redis being away.
      const failure = await stack.platform.redis.ping().then(
        () => null,
        (error: unknown) => error,
      );
      expect(unavailableDependency(failure)).toBe('redis');
    } finally {
      redisProxy.restore();
    }

    await waitFor(() => readiness(200), { timeoutMs: RECOVERY_MS, what: '/readyz to report Redis back' });
    const listed = await stack.as(tenant.key, 'get', '/api/documents?limit=100').expect(200);
    expect(listed.body.items.map((item: DocumentBody) => item.title)).not.toContain(title);

    // Nothing restarted: the producer connection and the in-process workers reconnected on their own.
    const accepted = await post(uniqueName('accepted-after-redis-back')).expect(202);
    const indexed = await stack.waitForDocument(tenant.key, accepted.body.id);
    expect(indexed.chunk_count).toBeGreaterThan(0);
  });

  it('answers 503 while PostgreSQL is lost, pauses workers without spending attempts, and recovers without a restart', async () => {
    const indexing = stack.platform.queues.queue(indexingQueue.name);
    // Held back so that one document is accepted but not yet indexed when the database goes.
    await indexing.pause();
    const before = (await post(uniqueName('accepted-before-pg-cut')).expect(202)).body as DocumentBody;
    // Its job is withdrawn now and enqueued again during the outage.
    const during = (await post(uniqueName('enqueued-during-pg-cut')).expect(202)).body as DocumentBody;
    expect(await indexing.remove(indexingJob(during))).toBe(1);
    const changesBefore = healthChanges.length;

    pgProxy.cut();
    try {
      // Every answer while the outage is being noticed is either still fine or a 503, never a 500.
      const seen = new Set<number>();
      const unavailable = await waitFor(
        async () => {
          const response = await stack.as(tenant.key, 'get', `/api/documents/${before.id}`);
          seen.add(response.status);
          return response.status === 503 ? response : null;
        },
        { timeoutMs: RECOVERY_MS, what: 'document routes to answer 503' },
      );
      expect([...seen].filter((status) => status !== 200 && status !== 503)).toEqual([]);
      expect(unavailable.headers['retry-after']).toMatch(/^\d+$/);
      expect(unavailable.body.error).toMatchObject({ code: 'dependency_unavailable', details: { dependency: 'database' } });

      const notReady = await waitFor(() => readiness(503), { timeoutMs: RECOVERY_MS, what: '/readyz to report the database down' });
      expect(notReady.body).toEqual({ status: 'unavailable', checks: { database: 'down', redis: 'up' } });

      const rejected = await post(uniqueName('rejected-while-pg-down'));
      expect(rejected.status).toBe(503);
      expect(rejected.body.error).toMatchObject({ code: 'dependency_unavailable', details: { dependency: 'database' } });
      await stack.as(tenant.key, 'get', '/api/documents').expect(503);

      const health = await api().get('/api/health').expect(200);
      expect(health.body.status).toBe('degraded');
      expect(health.body.services.database.status).toBe('down');
      expect(health.body.services.redis.status).toBe('up');
      await api().get('/healthz').expect(200, { status: 'ok' });

      // The monitor said so, and the workers in this process stopped taking jobs.
      await waitFor(() => healthChanges.slice(changesBefore).some(([name, up]) => name === 'database' && !up), {
        timeoutMs: RECOVERY_MS,
        what: 'a database-down change event',
      });
      await waitFor(() => stack.workers!.isPaused(), { timeoutMs: RECOVERY_MS, what: 'the workers to pause' });

      await stack.platform.queues.enqueue(indexingQueue, {
        tenantId: tenant.id,
        indexJobId: during.job_id,
        documentId: during.id,
        version: during.version,
      });
      await indexing.resume();

      // A worker that has not heard of the outage yet (the monitor checks once a second) takes the
      // jobs, meets the dead database, and puts them back for later without spending an attempt.
      const unaware = new WorkerRuntime(stack.platform, [indexingQueue.name]);
      extraRuntimes.push(unaware);
      unaware.start();
      await unaware.waitUntilReady();
      for (const document of [before, during]) {
        const jobId = indexingJob(document);
        const job = await waitFor(
          async () => {
            const current = await getJob(jobId);
            return current && (await current.getState()) === 'delayed' ? current : null;
          },
          { timeoutMs: RECOVERY_MS, what: `job ${jobId} to be put back as delayed` },
        );
        expect(job.attemptsMade).toBe(0);
        expect(job.failedReason ?? '').toBe('');
      }
      expect(await indexing.getFailedCount()).toBe(0);
    } finally {
      pgProxy.restore();
    }

    await waitFor(() => healthChanges.slice(changesBefore).some(([name, up]) => name === 'database' && up), {
      timeoutMs: RECOVERY_MS,
      what: 'a database-up change event',
    });
    await waitFor(() => !stack.workers!.isPaused(), { timeoutMs: RECOVERY_MS, what: 'the workers to resume' });
    await waitFor(() => readiness(200), { timeoutMs: RECOVERY_MS, what: '/readyz to report the database back' });

    for (const document of [before, during]) {
      const indexed = await stack.waitForDocument(tenant.key, document.id);
      expect(indexed.chunk_count).toBeGreaterThan(0);
      const job = await getJob(indexingJob(document));
      expect(await job?.getState()).toBe('completed');
      // The one attempt that succeeded; the outage's hand-backs were not counted.
      expect(job?.attemptsMade).toBe(1);
    }
    expect(await indexing.getFailedCount()).toBe(0);
    await post(uniqueName('accepted-after-pg-back')).expect(202);
  });

  it('re-enqueues an accepted document whose indexing job never reached Redis or was lost', async () => {
    const indexing = stack.platform.queues.queue(indexingQueue.name);

    // Redis goes between the database insert and the enqueue: the domain call the route makes,
    // with the real dispatch, while Redis is cut. The insert stands; the enqueue fails quietly.
    redisProxy.cut();
    let neverEnqueued: DocumentBody;
    try {
      await waitFor(() => !stack.platform.health.isUp('redis'), { timeoutMs: RECOVERY_MS, what: 'Redis to be noticed down' });
      const [created] = await createDocuments(
        stack.platform.documentDeps(),
        tenant.id,
        [{ title: uniqueName('enqueue-failed'), content: '# Tides\n\nThe tide tables are posted at the harbour office every morning.' }],
        TIER_QUOTAS.unlimited,
      );
      neverEnqueued = created as unknown as DocumentBody;
    } finally {
      redisProxy.restore();
    }
    await waitFor(() => readiness(200), { timeoutMs: RECOVERY_MS, what: '/readyz to report Redis back' });
    expect(await getJob(indexingJob(neverEnqueued))).toBeUndefined();

    // A job that reached Redis and was then lost (e.g. a Redis failover without persistence).
    await indexing.pause();
    let lost: DocumentBody;
    try {
      lost = (await post(uniqueName('job-lost')).expect(202)).body as DocumentBody;
      expect(await indexing.remove(indexingJob(lost))).toBe(1);
    } finally {
      await indexing.resume();
    }

    for (const document of [neverEnqueued, lost]) {
      const current = await stack.as(tenant.key, 'get', `/api/documents/${document.id}`).expect(200);
      expect(current.body.status).toBe('queued');
    }
    // Older than RECONCILE_STUCK_AFTER_SECONDS without waiting for it.
    const aged = await stack.sql((db) =>
      db('index_job_items')
        .whereIn('document_id', [neverEnqueued.id, lost.id])
        .update({ updated_at: db.raw(`now() - interval '1 hour'`) }),
    );
    expect(aged).toBe(2);

    const tick = new Date().toISOString();
    const reconcileJobId = await stack.platform.queues.enqueue(reconcileQueue, { tick });
    for (const document of [neverEnqueued, lost]) {
      const indexed = await stack.waitForDocument(tenant.key, document.id);
      expect(indexed.chunk_count).toBeGreaterThan(0);
    }
    const reconcile = await stack.platform.queues.queue(reconcileQueue.name).getJob(reconcileJobId);
    expect(await reconcile?.getState()).toBe('completed');
    expect(reconcile?.returnvalue).toMatchObject({ requeued: { documents: 2 } });
  });

  it('recognises what a lost PostgreSQL connection fails with as the database being away', async () => {
    // As the application role, whose sessions' queries ragworks' own connection may see in pg_stat_activity.
    const proxy = await startTcpProxy(targetOf(database.applicationUrl, 5432));
    const client = new pg.Client({ connectionString: throughProxy(database.applicationUrl, proxy) });
    client.on('error', () => undefined);
    try {
      await client.connect();
      const inFlight = client.query('select pg_sleep(5)').then(() => null, (error: unknown) => error);
      // Cut once the query is on the wire.
      await waitFor(async () => (await stack.platform.db.knex.raw(`select 1 from pg_stat_activity where datname = current_database() and query = 'select pg_sleep(5)'`)).rows.length > 0, {
        what: 'the query to be running',
      });
      proxy.cut();
      const reset = await inFlight;
      const afterwards = await client.query('select 1').then(() => null, (error: unknown) => error);
      const refused = await new pg.Client({ connectionString: throughProxy(database.applicationUrl, proxy) }).connect().then(() => null, (error: unknown) => error);
      for (const error of [reset, afterwards, refused]) {
        expect(error).not.toBeNull();
        expect([(error as Error).message, unavailableDependency(error)]).toEqual([(error as Error).message, 'database']);
      }
    } finally {
      await client.end().catch(() => undefined);
      await proxy.close();
    }
  });
});
