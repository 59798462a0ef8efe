import pg from 'pg';
import { startStack, type TestStack } from '../helpers/harness';

// No statement runs unbounded: every connection of the application carries
// statement_timeout and idle_in_transaction_session_timeout, a search has a
// tighter bound of its own, and running out of time is answered as what it
// is (503 with Retry-After), never as a 500 or as "database down".

jest.setTimeout(120_000);

const STATEMENT_MS = 2_000;
const IDLE_MS = 1_000;
const SEARCH_MS = 200;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Holds a table lock in an open transaction of the owner's, so the application's statements on it wait (and run out of time). */
async function holdLock(databaseUrl: string, table: string, mode: string): Promise<{ release(): Promise<void> }> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  await client.query('begin');
  await client.query(`lock table ${table} in ${mode} mode`);
  return {
    async release() {
      await client.query('rollback');
      await client.end();
    },
  };
}

describe('statement and transaction bounds (postgres)', () => {
  let stack: TestStack;
  let tenant: { id: string; slug: string; key: string };

  beforeAll(async () => {
    stack = await startStack({
      database: 'postgres',
      workers: false,
      env: {
        DATABASE_STATEMENT_TIMEOUT_MS: String(STATEMENT_MS),
        DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS: String(IDLE_MS),
        SEARCH_STATEMENT_TIMEOUT_MS: String(SEARCH_MS),
      },
    });
    tenant = await stack.createTenant();
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('sets both bounds on the connections of the application, inside its transactions too', async () => {
    const knex = stack.platform.db.knex;
    const show = async (db: typeof knex, name: string) => (await db.raw(`select current_setting('${name}') as value`)).rows[0].value;
    expect(await show(knex, 'statement_timeout')).toBe(`${STATEMENT_MS / 1000}s`);
    expect(await show(knex, 'idle_in_transaction_session_timeout')).toBe(`${IDLE_MS / 1000}s`);
    await stack.sql(async (trx) => {
      expect(await show(trx, 'statement_timeout')).toBe(`${STATEMENT_MS / 1000}s`);
    });
  });

  it('cancels a statement that runs longer than DATABASE_STATEMENT_TIMEOUT_MS, and the pool serves on', async () => {
    const started = Date.now();
    const error = await stack.platform.db.knex.raw('select pg_sleep(30)').then(() => null, (caught: unknown) => caught);
    const elapsed = Date.now() - started;
    expect(error).toMatchObject({ code: '57014' });
    expect(elapsed).toBeGreaterThanOrEqual(STATEMENT_MS - 100);
    expect(elapsed).toBeLessThan(STATEMENT_MS + 5_000);
    expect((await stack.platform.db.knex.raw('select 1 as one')).rows[0].one).toBe(1);
  });

  it('ends a transaction left idle longer than DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS, releasing its locks', async () => {
    const { id } = (await stack.as(tenant.key, 'post', '/api/admin/webhooks').send({ url: 'https://example.com/idle', event_types: ['document.indexed'] }).expect(201)).body;
    let locked!: () => void;
    const holding = new Promise<void>((resolve) => {
      locked = resolve;
    });
    const outcome = stack
      .sql(async (trx) => {
        await trx('webhook_endpoints').where({ id }).forUpdate().select('id');
        locked();
        await sleep(IDLE_MS * 3);
        await trx.raw('select 1');
      })
      .then(() => null, (caught: unknown) => caught);
    await holding;
    // The server ends the idle session at IDLE_MS, and its row lock with it: the writer waiting for the row goes on long before the transaction would have woken.
    const started = Date.now();
    await stack.as(tenant.key, 'patch', `/api/admin/webhooks/${id}`).send({ description: 'after the idle one' }).expect(200);
    expect(Date.now() - started).toBeLessThan(IDLE_MS * 3);
    const error = await outcome;
    expect(error).toBeInstanceOf(Error);
    expect((await stack.platform.db.knex.raw('select 1 as one')).rows[0].one).toBe(1);
  });

  it('answers 503 statement_timeout with Retry-After, not 500, when a request’s statement runs out of time', async () => {
    const { id } = (await stack.as(tenant.key, 'post', '/api/admin/webhooks').send({ url: 'https://example.com/slow', event_types: ['document.indexed'] }).expect(201)).body;
    const lock = await holdLock(stack.env.MIGRATION_DATABASE_URL, 'webhook_endpoints', 'exclusive');
    try {
      const response = await stack.as(tenant.key, 'patch', `/api/admin/webhooks/${id}`).send({ description: 'waits for the lock' });
      expect(response.status).toBe(503);
      expect(response.body.error.code).toBe('statement_timeout');
      expect(response.headers['retry-after']).toBe('5');
    } finally {
      await lock.release();
    }
    // The database was never down: health says so, and the same request now succeeds.
    expect(stack.platform.health.isUp('database')).toBe(true);
    await stack.as(tenant.key, 'patch', `/api/admin/webhooks/${id}`).send({ description: 'no lock now' }).expect(200);
  });

  it('stops a search at SEARCH_STATEMENT_TIMEOUT_MS, well before the general bound, with 503 search_timeout', async () => {
    const document = await stack.as(tenant.key, 'post', '/api/documents').send({ title: 'Owls', content: 'Barn owls hunt at night.' }).expect(202);
    expect(document.body.id).toBeDefined();
    // An ACCESS EXCLUSIVE lock on chunks makes the search's statement wait: its own bound is what ends the wait.
    const lock = await holdLock(stack.env.MIGRATION_DATABASE_URL, 'chunks', 'access exclusive');
    let response;
    const started = Date.now();
    try {
      response = await stack.as(tenant.key, 'post', '/api/search').send({ query: 'owls', mode: 'keyword' });
    } finally {
      await lock.release();
    }
    const elapsed = Date.now() - started;
    expect(response.status).toBe(503);
    expect(response.body.error).toMatchObject({ code: 'search_timeout', details: { timeout_ms: SEARCH_MS } });
    expect(response.headers['retry-after']).toBe('5');
    expect(elapsed).toBeLessThan(STATEMENT_MS);
    // Without the lock, the same search answers (nothing was cached from the failed one).
    await stack.as(tenant.key, 'post', '/api/search').send({ query: 'owls', mode: 'keyword' }).expect(200);
    // The search's bound stays inside its transaction: the connection goes back to the pool with the general one.
    const settings = await Promise.all(
      Array.from({ length: 3 }, () => stack.platform.db.knex.raw(`select current_setting('statement_timeout') as value`)),
    );
    expect(settings.map((result) => result.rows[0].value)).toEqual(Array(3).fill(`${STATEMENT_MS / 1000}s`));
  });
});
