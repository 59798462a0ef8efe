import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import { indexingQueue } from '../../queues';
import { embedText } from '../../src/domain/embeddings/hashing';
import { startStack, type TestStack } from '../helpers/harness';
import { PrivateRedis } from '../helpers/private-redis';
import { killLeftoverProcesses, startRagworks, type RagworksProcess } from '../helpers/processes';
import { waitFor } from '../helpers/wait';

// The search cache as a client and an operator see it: `cached` in search
// replies, invalidation when the index changes (also from a worker in another
// process), tenant isolation, single flight, a Redis that hangs and then dies
// mid-test, the operator endpoints and the metrics.

jest.setTimeout(120_000);

interface Hit {
  document_id: string;
  title: string;
  tags: string[];
}

interface SearchReply {
  results: Hit[];
  total_results: number;
  mode: string;
  query: string;
  cached: boolean;
}

interface CacheStatsReply {
  enabled: boolean;
  breaker: { state: 'closed' | 'open' | 'half-open'; opened: number };
  l1: { hits: number; misses: number; sets: number; evictions: number; hit_ratio: number | null; size: number; max: number };
  l2: { hits: number; misses: number; sets: number; evictions: number; hit_ratio: number | null };
  overall_hit_ratio: number | null;
  single_flight_joins: number;
}

interface DocumentInput {
  title: string;
  content: string;
  tags?: string[];
  content_type?: 'markdown' | 'text';
}

async function search(stack: TestStack, key: string, body: Record<string, unknown>): Promise<SearchReply> {
  const reply = await stack.as(key, 'post', '/api/search').send(body);
  if (reply.status !== 200) throw new Error(`search ${JSON.stringify(body)} answered ${reply.status}: ${JSON.stringify(reply.body)}`);
  return reply.body as SearchReply;
}

async function cacheStats(stack: TestStack): Promise<CacheStatsReply> {
  return (await stack.operator('get', '/api/admin/cache/stats').expect(200)).body as CacheStatsReply;
}

const ids = (reply: SearchReply) => reply.results.map((hit) => hit.document_id).sort();

/** Posts documents as one batch and waits for its index job to complete; returns their ids in order. */
async function seed(stack: TestStack, key: string, documents: DocumentInput[]): Promise<string[]> {
  const reply = await stack.as(key, 'post', '/api/documents/batch').send({ documents }).expect(202);
  const jobId: string = reply.body.job_id;
  await waitFor(
    async () => {
      const job = await stack.as(key, 'get', `/api/index/jobs/${jobId}`).expect(200);
      if (job.body.status === 'failed' || job.body.status === 'canceled') throw new Error(`index job ${job.body.status}: ${job.body.error}`);
      return job.body.status === 'completed';
    },
    { timeoutMs: 60_000, intervalMs: 100, what: `index job ${jobId} to complete` },
  );
  // The job is completed at the store's commit; the worker bumps the cache generation just after, then
  // finishes its queue job. Waiting for that keeps a test's first search from being cached at the old one.
  const indexing = stack.platform.queues.queue(indexingQueue.name);
  await waitFor(async () => Object.values(await indexing.getJobCounts('waiting', 'prioritized', 'active', 'delayed')).every((count) => count === 0), {
    timeoutMs: 60_000,
    intervalMs: 50,
    what: 'the indexing queue jobs to finish',
  });
  return (reply.body.items as Array<{ id: string }>).map((item) => item.id);
}

/** Reads `ragworks_cache_events_total` from /metrics as `{ "l1:hits": n, … }`. */
async function cacheEventMetrics(stack: TestStack): Promise<Record<string, number>> {
  const text: string = (await stack.operator('get', '/metrics').expect(200)).text;
  const events: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const match = /^ragworks_cache_events_total\{(.*)\} (\S+)$/.exec(line);
    if (!match) continue;
    const labels = Object.fromEntries([...match[1].matchAll(/(\w+)="([^"]*)"/g)].map(([, name, value]) => [name, value]));
    events[`${labels.tier}:${labels.event}`] = Number(match[2]);
  }
  return events;
}

/**
 * An OpenAI-compatible embeddings server that records every request's input
 * and can hold back the answers to chosen inputs until released, so a test
 * controls how long a query embedding takes.
 */
async function startHoldingProvider(dimensions: number) {
  const inputs: string[][] = [];
  let holding: ((input: string[]) => boolean) | null = null;
  const held: Array<() => void> = [];
  const server = http.createServer((req, res) => {
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (part: string) => (raw += part));
    req.on('end', () => {
      const body = JSON.parse(raw) as { model: string; input: string[] };
      inputs.push(body.input);
      const answer = () => {
        res.setHeader('Content-Type', 'application/json');
        const data = body.input.map((text, index) => ({ object: 'embedding', index, embedding: embedText(text, dimensions) }));
        res.end(JSON.stringify({ object: 'list', model: body.model, data }));
      };
      if (holding?.(body.input)) held.push(answer);
      else answer();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    env: {
      EMBEDDINGS_PROVIDER: 'openai',
      EMBEDDINGS_URL: `http://127.0.0.1:${port}/v1/embeddings`,
      EMBEDDINGS_MODEL: 'cache-test-model',
      EMBEDDINGS_DIMENSIONS: String(dimensions),
    },
    /** How many requests asked to embed exactly this one text. */
    requestsFor: (text: string) => inputs.filter((input) => input.length === 1 && input[0] === text).length,
    hold(predicate: (input: string[]) => boolean) {
      holding = predicate;
    },
    release() {
      holding = null;
      for (const answer of held.splice(0)) answer();
    },
    close() {
      this.release();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('search replies and the cache (embedded database with pgvector)', () => {
  let stack: TestStack;
  let provider: Awaited<ReturnType<typeof startHoldingProvider>>;
  let alpha: { id: string; slug: string; key: string };
  let beta: { id: string; slug: string; key: string };
  let alphaIds: string[];
  let betaIds: string[];

  beforeAll(async () => {
    provider = await startHoldingProvider(384);
    // A generous Redis timeout: on a busy machine a slow Redis answer must not trip the breaker and skip Redis here.
    stack = await startStack({ database: 'pglite', env: { ...provider.env, CACHE_REDIS_TIMEOUT_MS: '500' } });
    alpha = await stack.createTenant();
    beta = await stack.createTenant();
    alphaIds = await seed(stack, alpha.key, [
      { title: 'Lighthouse keeper duties', content: 'The lighthouse keeper trims the lamp wick and logs the weather at dawn.', tags: ['coast', 'north'] },
      { title: 'Harbour pilots', content: 'Pilots guide ships past the lighthouse into the harbour at high tide.', tags: ['coast'], content_type: 'text' },
      { title: 'Mountain huts', content: 'Hut wardens keep a log of walkers crossing the pass.', tags: ['inland'] },
    ]);
    betaIds = await seed(stack, beta.key, [
      { title: 'Keeping a lighthouse', content: 'A lighthouse keeper of the southern cape polishes the lens every evening.', tags: ['coast', 'north'] },
    ]);
  });

  afterAll(async () => {
    await stack?.close();
    await provider?.close();
  });

  it('answers cached:false the first time and cached:true for the same request again, whitespace and tag order aside', async () => {
    const request = { query: 'lighthouse keeper', mode: 'keyword', limit: 5, filters: { tags: ['coast', 'north'] } };
    const first = await search(stack, alpha.key, request);
    expect(first.cached).toBe(false);
    expect(ids(first)).toEqual([alphaIds[0]]);

    const again = await search(stack, alpha.key, request);
    expect(again.cached).toBe(true);
    expect(again.results).toEqual(first.results);

    const spaced = await search(stack, alpha.key, { ...request, query: '  lighthouse \t  keeper ', filters: { tags: ['north', 'coast', 'north'] } });
    expect(spaced.cached).toBe(true);
    expect(spaced.results).toEqual(first.results);

    // The GET form with the same parameters is the same search.
    const viaGet = await stack.as(alpha.key, 'get', '/api/search?q=lighthouse%20%20keeper&mode=keyword&limit=5&tags=north,coast').expect(200);
    expect(viaGet.body.cached).toBe(true);
    expect(viaGet.body.results).toEqual(first.results);
  });

  it('treats a different limit, mode or filter as a different search', async () => {
    const base = { query: 'lighthouse', mode: 'keyword', limit: 5 };
    expect((await search(stack, alpha.key, base)).cached).toBe(false);
    expect((await search(stack, alpha.key, base)).cached).toBe(true);
    const variants: Array<Record<string, unknown>> = [
      { ...base, limit: 1 },
      { ...base, mode: 'hybrid' },
      { ...base, mode: 'semantic' },
      { ...base, filters: { tags: ['coast'] } },
      { ...base, filters: { content_type: 'text' } },
      { ...base, filters: { created_from: '2000-01-01T00:00:00Z' } },
      { ...base, query: 'lighthouse harbour' },
    ];
    for (const variant of variants) {
      const reply = await search(stack, alpha.key, variant);
      expect({ variant, cached: reply.cached }).toEqual({ variant, cached: false });
      expect({ variant, cached: (await search(stack, alpha.key, variant)).cached }).toEqual({ variant, cached: true });
    }
    // The variants answered differently where they should: a cached answer is the answer to that request.
    expect((await search(stack, alpha.key, { ...base, limit: 1 })).results).toHaveLength(1);
    expect(ids(await search(stack, alpha.key, { ...base, filters: { content_type: 'text' } }))).toEqual([alphaIds[1]]);
  });

  it("keeps tenants apart: another tenant's identical search is a miss and never returns the first tenant's documents", async () => {
    const request = { query: 'lighthouse keeper', mode: 'hybrid', limit: 10 };
    const mine = await search(stack, alpha.key, request);
    expect((await search(stack, alpha.key, request)).cached).toBe(true);

    const theirs = await search(stack, beta.key, request);
    expect(theirs.cached).toBe(false);
    expect(ids(theirs)).toEqual(betaIds);
    expect((await search(stack, beta.key, request)).results).toEqual(theirs.results);

    // Neither overwrote the other.
    const mineAgain = await search(stack, alpha.key, request);
    expect(mineAgain.cached).toBe(true);
    expect(mineAgain.results).toEqual(mine.results);
    expect(ids(mineAgain).every((id) => alphaIds.includes(id))).toBe(true);
  });

  it('computes 20 concurrent identical searches on a cold key once: the query is embedded once', async () => {
    const query = 'weather log at dawn by the lamp';
    const before = await cacheStats(stack);
    // Hold the query's embedding so that all 20 requests arrive while the first is still computing.
    provider.hold((input) => input.length === 1 && input[0] === query);
    const replies = Array.from({ length: 20 }, () => stack.as(alpha.key, 'post', '/api/search').send({ query, mode: 'semantic', limit: 3 }).then((reply) => reply));
    try {
      await waitFor(async () => (await cacheStats(stack)).single_flight_joins - before.single_flight_joins >= 19, {
        timeoutMs: 30_000,
        what: '19 searches to join the first',
      });
    } finally {
      provider.release();
    }
    const settled = await Promise.all(replies);
    expect(settled.map((reply) => reply.status)).toEqual(Array.from({ length: 20 }, () => 200));
    expect(provider.requestsFor(query)).toBe(1);
    expect(settled.filter((reply) => reply.body.cached === false)).toHaveLength(1);
    for (const reply of settled) expect(reply.body.results).toEqual(settled[0].body.results);
    expect((await cacheStats(stack)).single_flight_joins - before.single_flight_joins).toBe(19);

    // Query embeddings are cached too: the same query with another limit is a new search but no new embedding.
    const other = await search(stack, alpha.key, { query, mode: 'semantic', limit: 2 });
    expect(other.cached).toBe(false);
    expect(provider.requestsFor(query)).toBe(1);
  });

  it('POST /api/admin/cache/invalidate: one tenant, every tenant, and refusals that change nothing', async () => {
    const request = { query: 'lighthouse', mode: 'keyword', limit: 10 };
    const warm = async () => {
      await search(stack, alpha.key, request);
      await search(stack, beta.key, request);
      expect((await search(stack, alpha.key, request)).cached).toBe(true);
      expect((await search(stack, beta.key, request)).cached).toBe(true);
    };
    await warm();

    // Refused: a tenant's own key (even with admin scope), an unknown tenant, a malformed body.
    const byTenant = await stack.as(alpha.key, 'post', '/api/admin/cache/invalidate').send({ tenant_id: alpha.id }).expect(403);
    expect(byTenant.body.error).toMatchObject({ code: expect.any(String), message: expect.any(String) });
    const unknownId = await stack.operator('post', '/api/admin/cache/invalidate').send({ tenant_id: '0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b' }).expect(404);
    expect(unknownId.body.error.code).toBe('not_found');
    await stack.operator('post', '/api/admin/cache/invalidate').send({ tenant_id: 'no-such-tenant' }).expect(404);
    const malformed = await stack.operator('post', '/api/admin/cache/invalidate').send({ tenant_id: 42 }).expect(400);
    expect(malformed.body.error.code).toBe('validation_failed');
    await stack.operator('post', '/api/admin/cache/invalidate').send({ tenant: alpha.id }).expect(400);
    expect((await search(stack, alpha.key, request)).cached).toBe(true);
    expect((await search(stack, beta.key, request)).cached).toBe(true);

    // One tenant, by id: only that tenant misses.
    const one = await stack.operator('post', '/api/admin/cache/invalidate').send({ tenant_id: alpha.id }).expect(200);
    expect(one.body).toEqual({ tenants: 1, generation: expect.any(Number) });
    expect((await search(stack, alpha.key, request)).cached).toBe(false);
    expect((await search(stack, beta.key, request)).cached).toBe(true);

    // One tenant, by slug.
    await stack.operator('post', '/api/admin/cache/invalidate').send({ tenant_id: beta.slug }).expect(200);
    expect((await search(stack, beta.key, request)).cached).toBe(false);

    // Every tenant.
    await warm();
    const all = await stack.operator('post', '/api/admin/cache/invalidate').send({}).expect(200);
    expect(all.body.tenants).toBeGreaterThanOrEqual(2);
    const alphaAfter = await search(stack, alpha.key, request);
    const betaAfter = await search(stack, beta.key, request);
    expect([alphaAfter.cached, betaAfter.cached]).toEqual([false, false]);
    expect(ids(alphaAfter).every((id) => alphaIds.includes(id))).toBe(true);
    expect(ids(betaAfter)).toEqual(betaIds);
  });

  it('GET /api/admin/cache/stats is for operators and counts what happened', async () => {
    const refused = await stack.as(alpha.key, 'get', '/api/admin/cache/stats').expect(403);
    expect(refused.body.error.code).toEqual(expect.any(String));
    const before = await cacheStats(stack);
    const request = { query: 'harbour pilots', mode: 'keyword', limit: 4 };
    await search(stack, alpha.key, request);
    await search(stack, alpha.key, request);
    const after = await cacheStats(stack);
    expect(after).toMatchObject({ enabled: true, breaker: { state: 'closed' }, l1: { max: 10_000 } });
    expect(after.l1.hits - before.l1.hits).toBe(1);
    expect(after.l1.misses - before.l1.misses).toBe(1);
    expect(after.l2.misses - before.l2.misses).toBe(1);
    expect(after.l1.sets - before.l1.sets).toBe(1);
    expect(after.l1.hit_ratio).toBeGreaterThan(0);
    expect(after.overall_hit_ratio).toBeGreaterThan(0);
  });

  it('/metrics has ragworks_cache_events_total by tier and event, matching the stats', async () => {
    const request = { query: 'mountain huts', mode: 'keyword', limit: 4 };
    await search(stack, alpha.key, request);
    await search(stack, alpha.key, request);
    await waitFor(async () => (await cacheStats(stack)).l2.sets > 0, { what: 'a Redis write to be counted' });
    const [events, stats] = [await cacheEventMetrics(stack), await cacheStats(stack)];
    expect(events).toMatchObject({
      'l1:hits': stats.l1.hits,
      'l1:misses': stats.l1.misses,
      'l1:sets': stats.l1.sets,
      'l2:misses': stats.l2.misses,
      'l2:sets': stats.l2.sets,
    });
    expect(events['l1:hits']).toBeGreaterThan(0);
    // The hit ratios, per tier and overall, as the stats have them.
    const text: string = (await stack.operator('get', '/metrics').expect(200)).text;
    const ratio = (tier: string) => Number(new RegExp(`^ragworks_cache_hit_ratio\\{tier="${tier}"\\} (\\S+)$`, 'm').exec(text)?.[1]);
    const now = await cacheStats(stack);
    expect({ l1: ratio('l1'), overall: ratio('overall') }).toEqual({ l1: now.l1.hit_ratio, overall: now.overall_hit_ratio });
    expect(ratio('overall')).toBeGreaterThan(0);
  });
});

describe('never stale across processes (PostgreSQL, indexing in a worker process)', () => {
  let stack: TestStack;
  let worker: RagworksProcess;

  beforeAll(async () => {
    // No workers here: only the child indexes, and it bumps the generation from its own process.
    stack = await startStack({ database: 'postgres', workers: false });
    worker = startRagworks('worker', { ...stack.env, LOG_LEVEL: 'info', WORKER_QUEUES: 'indexing' });
    await worker.waitForMessage('workers started', { timeoutMs: 60_000 });
  });

  afterAll(async () => {
    await worker?.stop('SIGTERM').catch(() => undefined);
    await killLeftoverProcesses();
    await stack?.close();
  });

  const keyword = (query: string, extra: Record<string, unknown> = {}) => ({ query, mode: 'keyword', limit: 10, ...extra });

  it('a document indexed by another process is in the next search, which is not cached', async () => {
    const tenant = await stack.createTenant();
    const [first] = await seed(stack, tenant.key, [{ title: 'Foghorn maintenance', content: 'Grease the foghorn diaphragm before winter.' }]);
    const before = await search(stack, tenant.key, keyword('foghorn'));
    expect(before).toMatchObject({ cached: false, total_results: 1 });
    expect((await search(stack, tenant.key, keyword('foghorn'))).cached).toBe(true);

    const [second] = await seed(stack, tenant.key, [{ title: 'Foghorn history', content: 'The first foghorn on this coast was steam driven.' }]);
    const after = await search(stack, tenant.key, keyword('foghorn'));
    expect(after.cached).toBe(false);
    expect(ids(after)).toEqual([first, second].sort());
    expect(worker.running).toBe(true);
  });

  it('DELETE and a PATCH of tags (no re-indexing) invalidate at once; a PATCH of content after its re-indexing', async () => {
    const tenant = await stack.createTenant();
    const [kept, doomed] = await seed(stack, tenant.key, [
      { title: 'Buoy colours', content: 'Red buoys mark the port side of the channel.', tags: ['charts'] },
      { title: 'Buoy lights', content: 'Buoy lights flash in groups to tell them apart.', tags: ['charts'] },
    ]);
    expect(ids(await search(stack, tenant.key, keyword('buoy')))).toEqual([kept, doomed].sort());
    expect((await search(stack, tenant.key, keyword('buoy'))).cached).toBe(true);

    await stack.as(tenant.key, 'delete', `/api/documents/${doomed}`).expect(204);
    const afterDelete = await search(stack, tenant.key, keyword('buoy'));
    expect(afterDelete.cached).toBe(false);
    expect(ids(afterDelete)).toEqual([kept]);

    // Tags are shown in results and filtered on: both must follow the PATCH at once.
    const archived = keyword('buoy', { filters: { tags: ['archived'] } });
    expect((await search(stack, tenant.key, archived)).results).toEqual([]);
    expect((await search(stack, tenant.key, archived)).cached).toBe(true);
    await stack.as(tenant.key, 'patch', `/api/documents/${kept}`).send({ tags: ['charts', 'archived'] }).expect(200);
    const filtered = await search(stack, tenant.key, archived);
    expect(filtered.cached).toBe(false);
    expect(ids(filtered)).toEqual([kept]);
    const shown = await search(stack, tenant.key, keyword('buoy'));
    expect(shown.cached).toBe(false);
    expect(shown.results.map((hit) => hit.tags)).toEqual([['charts', 'archived']]);

    // New content is searchable once the worker has re-indexed it.
    expect((await search(stack, tenant.key, keyword('lateral'))).results).toEqual([]);
    expect((await search(stack, tenant.key, keyword('lateral'))).cached).toBe(true);
    await stack.as(tenant.key, 'patch', `/api/documents/${kept}`).send({ content: 'Lateral marks show the sides of the channel.' }).expect(202);
    await waitFor(
      async () => {
        const document = await stack.as(tenant.key, 'get', `/api/documents/${kept}`).expect(200);
        return document.body.status === 'indexed' && document.body.version === 2;
      },
      { timeoutMs: 60_000, what: 'the new version to be indexed' },
    );
    const reindexed = await search(stack, tenant.key, keyword('lateral'));
    expect(reindexed.cached).toBe(false);
    expect(ids(reindexed)).toEqual([kept]);
  });
});

describe('Redis failure: searches answer from the in-process tier, and the cache recovers by itself', () => {
  let redis: PrivateRedis;
  let stack: TestStack;

  beforeAll(async () => {
    redis = await PrivateRedis.start();
    // A generous Redis timeout keeps a busy machine from tripping the breaker before the test means it to.
    stack = await startStack({ database: 'postgres', env: { REDIS_URL: redis.url, CACHE_REDIS_TIMEOUT_MS: '300' } });
  });

  afterAll(async () => {
    redis?.resume();
    await stack?.close();
    await redis?.kill();
  });

  /** A search that must answer, and soon: a dead Redis must not hold it up. */
  async function searchPromptly(key: string, body: Record<string, unknown>): Promise<SearchReply> {
    const started = Date.now();
    const reply = await search(stack, key, body);
    // Not a benchmark: a bound far above any healthy answer, far below a hang on Redis.
    expect(Date.now() - started).toBeLessThan(2_000);
    return reply;
  }

  it('hung Redis, then dead Redis: searches keep answering, stats show the open breaker; restarted Redis is used again', async () => {
    const tenant = await stack.createTenant();
    const beacon = { query: 'beacon', mode: 'keyword', limit: 10 };
    // Cached while the tenant has nothing: this answer is out of date as soon as anything is indexed.
    expect(await search(stack, tenant.key, beacon)).toMatchObject({ cached: false, total_results: 0 });
    const [document] = await seed(stack, tenant.key, [{ title: 'Beacon fires', content: 'Beacon fires on the headland warned of raiders.' }]);
    expect(await search(stack, tenant.key, beacon)).toMatchObject({ cached: false, total_results: 1 });
    expect(await search(stack, tenant.key, beacon)).toMatchObject({ cached: true, total_results: 1 });
    // A second tenant whose document changes while Redis hangs.
    const other = await stack.createTenant();
    const [otherDocument] = await seed(stack, other.key, [{ title: 'Beacon towers', content: 'Beacon towers stood on every hill.' }]);
    expect(await search(stack, other.key, beacon)).toMatchObject({ cached: false, total_results: 1 });
    expect(await search(stack, other.key, beacon)).toMatchObject({ cached: true, total_results: 1 });
    const healthy = await cacheStats(stack);
    expect(healthy.breaker.state).toBe('closed');

    redis.pause();
    try {
      // A change while Redis hangs is refused once marking it as begun gives up: committed unmarked, another
      // process could keep serving its old cached answer. It answers promptly and changes nothing.
      const patchStarted = Date.now();
      const patched = await stack.as(other.key, 'patch', `/api/documents/${otherDocument}`).send({ tags: ['history'] });
      expect({ status: patched.status, code: patched.body.error?.code, retryAfter: patched.headers['retry-after'], prompt: Date.now() - patchStarted < 5_000 }).toEqual({
        status: 503,
        code: 'dependency_unavailable',
        retryAfter: '5',
        prompt: true,
      });
      const unchanged = await stack.as(other.key, 'get', `/api/documents/${otherDocument}`);
      expect(unchanged.body.tags).toEqual([]);
      expect((await searchPromptly(other.key, beacon)).results[0].tags).toEqual([]);
      // Each search answers from this process's tier; after a few timeouts the breaker stops asking Redis.
      for (let i = 0; i < 4; i++) {
        const reply = await searchPromptly(tenant.key, beacon);
        expect({ cached: reply.cached, ids: ids(reply) }).toEqual({ cached: true, ids: [document] });
      }
      // A search nobody made before is computed from the database.
      expect(await searchPromptly(tenant.key, { ...beacon, query: 'headland' })).toMatchObject({ cached: false, total_results: 1 });
      // The stats route (operator, GET) is not turned away while Redis is down.
      const hung = await cacheStats(stack);
      expect(hung.breaker.state).toBe('open');
      expect(hung.breaker.opened).toBeGreaterThan(healthy.breaker.opened);
      expect(hung.l1.hits - healthy.l1.hits).toBeGreaterThanOrEqual(4);

      await redis.kill();
    } finally {
      redis.resume();
    }
    // Dead, and known to be: searches still pass the dependency gate and answer.
    await waitFor(() => !stack.platform.health.isUp('redis'), { timeoutMs: 20_000, what: 'Redis to be noticed down' });
    for (let i = 0; i < 3; i++) {
      expect(await searchPromptly(tenant.key, beacon)).toMatchObject({ cached: true, total_results: 1 });
    }
    expect((await cacheStats(stack)).breaker.state).toBe('open');

    // Back on the same port, empty (it kept nothing). The breaker closes by itself on a later search.
    await redis.launch();
    await waitFor(
      async () => {
        await search(stack, tenant.key, beacon);
        return (await cacheStats(stack)).breaker.state === 'closed';
      },
      { timeoutMs: 30_000, intervalMs: 250, what: 'the breaker to close' },
    );
    // The restarted Redis lost the generation: the answer cached before anything was indexed must not come back.
    const recovered = await search(stack, tenant.key, beacon);
    expect(ids(recovered)).toEqual([document]);

    // Redis is used again: a new search is written to it, and read back from it by a second process's view.
    const before = await cacheStats(stack);
    const fresh = { ...beacon, query: 'raiders' };
    expect((await search(stack, tenant.key, fresh)).cached).toBe(false);
    await waitFor(async () => (await cacheStats(stack)).l2.sets > before.l2.sets, { what: 'the new answer to be written to Redis' });
    const direct = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    try {
      const [, keys] = await direct.scan('0', 'MATCH', `${stack.config.QUEUE_PREFIX}:cache:search:{${tenant.id}}:*`, 'COUNT', 10_000);
      expect(keys.length).toBeGreaterThanOrEqual(1);
    } finally {
      direct.disconnect();
    }
    expect((await search(stack, tenant.key, fresh)).cached).toBe(true);
  });
});

describe('CACHE_ENABLED=false', () => {
  let stack: TestStack;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', env: { CACHE_ENABLED: 'false' } });
  });

  afterAll(async () => {
    await stack?.close();
  });

  it('answers cached:false every time and counts no cache traffic', async () => {
    const tenant = await stack.createTenant();
    const [document] = await seed(stack, tenant.key, [{ title: 'Tide tables', content: 'Tide tables list high and low water for each day.' }]);
    const request = { query: 'tide tables', mode: 'keyword', limit: 10 };
    for (let i = 0; i < 3; i++) {
      const reply = await search(stack, tenant.key, request);
      expect({ cached: reply.cached, ids: ids(reply) }).toEqual({ cached: false, ids: [document] });
    }
    const stats = await cacheStats(stack);
    expect(stats).toMatchObject({ enabled: false, l1: { hits: 0, sets: 0 }, l2: { hits: 0, sets: 0 } });
    const events = await cacheEventMetrics(stack);
    expect(events['l1:hits'] ?? 0).toBe(0);
  });
});
