import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { migrations } from '../../migrations';
import { indexingQueue, reconcileQueue } from '../../queues';
import { WorkerRuntime } from '../../workers/runtime';
import { createTestDatabase, REDIS_URL, uniqueName } from '../helpers/databases';
import { ADMIN_TOKEN, startStack, type TestStack } from '../helpers/harness';
import { seedPgliteDataDir } from '../helpers/pglite-template';
import { connectionRefused, killLeftoverProcesses, startRagworks, unusedPort, type LogLine, type RagworksProcess } from '../helpers/processes';
import { deleteRedisPrefix } from '../helpers/redis';
import { waitFor } from '../helpers/wait';

/** A database URL that is never reached: these children stop before connecting. */
const UNREACHED_DATABASE = 'postgres://postgres@127.0.0.1:5432/ragworks_never_opened';

// Every test here starts real processes, 2 to 4 s each on an idle machine and several
// times that when the shared cores are busy; each wait below is on a condition, so
// the generous limit only matters when something is wrong.
jest.setTimeout(180_000);

const scratch = mkdtempSync(path.join(os.tmpdir(), 'ragworks-processes-'));

afterAll(async () => {
  await killLeftoverProcesses();
  rmSync(scratch, { recursive: true, force: true });
});

/** Runs `work` over `items`, at most `limit` at a time: each child costs a core for a second or two. */
async function inBatches<T, R>(items: T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index]);
    }
  });
  await Promise.all(lanes);
  return results;
}

/** Markdown of a few hundred words, different per document, so each indexes into more than one chunk. */
function markdownDocument(n: number): { title: string; content: string } {
  const paragraph = (section: number) =>
    Array.from({ length: 110 }, (_, word) => `word${(n * 7 + section * 13 + word) % 97} lighthouse${section}`).join(' ');
  const sections = [1, 2, 3, 4, 5, 6].map((section) => `## Part ${section}\n\n${paragraph(section)}`);
  return { title: `Keeper log ${n}`, content: `# Log ${n}\n\n${sections.join('\n\n')}` };
}

/**
 * Holds a SHARE lock on `chunks` in an open transaction: workers can claim
 * documents (they become `processing`) but wait at the point where they
 * write chunks. That pins them mid-indexing for as long as the test needs.
 */
async function holdChunkWrites(databaseUrl: string): Promise<{ release(): Promise<void> }> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  await client.query('begin');
  await client.query('lock table chunks in share mode');
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      await client.query('rollback');
      await client.end();
    },
  };
}

/** The drain report a worker logs at shutdown. */
function drainReport(line: LogLine): { finished: unknown; handedBack: unknown } {
  return { finished: line.finished, handedBack: line.handedBack };
}

describe('configuration and start-up errors', () => {
  const base = { DATA_DIR: scratch, ADMIN_TOKEN, QUEUE_PREFIX: uniqueName('rwproc'), DATABASE_URL: UNREACHED_DATABASE };

  it('refuses a bad or missing setting with exit code 2 and one stderr line naming it', async () => {
    // A child that wrongly accepts its configuration meets an unreachable Redis and
    // exits 1 at once, so a missing refusal shows up as a wrong code, not a hang.
    const deadRedis = `redis://127.0.0.1:${await unusedPort()}`;
    // `missing`: the line says the variable is required; a variable that was given must not be called missing.
    // Every variable's validation is covered in test/unit/config.test.ts; these check the process around it.
    const cases: Array<{ name: string; role: string; env: Record<string, string | undefined>; names: string; missing: boolean }> = [
      { name: 'PORT=abc', role: 'web', env: { PORT: 'abc' }, names: 'PORT', missing: false },
      { name: 'production without ADMIN_TOKEN', role: 'web', env: { NODE_ENV: 'production', ADMIN_TOKEN: undefined }, names: 'ADMIN_TOKEN', missing: true },
      { name: 'web without DATABASE_URL', role: 'web', env: { DATABASE_URL: undefined }, names: 'DATABASE_URL', missing: true },
      { name: 'scheduler without DATABASE_URL', role: 'scheduler', env: { DATABASE_URL: undefined }, names: 'DATABASE_URL', missing: true },
      { name: 'WORKER_QUEUES=nope', role: 'worker', env: { WORKER_QUEUES: 'nope' }, names: 'WORKER_QUEUES', missing: false },
      { name: 'unknown role', role: 'conductor', env: {}, names: 'conductor', missing: false },
    ];
    const outcomes = await inBatches(cases, 4, async (testCase) => {
      const env = Object.fromEntries(
        Object.entries({ ...base, REDIS_URL: deadRedis, ...testCase.env }).filter((entry): entry is [string, string] => entry[1] !== undefined),
      );
      const child = startRagworks(testCase.role, env);
      const exit = await child.waitForExit();
      return {
        name: testCase.name,
        code: exit.code,
        stderrLines: child.stderr.length,
        namesIt: child.stderr.join('\n').includes(testCase.names),
        missing: child.stderr.join('\n').includes('is required'),
        stdoutLines: child.stdout.length,
      };
    });
    // One comparison for all cases: a failure's diff shows which case and what it did.
    expect(outcomes).toEqual(cases.map((testCase) => ({
        name: testCase.name,
        code: 2,
        stderrLines: 1,
        namesIt: true,
        missing: testCase.missing,
        stdoutLines: 0,
      })));
  });

  it('stops with one line naming the Redis URL and how to start Redis when Redis is unreachable', async () => {
    const port = await unusedPort();
    const child = startRagworks('worker', { ...base, REDIS_URL: `redis://127.0.0.1:${port}`, LOG_LEVEL: 'info' });
    const exit = await child.waitForExit();
    expect(exit.code).not.toBe(0);
    expect(exit.code).not.toBeNull();
    expect(child.stderr).toHaveLength(1);
    expect(child.stderr[0]).toContain(`redis://127.0.0.1:${port}`);
    expect(child.stderr[0]).toContain('redis-server');
    expect(child.messages('platform ready')).toHaveLength(0);
  });
});

describe('development operator token (role all on the embedded database)', () => {
  const dataDir = path.join(scratch, 'dev');
  const prefix = uniqueName('rwproc');
  const env = {
    NODE_ENV: 'development',
    DATA_DIR: dataDir,
    PORT: '0',
    HOST: '127.0.0.1',
    REDIS_URL,
    QUEUE_PREFIX: prefix,
    LOG_LEVEL: 'info',
    SCHEDULE_RECONCILE: '0 0 1 1 *',
  };
  beforeAll(async () => {
    // An initialised empty cluster spares the child a slow initdb; DATA_DIR holds no token yet.
    await seedPgliteDataDir(dataDir);
  });
  afterAll(async () => {
    await deleteRedisPrefix(prefix);
  });

  const listeningUrl = async (child: RagworksProcess): Promise<string> => {
    const line = await child.waitForMessage('api listening', { timeoutMs: 90_000 });
    return String(line.url).replace('localhost', '127.0.0.1');
  };
  const tenantsStatus = async (url: string, token: string) =>
    (await fetch(`${url}/api/admin/tenants`, { headers: { Authorization: `Bearer ${token}` } })).status;
  const linesWith = (child: RagworksProcess, text: string) => [...child.stdout, ...child.stderr].filter((line) => line.includes(text));

  it('generates a token, prints it once, saves it with mode 600, reuses it silently, and exits 0 on SIGTERM', async () => {
    const first = startRagworks('all', env);
    const firstUrl = await listeningUrl(first);
    const file = path.join(dataDir, 'admin-token');
    const token = readFileSync(file, 'utf8').trim();
    expect(token.length).toBeGreaterThanOrEqual(32);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(linesWith(first, token)).toHaveLength(1);
    expect(await tenantsStatus(firstUrl, token)).toBe(200);
    expect(await tenantsStatus(firstUrl, `${token}x`)).toBe(401);
    expect(await first.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(first.messages('stopped')).toHaveLength(1);

    const second = startRagworks('all', env);
    const secondUrl = await listeningUrl(second);
    expect(readFileSync(file, 'utf8').trim()).toBe(token);
    expect(await tenantsStatus(secondUrl, token)).toBe(200);
    expect(linesWith(second, token)).toHaveLength(0);
    expect(await second.stop('SIGTERM')).toEqual({ code: 0, signal: null });
  });
});

describe('production refuses a database role that bypasses row-level security', () => {
  it('exits 2 naming MIGRATION_DATABASE_URL and the roles section for a superuser, a table owner or a BYPASSRLS role; starts with separate roles', async () => {
    const owned = await createTestDatabase({ ownedByOwnerRole: true });
    const plain = await createTestDatabase();
    const bypassRole = 'ragworks_test_bypass';
    const admin = new pg.Client({ connectionString: plain.url });
    await admin.connect();
    const prefix = uniqueName('rwproc');
    try {
      await admin.query(`do $$ begin
        if not exists (select 1 from pg_roles where rolname = '${bypassRole}') then create role ${bypassRole} login nosuperuser bypassrls; end if;
      end $$`);
      const asBypass = new URL(plain.applicationUrl);
      asBypass.username = bypassRole;
      const production = { NODE_ENV: 'production', REDIS_URL, QUEUE_PREFIX: prefix, ADMIN_TOKEN, DATA_DIR: scratch };
      const cases: Array<{ name: string; env: Record<string, string>; reason: string }> = [
        // The one role migrates and serves: a superuser (the machine's postgres), or a table owner that is none.
        { name: 'superuser', env: { DATABASE_URL: plain.url }, reason: 'is a superuser' },
        { name: 'owner', env: { DATABASE_URL: owned.url }, reason: 'owns the tables' },
        { name: 'bypassrls', env: { MIGRATION_DATABASE_URL: plain.url, DATABASE_URL: asBypass.toString() }, reason: 'has BYPASSRLS' },
      ];
      const outcomes = await inBatches(cases, 3, async (testCase) => {
        const child = startRagworks('web', { ...production, PORT: String(await unusedPort()), ...testCase.env });
        const exit = await child.waitForExit();
        const line = child.stderr.join('\n');
        return {
          name: testCase.name,
          code: exit.code,
          stderrLines: child.stderr.length,
          says: ['refusing to start in production', testCase.reason, 'MIGRATION_DATABASE_URL', 'Production database roles'].filter((part) => !line.includes(part)),
          ready: child.messages('platform ready').length,
        };
      });
      expect(outcomes).toEqual(cases.map((testCase) => ({ name: testCase.name, code: 2, stderrLines: 1, says: [], ready: 0 })));

      // The roles as production has them: the owner migrates, the application role serves.
      const port = await unusedPort();
      const web = startRagworks('web', { ...production, PORT: String(port), LOG_LEVEL: 'info', MIGRATION_DATABASE_URL: owned.url, DATABASE_URL: owned.applicationUrl });
      await web.waitForMessage('platform ready');
      await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null))?.status === 200, { what: 'the web process to be ready' });
      expect(await web.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    } finally {
      await admin.end();
      await owned.drop();
      await plain.drop();
      await deleteRedisPrefix(prefix);
    }
  });
});

describe('migrations under an advisory lock', () => {
  it('two migrate processes started together both succeed and apply each migration once', async () => {
    const database = await createTestDatabase();
    const prefix = uniqueName('rwproc');
    try {
      const env = { DATABASE_URL: database.url, REDIS_URL, QUEUE_PREFIX: prefix, ADMIN_TOKEN, DATA_DIR: scratch, LOG_LEVEL: 'info' };
      const children = [startRagworks('migrate', env), startRagworks('migrate', env)];
      const exits = await Promise.all(children.map((child) => child.waitForExit()));
      expect(exits).toEqual([
        { code: 0, signal: null },
        { code: 0, signal: null },
      ]);
      // One applied the migrations; the other waited for the lock and found nothing to do.
      expect(children.map((child) => child.messages('database migrated').length).sort()).toEqual([0, 1]);
      for (const child of children) expect(child.messages('migrations are up to date')).toHaveLength(1);

      const client = new pg.Client({ connectionString: database.url });
      await client.connect();
      try {
        const rows = await client.query<{ name: string; copies: number }>('select name, count(*)::int as copies from knex_migrations group by name order by name');
        expect(rows.rows).toEqual(migrations.map((migration) => ({ name: migration.name, copies: 1 })));
      } finally {
        await client.end();
      }
    } finally {
      await database.drop();
      await deleteRedisPrefix(prefix);
    }
  });
});

describe('worker processes sharing one database', () => {
  let stack: TestStack;
  beforeAll(async () => {
    // No workers in this process: only the children work.
    stack = await startStack({ database: 'postgres', workers: false });
  });
  afterAll(async () => {
    await killLeftoverProcesses();
    await stack?.close();
  });

  const indexing = () => stack.platform.queues.queue(indexingQueue.name);
  const workerEnv = (extra: Record<string, string>) => ({ ...stack.env, LOG_LEVEL: 'info', WORKER_QUEUES: 'indexing', ...extra });

  const postBatch = async (key: string, count: number, first = 0) => {
    const documents = Array.from({ length: count }, (_, index) => markdownDocument(first + index));
    const response = await stack.as(key, 'post', '/api/documents/batch').send({ documents }).expect(202);
    return { ids: response.body.items.map((item: { id: string }) => item.id) as string[], jobId: response.body.job_id as string };
  };
  const processing = async (ids: string[], count: number) =>
    waitFor(
      async () => {
        const rows: string[] = await stack.sql((db) => db('documents').whereIn('id', ids).where({ status: 'processing' }).pluck('id'));
        return rows.length === count ? rows : null;
      },
      { what: `${count} document(s) to be processing`, timeoutMs: 60_000 },
    );
  const activeJobs = async (count: number) =>
    waitFor(async () => (await indexing().getJobCounts('active')).active === count, { what: `${count} active indexing job(s)`, timeoutMs: 30_000 });
  const indexJobCompleted = async (key: string, jobId: string) =>
    waitFor(
      async () => {
        const response = await stack.as(key, 'get', `/api/index/jobs/${jobId}`);
        return response.body.status === 'completed' || response.body.status === 'failed' ? response.body : null;
      },
      { what: `index job ${jobId} to finish`, timeoutMs: 60_000 },
    );

  /** Every document indexed, with exactly one set of chunks that matches its chunk_count. */
  const expectIndexedOnce = async (ids: string[]) => {
    const documents = await stack.sql((db) => db('documents').whereIn('id', ids).select('id', 'status', 'chunk_count', 'version'));
    expect(documents.map((document) => document.status)).toEqual(ids.map(() => 'indexed'));
    const chunks = await stack.sql((db) =>
      db('chunks')
        .whereIn('document_id', ids)
        .groupBy('document_id')
        .select('document_id')
        .select(db.raw('count(*)::int as rows'), db.raw('count(distinct ordinal)::int as ordinals'), db.raw('max(document_version)::int as version')),
    );
    const byDocument = new Map(chunks.map((row) => [row.document_id, row]));
    for (const document of documents) {
      expect(document.chunk_count).toBeGreaterThan(1);
      expect({ id: document.id, ...byDocument.get(document.id) }).toEqual({
        id: document.id,
        document_id: document.id,
        rows: document.chunk_count,
        ordinals: document.chunk_count,
        version: document.version,
      });
    }
  };

  it('a worker killed with SIGKILL mid-indexing: another worker finishes and each document is indexed once', async () => {
    const tenant = await stack.createTenant();
    const settings = { WORKER_CONCURRENCY: '2', WORKER_LOCK_DURATION_MS: '3000', WORKER_STALLED_INTERVAL_MS: '1000' };
    const lock = await holdChunkWrites(stack.env.DATABASE_URL);
    try {
      const batch = await postBatch(tenant.key, 6);
      const doomed = startRagworks('worker', workerEnv(settings));
      const killedDocuments = await processing(batch.ids, 2);
      await activeJobs(2);
      expect(await doomed.stop('SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
      await lock.release();

      const rescuer = startRagworks('worker', workerEnv(settings));
      const job = await indexJobCompleted(tenant.key, batch.jobId);
      expect(job).toMatchObject({ status: 'completed', documents_total: 6, documents_completed: 6, documents_failed: 0 });
      await expectIndexedOnce(batch.ids);

      // The killed worker's jobs came back through stalled-job recovery and were indexed by the rescuer.
      for (const documentId of killedDocuments) {
        const bullJob = await indexing().getJob(indexingQueue.jobId({ tenantId: tenant.id, indexJobId: batch.jobId, documentId, version: 1 }));
        expect(await bullJob?.getState()).toBe('completed');
        expect(bullJob?.stalledCounter).toBeGreaterThanOrEqual(1);
        expect(bullJob?.returnvalue).toMatchObject({ outcome: 'indexed' });
      }
      expect(await rescuer.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    } finally {
      await lock.release();
    }
  });

  it('SIGTERM lets an active job finish, takes no new one, and exits 0 with a drain report', async () => {
    const tenant = await stack.createTenant();
    const lock = await holdChunkWrites(stack.env.DATABASE_URL);
    try {
      const batch = await postBatch(tenant.key, 3, 100);
      const worker = startRagworks('worker', workerEnv({ WORKER_CONCURRENCY: '1', SHUTDOWN_TIMEOUT_MS: '20000', WORKER_LOCK_DURATION_MS: '30000' }));
      const [busy] = await processing(batch.ids, 1);
      await activeJobs(1);
      worker.signal('SIGTERM');
      await worker.waitForMessage('shutting down');
      // The job can finish now, well inside the 20 s deadline.
      await lock.release();
      const report = await worker.waitForMessage('drain report');
      expect(drainReport(report)).toEqual({ finished: 1, handedBack: 0 });
      expect(await worker.waitForExit()).toEqual({ code: 0, signal: null });
      expect(worker.messages('stopped')).toHaveLength(1);

      const statuses = await stack.sql((db) => db('documents').whereIn('id', batch.ids).select('id', 'status'));
      expect(Object.fromEntries(statuses.map((row) => [row.id, row.status]))).toEqual(
        Object.fromEntries(batch.ids.map((id) => [id, id === busy ? 'indexed' : 'queued'])),
      );
      expect(await indexing().getJobCounts('active', 'waiting')).toEqual({ active: 0, waiting: 2 });
    } finally {
      await lock.release();
      // The untouched jobs would be first in line for the next test's worker.
      await indexing().drain();
    }
  });

  it('at SHUTDOWN_TIMEOUT_MS a draining worker hands its job back at once, and another worker completes everything', async () => {
    const tenant = await stack.createTenant();
    const lock = await holdChunkWrites(stack.env.DATABASE_URL);
    try {
      const batch = await postBatch(tenant.key, 3, 200);
      // Locks last 30 s: a job not handed back would stay active far longer than this test looks.
      const settings = { WORKER_CONCURRENCY: '1', WORKER_LOCK_DURATION_MS: '30000', WORKER_STALLED_INTERVAL_MS: '30000' };
      const worker = startRagworks('worker', workerEnv({ ...settings, SHUTDOWN_TIMEOUT_MS: '3000' }));
      const [busy] = await processing(batch.ids, 1);
      await activeJobs(1);
      worker.signal('SIGTERM');
      const report = await worker.waitForMessage('drain report');
      // The handed-back job's database work cannot be interrupted and holds a pooled
      // connection, which the pool waits for on close: let it end at once, within the
      // grace the process gives itself (another SHUTDOWN_TIMEOUT_MS) before it gives up.
      await lock.release();
      expect(drainReport(report)).toEqual({ finished: 0, handedBack: 1 });
      expect(report.msg).toBe('drain report: 0 finished, 1 handed back');

      // Back in the queue now, not after its 30 s lock expires; no worker runs, so it stays there.
      const handedBack = await indexing().getJob(indexingQueue.jobId({ tenantId: tenant.id, indexJobId: batch.jobId, documentId: busy, version: 1 }));
      expect(await handedBack?.getState()).toBe('waiting');
      expect(await indexing().getJobCounts('active', 'waiting')).toEqual({ active: 0, waiting: 3 });
      expect(await worker.waitForExit()).toEqual({ code: 0, signal: null });
      expect(worker.messages('stopped')).toHaveLength(1);

      const next = startRagworks('worker', workerEnv(settings));
      const job = await indexJobCompleted(tenant.key, batch.jobId);
      expect(job).toMatchObject({ status: 'completed', documents_total: 3, documents_completed: 3, documents_failed: 0 });
      await expectIndexedOnce(batch.ids);
      expect(await next.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    } finally {
      await lock.release();
    }
  });

  it('a web process on SIGTERM stops accepting, finishes the request in flight, and exits 0', async () => {
    const web = startRagworks('web', { ...stack.env, LOG_LEVEL: 'info', PORT: '0', HOST: '127.0.0.1', SHUTDOWN_TIMEOUT_MS: '20000' });
    const listening = await web.waitForMessage('api listening');
    const port = Number(new URL(String(listening.url)).port);

    // A tenant insert that waits on a table lock the test holds is a request reliably in flight.
    const client = new pg.Client({ connectionString: stack.env.DATABASE_URL });
    await client.connect();
    let locked = false;
    try {
      await client.query('begin');
      await client.query('lock table tenants in share mode');
      locked = true;
      const slug = uniqueName('inflight').replace(/_/g, '-');
      const response = postJson(port, '/api/admin/tenants', { slug, name: 'In flight' });
      await waitFor(
        async () => {
          const waiting = await client.query(
            `select count(*)::int as n from pg_locks l join pg_class c on c.oid = l.relation where c.relname = 'tenants' and not l.granted`,
          );
          return waiting.rows[0].n > 0;
        },
        { what: 'the request to wait on the tenants lock' },
      );

      web.signal('SIGTERM');
      await web.waitForMessage('shutting down');
      await waitFor(() => connectionRefused(port), { what: 'new connections to be refused while a request is in flight' });
      expect(web.running).toBe(true);

      await client.query('rollback');
      locked = false;
      const answer = await response;
      expect(answer.status).toBe(201);
      expect(JSON.parse(answer.body)).toMatchObject({ slug });
      expect(await web.waitForExit()).toEqual({ code: 0, signal: null });
      expect(web.messages('stopped')).toHaveLength(1);
      expect(await connectionRefused(port)).toBe(true);
      await stack.operator('get', `/api/admin/tenants/${JSON.parse(answer.body).id}`).expect(200);
    } finally {
      if (locked) await client.query('rollback');
      await client.end();
    }
  });
  it('with SHUTDOWN_DELAY_MS a web process on SIGTERM fails /readyz while it goes on serving, then stops; idle connections are kept 65 s', async () => {
    const web = startRagworks('web', { ...stack.env, LOG_LEVEL: 'info', PORT: '0', HOST: '127.0.0.1', SHUTDOWN_DELAY_MS: '3000' });
    const listening = await web.waitForMessage('api listening');
    const base = String(listening.url);
    const ready = await fetch(`${base}/readyz`);
    expect({ status: ready.status, body: await ready.json() }).toMatchObject({ status: 200, body: { status: 'ready' } });
    // Longer than a load balancer keeps its idle connections, so it closes them, never the API under it.
    expect(ready.headers.get('keep-alive')).toBe('timeout=65');

    web.signal('SIGTERM');
    await web.waitForMessage('not ready any more; serving until the load balancer has noticed');
    const stopping = await fetch(`${base}/readyz`);
    expect({ status: stopping.status, body: await stopping.json() }).toMatchObject({ status: 503, body: { status: 'stopping', checks: { database: 'up', redis: 'up' } } });
    // Requests that still arrive are served as usual.
    const served = await fetch(`${base}/api/admin/tenants`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(served.status).toBe(200);
    expect(await web.waitForExit()).toEqual({ code: 0, signal: null });
    const port = Number(new URL(base).port);
    expect(await connectionRefused(port)).toBe(true);
  });
});

describe('scheduler replicas', () => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', workers: false });
  });
  afterAll(async () => {
    await killLeftoverProcesses();
    await stack?.close();
  });

  it('two schedulers enqueue exactly one reconcile job per tick, with an id derived from the tick', async () => {
    const env = { ...stack.env, LOG_LEVEL: 'debug', SCHEDULE_RECONCILE: '*/2 * * * * *' };
    const schedulers = [startRagworks('scheduler', env), startRagworks('scheduler', env)];
    const startedAt = await Promise.all(schedulers.map((child) => child.waitForMessage('schedule started')));
    const bothRunningSince = Math.max(...startedAt.map((line) => Date.parse(String(line.time))));

    // Only the reconcile schedule's lines: the other schedules tick too (analytics every five minutes).
    const reconcileLines = (child: RagworksProcess, message: string) => child.messages(message).filter((line) => line.schedule === 'reconcile');
    const enqueued = (child: RagworksProcess) =>
      new Map(reconcileLines(child, 'scheduled job enqueued').map((line) => [String(line.tick), String(line.job_id)]));
    // Ticks both replicas fired after both were running: the ones that could have doubled.
    const sharedTicks = () => {
      const [a, b] = schedulers.map(enqueued);
      return [...a.keys()].filter((tick) => b.has(tick) && Date.parse(tick) > bothRunningSince);
    };
    await waitFor(() => sharedTicks().length >= 2, { what: 'two ticks fired by both schedulers', timeoutMs: 40_000, intervalMs: 200 });
    for (const child of schedulers) expect(await child.stop('SIGTERM')).toEqual({ code: 0, signal: null });

    // Both replicas named the same job for every tick they shared, and that id is the tick's.
    const [a, b] = schedulers.map(enqueued);
    for (const tick of sharedTicks()) {
      expect(a.get(tick)).toBe(reconcileQueue.jobId({ tick }));
      expect(b.get(tick)).toBe(reconcileQueue.jobId({ tick }));
    }
    // A tick that fires while a replica shuts down may be logged as not enqueued even
    // though the add reached Redis, so those ticks count as fired too.
    const fired = new Set(
      schedulers.flatMap((child) =>
        [...reconcileLines(child, 'scheduled job enqueued'), ...reconcileLines(child, 'could not enqueue a scheduled job')].map((line) => String(line.tick)),
      ),
    );

    const queue = stack.platform.queues.queue(reconcileQueue.name);
    const jobs = await queue.getJobs(['waiting', 'active', 'delayed', 'prioritized', 'completed', 'failed', 'waiting-children']);
    const jobTicks = jobs.map((job) => (job.data as { tick: string }).tick);
    // Exactly one job per tick: no tick appears twice, whatever ids the replicas chose.
    expect(jobTicks.length).toBe(new Set(jobTicks).size);
    // Every tick a replica enqueued has its job, and no job comes from anywhere else.
    for (const tick of [...a.keys(), ...b.keys()]) expect(jobTicks).toContain(tick);
    for (const tick of jobTicks) expect(fired.has(tick)).toBe(true);
    for (const job of jobs) {
      const { tick } = job.data as { tick: string };
      expect(job.id).toBe(reconcileQueue.jobId({ tick }));
      // Every tick is one of the */2 schedule's: a whole, even second.
      expect(tick).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$/);
      expect(new Date(tick).getUTCSeconds() % 2).toBe(0);
    }
    expect(jobs.length).toBeGreaterThanOrEqual(2);
  });
});

describe('reconcile', () => {
  let stack: TestStack;
  const runtimes: WorkerRuntime[] = [];
  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', workers: false, env: { RECONCILE_STUCK_AFTER_SECONDS: '1' } });
  });
  afterAll(async () => {
    for (const runtime of runtimes) await runtime.drain(5_000);
    await stack?.close();
  });

  it('re-enqueues a document stuck in queued without a live job, leaves one with a live job alone, and both end indexed', async () => {
    const tenant = await stack.createTenant();
    const post = async (n: number) => (await stack.as(tenant.key, 'post', '/api/documents').send(markdownDocument(n)).expect(202)).body;
    const [lost, alive] = [await post(1), await post(2)];
    const jobIdOf = (document: { id: string; job_id: string }) =>
      indexingQueue.jobId({ tenantId: tenant.id, indexJobId: document.job_id, documentId: document.id, version: 1 });
    const indexing = stack.platform.queues.queue(indexingQueue.name);

    // The lost document's job disappears from Redis, as after a Redis failover that dropped it.
    expect(await indexing.remove(jobIdOf(lost))).toBe(1);
    const aged = await stack.sql((db) => db('index_job_items').whereIn('document_id', [lost.id, alive.id]).update({ updated_at: db.raw(`now() - interval '1 hour'`) }));
    expect(aged).toBe(2);

    const reconciler = new WorkerRuntime(stack.platform, ['reconcile']);
    runtimes.push(reconciler);
    reconciler.start();
    const tickJobId = await stack.platform.queues.enqueue(reconcileQueue, { tick: new Date().toISOString() });
    const reconcile = stack.platform.queues.queue(reconcileQueue.name);
    await waitFor(async () => (await (await reconcile.getJob(tickJobId))?.getState()) === 'completed', { what: 'the reconcile job to complete' });
    expect((await reconcile.getJob(tickJobId))?.returnvalue).toMatchObject({ examined: { documents: 2 }, requeued: { documents: 1 } });
    expect(await (await indexing.getJob(jobIdOf(lost)))?.getState()).toBe('waiting');
    expect(await indexing.getJobCounts('waiting')).toEqual({ waiting: 2 });

    const indexer = new WorkerRuntime(stack.platform, ['indexing']);
    runtimes.push(indexer);
    indexer.start();
    await stack.waitForDocument(tenant.key, lost.id);
    await stack.waitForDocument(tenant.key, alive.id);
  });
});

/** A JSON POST with the operator token over a plain connection; resolves with the raw answer. */
function postJson(port: number, urlPath: string, body: unknown): Promise<{ status: number; body: string }> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: urlPath,
        headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload), Authorization: `Bearer ${ADMIN_TOKEN}` },
      },
      (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (text += chunk));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body: text }));
        response.on('error', reject);
      },
    );
    request.on('error', reject);
    request.end(payload);
  });
}
