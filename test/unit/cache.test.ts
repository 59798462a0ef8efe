import { Redis } from 'ioredis';
import { CircuitBreaker } from '../../src/domain/cache/breaker';
import { SearchCache, type CacheSettings, type Tier } from '../../src/domain/cache/search-cache';
import { REDIS_URL, uniqueName } from '../helpers/databases';
import { deleteRedisPrefix } from '../helpers/redis';
import { waitFor } from '../helpers/wait';

// The circuit breaker on its own, and the two-tier search cache against the
// real shared Redis under a prefix of its own. Two SearchCache instances on
// two connections stand for two processes sharing one Redis.

/** A call the breaker may run; counts how often it actually ran. */
function countingCall<T>(outcome: () => Promise<T>) {
  const call = Object.assign(
    async () => {
      call.calls += 1;
      return outcome();
    },
    { calls: 0 },
  );
  return call;
}

const failing = () => Promise.reject(new Error('boom'));
/** Never settles: a dependency that stopped answering. */
const hanging = () => new Promise<never>(() => undefined);

describe('CircuitBreaker', () => {
  const OPEN_MS = 300;
  const TIMEOUT_MS = 100;
  const breaker = () => new CircuitBreaker(3, OPEN_MS, TIMEOUT_MS);

  it('passes results through while closed and counts only consecutive failures', async () => {
    const subject = breaker();
    expect(subject.state).toBe('closed');
    expect(await subject.run(async () => 'ok')).toBe('ok');
    await subject.run(failing);
    await subject.run(failing);
    // A success in between resets the run of failures.
    expect(await subject.run(async () => 42)).toBe(42);
    await subject.run(failing);
    await subject.run(failing);
    expect(subject.state).toBe('closed');
    expect(subject.opened).toBe(0);
  });

  it('answers undefined instead of throwing when the call fails', async () => {
    await expect(breaker().run(failing)).resolves.toBeUndefined();
  });

  it('opens after 3 failures in a row and then skips calls without running them', async () => {
    const subject = breaker();
    for (let i = 0; i < 3; i++) await subject.run(failing);
    expect(subject.state).toBe('open');
    expect(subject.opened).toBe(1);
    const call = countingCall(async () => 'ok');
    expect(await subject.run(call)).toBeUndefined();
    expect(await subject.run(call)).toBeUndefined();
    expect(call.calls).toBe(0);
  });

  it('half-opens after openMs, lets exactly one trial through, and closes when it succeeds', async () => {
    const subject = breaker();
    for (let i = 0; i < 3; i++) await subject.run(failing);
    await waitFor(() => subject.state === 'half-open', { timeoutMs: 5_000, what: 'the breaker to half-open' });

    let release!: (value: string) => void;
    const trial = countingCall(() => new Promise<string>((resolve) => (release = resolve)));
    const other = countingCall(async () => 'other');
    const trialResult = subject.run(trial);
    // While the trial is out, everything else is skipped.
    expect(await subject.run(other)).toBeUndefined();
    expect(other.calls).toBe(0);
    release('recovered');
    expect(await trialResult).toBe('recovered');
    expect(trial.calls).toBe(1);

    expect(subject.state).toBe('closed');
    expect(await subject.run(other)).toBe('other');
    expect(other.calls).toBe(1);
    expect(subject.opened).toBe(1);
  });

  it('opens again for another openMs when the trial fails', async () => {
    const subject = breaker();
    for (let i = 0; i < 3; i++) await subject.run(failing);
    await waitFor(() => subject.state === 'half-open', { timeoutMs: 5_000, what: 'the breaker to half-open' });
    await subject.run(failing);
    expect(subject.state).toBe('open');
    expect(subject.opened).toBe(2);
    const call = countingCall(async () => 'ok');
    expect(await subject.run(call)).toBeUndefined();
    expect(call.calls).toBe(0);
    await waitFor(() => subject.state === 'half-open', { timeoutMs: 5_000, what: 'the breaker to half-open again' });
    expect(await subject.run(call)).toBe('ok');
    expect(subject.state).toBe('closed');
  });

  it('counts a call that does not answer within the timeout as a failure', async () => {
    const subject = breaker();
    const slow = countingCall(hanging);
    // Each of these settles (as undefined) once the timeout passes, not never.
    expect(await subject.run(slow)).toBeUndefined();
    expect(subject.state).toBe('closed');
    await subject.run(slow);
    await subject.run(slow);
    expect(slow.calls).toBe(3);
    expect(subject.state).toBe('open');
    // Open: a hanging dependency is not even asked.
    await subject.run(slow);
    expect(slow.calls).toBe(3);
  });

  it('does not count a stalled event loop against the dependency: an answer that arrived in time is taken', async () => {
    const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
    try {
      await redis.ping();
      const subject = new CircuitBreaker(3, OPEN_MS, 20);
      // Started from the check phase, so that the loop's next turn begins with timers, before I/O.
      const answer = await new Promise<string | undefined>((resolve) => {
        setImmediate(() => {
          const result = subject.run(() => redis.ping());
          // The process is busy (say, an embedded database working in this thread) well past the
          // timeout; Redis has answered meanwhile and the reply waits in the socket.
          const until = Date.now() + 150;
          while (Date.now() < until);
          resolve(result);
        });
      });
      expect(answer).toBe('PONG');
    } finally {
      redis.disconnect();
    }
  });

  it('treats a trial that times out as failed', async () => {
    const subject = breaker();
    for (let i = 0; i < 3; i++) await subject.run(failing);
    await waitFor(() => subject.state === 'half-open', { timeoutMs: 5_000, what: 'the breaker to half-open' });
    expect(await subject.run(hanging)).toBeUndefined();
    expect(subject.state).toBe('open');
  });
});

describe('SearchCache against Redis', () => {
  const prefix = uniqueName('rwcache');
  const connections: Redis[] = [];
  const settings: CacheSettings = { enabled: true, l1MaxItems: 100, ttlSeconds: 60, redisTimeoutMs: 2_000 };
  let testNumber = 0;

  /** One "process": its own Redis connection and its own in-process tier, on the shared prefix. */
  function processCache(overrides: Partial<CacheSettings> = {}, observer?: { onEvent(tier: Tier, event: string): void }) {
    const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
    connections.push(redis);
    return { cache: new SearchCache(redis, prefix, { ...settings, ...overrides }, observer), redis };
  }

  /** A compute function that returns a new numbered value each time it runs. */
  function computer(label: string) {
    const compute = Object.assign(async () => ({ label, run: ++compute.runs }), { runs: 0 });
    return compute;
  }

  /** Each test gets its own tenant ids, so tests in this file cannot see each other's entries. */
  let tenant: string;
  let otherTenant: string;
  beforeEach(() => {
    testNumber += 1;
    tenant = `tenant-${testNumber}`;
    otherTenant = `tenant-${testNumber}-other`;
  });

  afterAll(async () => {
    await deleteRedisPrefix(prefix);
    for (const redis of connections) redis.disconnect();
  });

  const request = { query: 'lighthouse', mode: 'keyword', limit: 10 };

  /** Waits until a process's fire-and-forget writes to Redis have landed. */
  const l2Sets = (cache: SearchCache, count: number) =>
    waitFor(() => cache.stats().l2.sets >= count, { timeoutMs: 5_000, what: `${count} L2 set(s)` });

  it('computes once, then answers from the in-process tier, and another process from Redis', async () => {
    const a = processCache().cache;
    const b = processCache().cache;
    const compute = computer('first');
    expect(await a.getOrCompute(tenant, 'search', request, compute)).toEqual({ value: { label: 'first', run: 1 }, cached: false });
    expect(await a.getOrCompute(tenant, 'search', request, compute)).toEqual({ value: { label: 'first', run: 1 }, cached: true });
    await l2Sets(a, 1);
    expect(await b.getOrCompute(tenant, 'search', request, compute)).toEqual({ value: { label: 'first', run: 1 }, cached: true });
    expect(compute.runs).toBe(1);
    expect(a.stats()).toMatchObject({ l1: { hits: 1, misses: 1, sets: 1 }, l2: { misses: 1, sets: 1 } });
    expect(b.stats()).toMatchObject({ l1: { hits: 0, misses: 1, sets: 1 }, l2: { hits: 1, misses: 0 } });
  });

  it('keeps tenants apart: the same request for another tenant is a miss', async () => {
    const { cache } = processCache();
    await cache.getOrCompute(tenant, 'search', request, computer('mine'));
    const theirs = await cache.getOrCompute(otherTenant, 'search', request, computer('theirs'));
    expect(theirs).toEqual({ value: { label: 'theirs', run: 1 }, cached: false });
  });

  it('a generation bump in one process makes every older entry unreachable in another', async () => {
    const a = processCache().cache;
    const b = processCache().cache;
    const compute = computer('v');
    await a.getOrCompute(tenant, 'search', request, compute);
    await l2Sets(a, 1);
    // B now holds the entry in both tiers.
    expect(await b.getOrCompute(tenant, 'search', request, compute)).toMatchObject({ value: { run: 1 }, cached: true });
    expect(await b.getOrCompute(tenant, 'search', request, compute)).toMatchObject({ value: { run: 1 }, cached: true });

    await a.invalidate(tenant);
    // B's in-process copy and the Redis copy are both behind the new generation.
    expect(await b.getOrCompute(tenant, 'search', request, compute)).toEqual({ value: { label: 'v', run: 2 }, cached: false });
    await l2Sets(b, 1);
    // A's own in-process copy is stale too; it gets B's fresh answer from Redis.
    expect(await a.getOrCompute(tenant, 'search', request, compute)).toEqual({ value: { label: 'v', run: 2 }, cached: true });
    expect(compute.runs).toBe(2);
  });

  it('invalidating one tenant leaves another tenant\'s entries alone', async () => {
    const { cache } = processCache();
    const mine = computer('mine');
    const theirs = computer('theirs');
    await cache.getOrCompute(tenant, 'search', request, mine);
    await cache.getOrCompute(otherTenant, 'search', request, theirs);
    await cache.invalidate(tenant);
    expect((await cache.getOrCompute(tenant, 'search', request, mine)).cached).toBe(false);
    expect((await cache.getOrCompute(otherTenant, 'search', request, theirs)).cached).toBe(true);
  });

  it('invalidateAll from one process reaches every tenant in every process, including tenants never invalidated before', async () => {
    const a = processCache().cache;
    const b = processCache().cache;
    const mine = computer('mine');
    const theirs = computer('theirs');
    // One tenant has been invalidated before (its generation key exists), the other never.
    await a.invalidate(tenant);
    await a.getOrCompute(tenant, 'search', request, mine);
    await a.getOrCompute(otherTenant, 'search', request, theirs);
    expect(await b.invalidateAll()).toBeGreaterThanOrEqual(2);
    expect(await a.getOrCompute(tenant, 'search', request, mine)).toMatchObject({ cached: false, value: { run: 2 } });
    expect(await a.getOrCompute(otherTenant, 'search', request, theirs)).toMatchObject({ cached: false, value: { run: 2 } });
  });

  it('never serves an entry from before the last invalidation when Redis loses the generation (restart without persistence)', async () => {
    const { cache, redis } = processCache();
    const compute = computer('v');
    await cache.getOrCompute(tenant, 'search', request, compute); // run 1, cached at the first generation
    await cache.invalidate(tenant); // the index changed
    expect(await cache.getOrCompute(tenant, 'search', request, compute)).toMatchObject({ cached: false, value: { run: 2 } });
    // Redis comes back empty: the generation key is gone.
    await redis.del(`${prefix}:cache:generation:{${tenant}}`);
    const after = await cache.getOrCompute(tenant, 'search', request, compute);
    // Run 1 predates the invalidation: it must never be served again.
    expect(after.value).not.toEqual({ label: 'v', run: 1 });
  });

  it('keeps namespaces and requests apart', async () => {
    const { cache } = processCache();
    await cache.getOrCompute(tenant, 'search', request, computer('search'));
    expect((await cache.getOrCompute(tenant, 'other', request, computer('other'))).cached).toBe(false);
    expect((await cache.getOrCompute(tenant, 'search', { ...request, limit: 11 }, computer('limit'))).cached).toBe(false);
    expect((await cache.getOrCompute(tenant, 'search', request, computer('again'))).value).toEqual({ label: 'search', run: 1 });
  });

  it('stable entries (query embeddings) survive a generation bump', async () => {
    const { cache } = processCache();
    const embed = computer('vector');
    await cache.getOrComputeStable(tenant, 'embedding:m', ['lighthouse'], embed);
    await cache.invalidate(tenant);
    expect(await cache.getOrComputeStable(tenant, 'embedding:m', ['lighthouse'], embed)).toEqual({ value: { label: 'vector', run: 1 }, cached: true });
  });

  it('computes concurrent identical misses once and shares the answer', async () => {
    const { cache } = processCache();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let runs = 0;
    const compute = async () => {
      runs += 1;
      await gate;
      return { answer: 'shared' };
    };
    const replies = Array.from({ length: 20 }, () => cache.getOrCompute(tenant, 'search', request, compute));
    await waitFor(() => cache.stats().single_flight_joins === 19, { timeoutMs: 5_000, what: '19 requests to join the first' });
    release();
    const settled = await Promise.all(replies);
    expect(runs).toBe(1);
    expect(settled.map((reply) => reply.value)).toEqual(Array.from({ length: 20 }, () => ({ answer: 'shared' })));
    expect(settled.filter((reply) => !reply.cached)).toHaveLength(1);
  });

  it('a failed computation is not cached and is shared by the requests that joined it', async () => {
    const { cache } = processCache();
    let runs = 0;
    const compute = async () => {
      runs += 1;
      await new Promise((resolve) => setTimeout(resolve, 50));
      throw new Error('database down');
    };
    const replies = await Promise.allSettled(Array.from({ length: 3 }, () => cache.getOrCompute(tenant, 'search', request, compute)));
    expect(replies.map((reply) => reply.status)).toEqual(['rejected', 'rejected', 'rejected']);
    expect(runs).toBe(1);
    expect(await cache.getOrCompute(tenant, 'search', request, async () => 'recovered')).toEqual({ value: 'recovered', cached: false });
  });

  it('evicts the least recently used entry at l1MaxItems and counts it; Redis still has it', async () => {
    const events: string[] = [];
    const { cache } = processCache({ l1MaxItems: 2 }, { onEvent: (tier, event) => events.push(`${tier}:${event}`) });
    const compute = computer('v');
    for (const query of ['one', 'two', 'three']) await cache.getOrCompute(tenant, 'search', { ...request, query }, compute);
    expect(cache.stats().l1).toMatchObject({ evictions: 1, size: 2, max: 2, sets: 3 });
    expect(events.filter((event) => event === 'l1:evictions')).toHaveLength(1);
    await l2Sets(cache, 3);
    // "one" was evicted from this process but is still in Redis.
    expect(await cache.getOrCompute(tenant, 'search', { ...request, query: 'one' }, compute)).toEqual({ value: { label: 'v', run: 1 }, cached: true });
    expect(cache.stats().l2.hits).toBe(1);
    expect(compute.runs).toBe(3);
  });

  it('lets entries expire after CACHE_TTL_SECONDS in both tiers', async () => {
    const { cache, redis } = processCache({ ttlSeconds: 1 });
    const compute = computer('v');
    await cache.getOrCompute(tenant, 'search', request, compute);
    await l2Sets(cache, 1);
    const pattern = `${prefix}:cache:search:{${tenant}}:*`;
    const [, stored] = await redis.scan('0', 'MATCH', pattern, 'COUNT', 10_000);
    expect(stored).toHaveLength(1);
    expect(await redis.ttl(stored[0])).toBeGreaterThan(0);
    expect(await redis.ttl(stored[0])).toBeLessThanOrEqual(1);
    // Redis drops the key after its TTL; the in-process copy was stored just before, so it has expired too.
    await waitFor(async () => (await redis.exists(stored[0])) === 0, { timeoutMs: 5_000, intervalMs: 100, what: 'the Redis entry to expire' });
    expect(await cache.getOrCompute(tenant, 'search', request, compute)).toEqual({ value: { label: 'v', run: 2 }, cached: false });
  });

  it('with the cache disabled computes every time and touches no Redis key', async () => {
    const { cache, redis } = processCache({ enabled: false });
    const compute = computer('v');
    expect(await cache.getOrCompute(tenant, 'search', request, compute)).toEqual({ value: { label: 'v', run: 1 }, cached: false });
    expect(await cache.getOrCompute(tenant, 'search', request, compute)).toEqual({ value: { label: 'v', run: 2 }, cached: false });
    expect(await cache.getOrComputeStable(tenant, 'embedding:m', ['x'], compute)).toMatchObject({ cached: false });
    const [, keys] = await redis.scan('0', 'MATCH', `${prefix}:cache:*:{${tenant}}:*`, 'COUNT', 10_000);
    expect(keys).toEqual([]);
    expect(cache.stats()).toMatchObject({ enabled: false, l1: { hits: 0, misses: 0, sets: 0 } });
  });

  it('reports hit ratios per tier and overall', async () => {
    const a = processCache().cache;
    const b = processCache().cache;
    const compute = computer('v');
    expect(a.stats()).toMatchObject({ overall_hit_ratio: null, l1: { hit_ratio: null }, l2: { hit_ratio: null } });
    await a.getOrCompute(tenant, 'search', request, compute); // l1 miss, l2 miss
    await a.getOrCompute(tenant, 'search', request, compute); // l1 hit
    await a.getOrCompute(tenant, 'search', request, compute); // l1 hit
    await a.getOrCompute(tenant, 'search', { ...request, limit: 3 }, compute); // l1 miss, l2 miss
    expect(a.stats()).toMatchObject({ l1: { hits: 2, misses: 2, hit_ratio: 0.5 }, l2: { hits: 0, misses: 2, hit_ratio: 0 }, overall_hit_ratio: 0.5 });
    await l2Sets(a, 2);
    await b.getOrCompute(tenant, 'search', request, compute); // l1 miss, l2 hit
    expect(b.stats()).toMatchObject({ l1: { hit_ratio: 0 }, l2: { hit_ratio: 1 }, overall_hit_ratio: 1 });
  });
});
