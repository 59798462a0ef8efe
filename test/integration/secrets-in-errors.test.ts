import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import { queuePrefix } from '../../queues';
import pg from 'pg';
import request from 'supertest';
import { openDatabase } from '../../src/db/database';
import { createLogger } from '../../src/logger';
import { createTestDatabase, REDIS_URL, uniqueName } from '../helpers/databases';
import { ADMIN_TOKEN } from '../helpers/harness';
import { killLeftoverProcesses, startRagworks, unusedPort, type RagworksProcess } from '../helpers/processes';
import { deleteRedisPrefix } from '../helpers/redis';
import { waitFor } from '../helpers/wait';

// A statement that fails while a secret is bound must not carry the secret
// into an error: not into a log line, a job's failed reason or stack trace,
// a dead letter, or the document's error. A real `all` process on a real
// PostgreSQL, whose constraints (added by the owner for this test) refuse
// the rows the process writes. It connects as a superuser, as development
// set-ups do: PostgreSQL then writes the refused row's values into the
// error's `detail` (row-level security would hold them back).

jest.setTimeout(180_000);

/** The document text that the chunks constraint refuses. */
const REFUSED = 'refuse me';

describe('secrets in failed statements (postgres, a real process)', () => {
  const scratch = mkdtempSync(path.join(os.tmpdir(), 'ragworks-secrets-'));
  const prefix = uniqueName('rwsecret');
  const secret = `s3cret-${randomUUID()}`;
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  let owner: pg.Client;
  let child: RagworksProcess;
  let api: string;
  let key: string;

  beforeAll(async () => {
    database = await createTestDatabase();
    const port = await unusedPort();
    child = startRagworks('all', {
      NODE_ENV: 'test',
      PORT: String(port),
      HOST: '127.0.0.1',
      DATABASE_URL: database.url,
      REDIS_URL,
      QUEUE_PREFIX: prefix,
      DATA_DIR: scratch,
      ADMIN_TOKEN,
      // Every line, debug included, is searched for the secret.
      LOG_LEVEL: 'debug',
      SCHEDULE_RECONCILE: '0 0 1 1 *',
    });
    await child.waitForMessage('api listening', { timeoutMs: 120_000 });
    api = `http://127.0.0.1:${port}`;
    owner = new pg.Client({ connectionString: database.url });
    await owner.connect();
    await owner.query(`alter table webhook_endpoints add constraint test_refused_endpoint check (description is distinct from '${REFUSED}')`);
    await owner.query(`alter table chunks add constraint test_refused_chunk check (strpos(content, '${REFUSED}') = 0)`);
    const tenant = await request(api).post('/api/admin/tenants').set('Authorization', `Bearer ${ADMIN_TOKEN}`).send({ slug: uniqueName('s').replace(/_/g, '-'), name: 'Secrets', tier: 'unlimited' }).expect(201);
    key = (await request(api).post('/api/admin/api-keys').set('Authorization', `Bearer ${ADMIN_TOKEN}`).set('X-Tenant-Id', tenant.body.id).send({ name: 'k', scopes: ['admin'] }).expect(201)).body.key;
  });
  afterAll(async () => {
    await child?.stop().catch(() => undefined);
    await killLeftoverProcesses();
    await owner?.end();
    await deleteRedisPrefix(prefix);
    await database?.drop();
    rmSync(scratch, { recursive: true, force: true });
  });

  it('never writes bound values into the message of a failed statement', async () => {
    // knex inlines bindings into the message at each literal "?" left after numbering them, such as jsonb's `?` operator.
    const db = await openDatabase({ databaseUrl: database.url, dataDir: scratch, poolMax: 1, logger: createLogger('silent'), statementTimeoutMs: 0, idleInTransactionTimeoutMs: 0 });
    try {
      const error = await db.knex.raw(`select (?::jsonb) \\? 'owner', 1 / 0`, [JSON.stringify({ owner: secret })]).then(() => null, (caught: Error) => caught);
      expect(error?.message).toMatch(/division by zero/);
      expect(error?.message).not.toContain(secret);
    } finally {
      await db.close();
    }
  });

  /** Everything the process wrote, every stream. */
  const output = () => [...child.stdout, ...child.stderr].join('\n');

  it('keeps a new webhook secret out of the log when its insert fails', async () => {
    const response = await request(api)
      .post('/api/admin/webhooks')
      .set('Authorization', `Bearer ${key}`)
      .send({ url: 'https://example.com/hook', description: REFUSED, event_types: ['document.indexed'] });
    expect(response.status).toBe(500);
    // The failure was logged, with the statement and the constraint it broke …
    const logged = await child.waitForLog((line) => line.msg === 'request failed' && JSON.stringify(line.err ?? '').includes('test_refused_endpoint'));
    expect((logged.err as { message: string }).message).toContain('insert into "webhook_endpoints"');
    // … but no value it was bound with: no signing secret, not even its prefix.
    expect(output()).not.toContain('whsec_');
  });

  it('keeps a document’s text out of the job’s failed reason and stack trace, the dead letter and the log', async () => {
    const created = await request(api)
      .post('/api/documents')
      .set('Authorization', `Bearer ${key}`)
      .send({ title: 'Board minutes', content: `Confidential: ${secret}. The board agreed to ${REFUSED}.` })
      .expect(202);
    const jobId = `doc-${created.body.id}-v${created.body.version}-${created.body.job_id}`;
    const redis = new URL(REDIS_URL);
    const queue = new Queue('indexing', { connection: { host: redis.hostname, port: Number(redis.port || 6379) }, prefix: queuePrefix(prefix, 'indexing') });
    try {
      // Each retry is promoted as soon as it is scheduled, so the five attempts take seconds, not the backoff's half minute.
      const job = await waitFor(
        async () => {
          const candidate = await queue.getJob(jobId);
          const state = await candidate?.getState();
          if (state === 'delayed') await candidate!.promote().catch(() => undefined);
          return state === 'failed' ? candidate : null;
        },
        { what: 'the indexing job to fail for good', timeoutMs: 120_000, intervalMs: 100 },
      );
      expect(job.failedReason).toContain('test_refused_chunk');
      expect(job.failedReason).not.toContain(secret);
      expect((job.stacktrace ?? []).join('\n')).not.toContain(secret);

      const letter = await waitFor(async () => (await owner.query('select error_message, stacktrace from dead_letters where job_id = $1', [jobId])).rows[0], {
        what: 'the dead letter',
      });
      expect(letter.error_message).toContain('test_refused_chunk');
      expect(`${letter.error_message}\n${letter.stacktrace}`).not.toContain(secret);

      const document = await request(api).get(`/api/documents/${created.body.id}`).set('Authorization', `Bearer ${key}`).expect(200);
      expect(document.body.status).toBe('failed');
      expect(document.body.error).not.toContain(secret);

      expect(child.messages('job attempt failed').length).toBeGreaterThanOrEqual(1);
      expect(output()).not.toContain(secret);
    } finally {
      await queue.close();
    }
  });
});
