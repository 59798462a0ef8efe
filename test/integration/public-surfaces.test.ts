import request from 'supertest';
import { QUEUE_NAMES } from '../../queues';
import { startStack, type TestStack } from '../helpers/harness';
import { PrivateRedis } from '../helpers/private-redis';

/**
 * What an anonymous caller can learn from, and cost, the public surfaces.
 * The stack runs on a Redis server of its own, so every command that server
 * counts was sent by this stack.
 */
describe('public surfaces cost nothing and reveal nothing', () => {
  let redis: PrivateRedis;
  let stack: TestStack;

  beforeAll(async () => {
    redis = await PrivateRedis.start();
    stack = await startStack({ database: 'postgres', workers: false, env: { REDIS_URL: redis.url } });
  });

  afterAll(async () => {
    await stack?.close();
    await redis?.kill();
  });

  it('tells an anonymous caller up or down per service, and nothing more', async () => {
    const response = await request(stack.app).get('/api/health').expect(200);
    expect(response.body).toEqual({
      status: 'healthy',
      services: { database: { status: 'up' }, redis: { status: 'up' }, vector_search: { status: 'unavailable' }, queues: { status: 'up' } },
    });
  });

  it('gives versions, queue depths and workers to the operator only', async () => {
    const response = await stack.operator('get', '/api/health').expect(200);
    expect(response.body).toMatchObject({ status: 'healthy', version: expect.any(String), uptime_seconds: expect.any(Number) });
    expect(Object.keys(response.body.services.queues.queues).sort()).toEqual([...QUEUE_NAMES].sort());
    expect(response.body.services.queues.queues.indexing).toMatchObject({ waiting: expect.any(Number), workers: expect.any(Number) });

    const wrongToken = await request(stack.app).get('/api/health').set('Authorization', 'Bearer not-the-operator-token-at-all').expect(200);
    expect(wrongToken.body.version).toBeUndefined();
    expect(wrongToken.body.services.queues.queues).toBeUndefined();
  });

  it('answers anonymous health checks without a single Redis command', async () => {
    const sent = await redis.commandsSentDuring(async () => {
      for (let i = 0; i < 20; i++) await request(stack.app).get('/api/health').expect(200);
    });
    // The health monitor's once-a-second PING is its own, whoever calls.
    expect(Object.keys(sent).filter((command) => command !== 'ping')).toEqual([]);
  });

  it('reads each queue once per /metrics scrape, and never lists the clients', async () => {
    const scrapes = 5;
    const sent = await redis.commandsSentDuring(async () => {
      for (let i = 0; i < scrapes; i++) await request(stack.app).get('/metrics').expect(200);
    });
    expect(sent['client|list']).toBeUndefined();
    const { ping: _monitorPings, ...queueReads } = sent;
    // Per queue: its counts, whether it is paused, and its oldest waiting job: a few round trips, read once for all three gauges.
    const perScrape = Object.values(queueReads).reduce((sum, count) => sum + count, 0) / scrapes;
    expect(perScrape).toBeLessThanOrEqual(QUEUE_NAMES.length * 4);
  });
});
