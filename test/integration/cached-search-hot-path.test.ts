import type { Socket } from 'node:net';
import { startStack, type TestStack } from '../helpers/harness';
import { PrivateRedis } from '../helpers/private-redis';
import { waitFor } from '../helpers/wait';
import { requestScope } from '../../src/request-scope';

// What a cached search costs: no SQL statement and at most two Redis round
// trips (docs/architecture.md, step 13; DESIGN.md, "The hot path has a budget").
//
// How it is counted. Both counters attribute work to the request by its id,
// through the request scope (AsyncLocalStorage) that domain code runs in:
// - SQL: connections taken from the platform's pool (knex's
//   acquireConnection, which every statement needs, whether it goes through
//   knex or straight to the driver), counted when the request's scope is
//   active. No connection, no statement.
// - Redis round trips: writes to the socket of the platform's connection
//   (the one every request's command goes through), counted when the
//   request's scope is active: commands sent in one write travel together
//   and are answered together, so one write is one round trip. Work the
//   request leaves for later (the search counter and analytics event, sent
//   after the reply) keeps the request's scope and is counted too.
// MONITOR on a Redis server of the test's own checks the same from the
// server's side: the commands that arrived, by name.

jest.setTimeout(120_000);

interface Counted {
  status: number;
  body: { cached?: boolean; total_results?: number; error?: { code: string } };
  /** Database connections the request took. */
  connections: number;
  redisWrites: string[];
}

describe('a cached search', () => {
  let redis: PrivateRedis;
  let stack: TestStack;
  let tenant: { id: string; key: string };
  let requestNumber = 0;

  beforeAll(async () => {
    redis = await PrivateRedis.start();
    stack = await startStack({
      database: 'postgres',
      env: {
        REDIS_URL: redis.url,
        // Key use is written every so often (batched): not within these requests.
        API_KEY_USAGE_FLUSH_MS: '3600000',
        // The tier's rate limits in force, and high enough not to refuse.
        RATE_LIMIT_TENANT: 'free=600,standard=6000,enterprise=60000,unlimited=0',
        RATE_LIMIT_KEY: 'free=300,standard=3000,enterprise=30000,unlimited=0',
      },
    });
    tenant = await stack.createTenant(undefined, 'standard');
    const document = await stack.as(tenant.key, 'post', '/api/documents').send({ title: 'Lighthouse keeping', content: 'The keeper trims the lamp at dusk.' }).expect(202);
    await stack.waitForDocument(tenant.key, document.body.id);
    // Idle workers still talk to Redis (blocking fetches, stalled-job checks): stopped, they cannot blur the count.
    await stack.workers?.drain(5_000);
  });

  afterAll(async () => {
    await stack?.close();
    await redis?.kill();
  });

  /** Sends one search and counts the database connections and Redis writes it took. */
  async function countedSearch(body: Record<string, unknown>): Promise<Counted> {
    const requestId = `counted-${(requestNumber += 1)}`;
    let connections = 0;
    const redisWrites: string[] = [];
    const mine = () => requestScope.getStore()?.requestId === requestId;
    const pool = stack.platform.db.knex.client as { acquireConnection(): Promise<unknown> };
    const acquire = pool.acquireConnection;
    pool.acquireConnection = function (this: unknown) {
      if (mine()) connections += 1;
      return acquire.call(this);
    };
    const socket = (stack.platform.redis as unknown as { stream: Socket }).stream;
    const write = socket.write;
    socket.write = function (this: Socket, chunk: unknown, ...rest: unknown[]) {
      if (mine()) redisWrites.push(String(chunk));
      return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
    } as Socket['write'];
    try {
      const reply = await stack.as(tenant.key, 'post', '/api/search').set('X-Request-Id', requestId).send(body);
      // What the reply does not wait for is sent at the end of the turn it was written in.
      await new Promise((resolve) => setImmediate(resolve));
      return { status: reply.status, body: reply.body, connections, redisWrites };
    } finally {
      pool.acquireConnection = acquire;
      socket.write = write;
    }
  }

  const lighthouse = { query: 'lighthouse keeper', mode: 'keyword', limit: 10 };

  it('makes no SQL statement and two Redis round trips: one script before the reply, one command after it', async () => {
    // Until the key-change channel is heard, keys are checked in the database on every request.
    await waitFor(() => stack.platform.keyChanges.listening, { what: 'the key-change channel to be heard' });
    // The first search computes (and caches) its answer in the database: the counter sees it.
    const first = await countedSearch(lighthouse);
    expect(first).toMatchObject({ status: 200, body: { cached: false, total_results: 1 } });
    expect(first.connections).toBeGreaterThan(0);

    let hit!: Counted;
    const commands = await redis.commandsSentDuring(async () => {
      hit = await countedSearch(lighthouse);
    });
    expect(hit).toMatchObject({ status: 200, body: { cached: true, total_results: 1 } });
    expect(hit.connections).toBe(0);
    expect(hit.redisWrites).toHaveLength(2);
    // Server side: the admission script (rate limits, daily quota, cache generation) and the record script
    // (search counter, analytics event); PINGs are health checks, not the request's.
    const { ping: _healthChecks, ...sent } = commands;
    expect(sent).toEqual({ evalsha: 2 });
  });

  it('takes the daily search quota with the rate limits, and only for valid input: a malformed search spends a rate-limit unit, no search', async () => {
    const usedToday = async () => (await stack.operator('get', '/api/admin/usage', tenant.id).expect(200)).body.quotas.searches_per_day.used as number;
    const before = await usedToday();
    const invalid = await countedSearch({ query: '', mode: 'keyword' });
    expect(invalid.status).toBe(400);
    // The rate limits were taken (and the daily quota was not) in that one script.
    expect(invalid.redisWrites).toHaveLength(1);
    expect(await usedToday()).toBe(before);
    expect((await countedSearch(lighthouse)).status).toBe(200);
    expect(await usedToday()).toBe(before + 1);
  });
});
