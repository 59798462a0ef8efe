import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { QUEUE_DEFINITIONS, QueueRegistry } from '../../queues';
import { TenantFairness } from '../../queues/fairness';
import { takeBudgets } from '../../src/budgets';
import { SearchEventRecorder } from '../../src/domain/analytics/recorder';
import { streamKey } from '../../src/domain/analytics/stream';
import { SearchCache } from '../../src/domain/cache/search-cache';
import { DailyQuota } from '../../src/domain/tenants/daily-quota';
import { SuspensionHold } from '../../src/domain/tenants/suspension';
import { EndpointSlots, slotTimings } from '../../src/domain/webhooks/fairness';
import { rateLimitKeys } from '../../src/http/rate-limit';
import { slotName } from '../../src/redis';
import { REDIS_URL, uniqueName } from '../helpers/databases';
import { deleteRedisPrefix } from '../helpers/redis';
import { waitFor } from '../helpers/wait';

// On a Redis Cluster a script or MULTI may only touch keys of one slot. So
// every key of a queue carries the queue's hash tag, every key of a tenant
// the tenant's, every key of a webhook endpoint the endpoint's; a key shared
// by all of them is only ever used alone. These tests write through the real
// code on the real (single) Redis and read back what it wrote, and look at
// every key the source builds, so that a key added later without its tag
// fails here rather than with CROSSSLOT on someone's cluster.

const REPO = path.join(__dirname, '..', '..');
const prefix = uniqueName('rwkeys');
const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });

afterAll(async () => {
  await deleteRedisPrefix(prefix);
  redis.disconnect();
});

describe('queue keys', () => {
  const registry = new QueueRegistry(redis, prefix);
  afterAll(() => registry.close());

  it.each(QUEUE_DEFINITIONS.map((definition) => definition.name))('every key of the %s queue, its fairness keys too, carries the queue name as its one tag', (name) => {
    const queue = registry.queue(name);
    const keys = Object.values(queue.keys).filter(Boolean);
    expect(keys.length).toBeGreaterThan(5);
    const fairness = new TenantFairness(redis, prefix, name);
    for (const key of [...keys, fairness.tenantsKey, fairness.lanesKey]) {
      expect(key.startsWith(`${prefix}:`)).toBe(true);
      expect(slotName(key)).toBe(name);
    }
  });

  it('gives each queue a tag of its own, so the queues spread over a cluster', () => {
    const tags = QUEUE_DEFINITIONS.map((definition) => slotName(registry.queue(definition.name).keys.wait));
    expect(new Set(tags).size).toBe(QUEUE_DEFINITIONS.length);
  });
});

describe('tenant and endpoint keys', () => {
  it('every key written for a tenant carries its tag, every key of an endpoint the endpoint’s; only the shared stream and set do not', async () => {
    const tenant = '0f8e2c64-5b0a-4d0e-9a57-2f1f7c1f0a11';
    const endpoint = '5d0c9f1e-1c3b-4f4e-8b8e-6a0b2a7d9c33';
    const cache = new SearchCache(redis, prefix, { enabled: true, l1MaxItems: 10, ttlSeconds: 60, redisTimeoutMs: 1_000 });
    await cache.getOrCompute(tenant, 'search', { query: 'q' }, async () => ({ hits: [] }));
    await cache.getOrComputeStable(tenant, 'embedding:m', ['q'], async () => [0.1]);
    await cache.invalidate(tenant);
    const rateLimits = rateLimitKeys(prefix, tenant, 'key-1');
    const quota = new DailyQuota(redis, prefix, 'searches_per_day').budget(tenant, null);
    const limits = [rateLimits.tenant, rateLimits.key].map((key) => ({ key, limit: 10, windowMs: 60_000 }));
    await takeBudgets(redis, [...limits, quota], [cache.generationRead(tenant)]);
    const dropped: number[] = [];
    new SearchEventRecorder(redis, prefix, (events) => dropped.push(events)).record({
      tenantId: tenant, queryId: tenant, query: 'q', mode: 'keyword', filters: {}, resultCount: 0, tookMs: 1, cached: false, userId: null, at: new Date().toISOString(),
    });
    await new SuspensionHold(redis, prefix).note(tenant, 'indexing', 'doc-1');
    // One slot at the endpoint: the second delivery is parked, which names the endpoint in the sweeper's set.
    const slots = new EndpointSlots(redis, prefix, 1, slotTimings(1_000));
    await slots.admit([1, 2].map((n) => ({ endpointId: endpoint, jobId: `d${n}`, deliveryId: `delivery-${n}` })));

    const written = await waitFor(async () => {
      const keys = await allKeys();
      return keys.includes(streamKey(prefix)) ? keys : null;
    }, { what: 'the search to be recorded' });
    expect(dropped).toEqual([]);
    const shared = [streamKey(prefix), `${prefix}:webhook-parked-endpoints`];
    const own = written.filter((key) => !shared.includes(key));
    expect(written).toEqual(expect.arrayContaining(shared));
    // What each feature wrote, by the part of the key that names it.
    for (const part of ['cache:generation:', 'cache:search:', 'cache:embedding:m:', 'rate-limit:tenant:', 'rate-limit:key:', 'quota:searches:', 'suspended-jobs:', 'webhook-slots:', 'webhook-parked:']) {
      expect(own.some((key) => key.startsWith(`${prefix}:${part}{`))).toBe(true);
    }
    for (const key of own) expect([tenant, endpoint]).toContain(slotName(key));
    expect(own.filter((key) => key.includes('webhook-')).every((key) => slotName(key) === endpoint)).toBe(true);
  });

  async function allKeys(): Promise<string[]> {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      keys.push(...found);
    } while (cursor !== '0');
    return keys.sort();
  }
});

describe('keys the source builds', () => {
  /**
   * Keys that carry no tag, each with why: it is used alone (one key per
   * command or script), or it is a pattern, a channel, or a queue's prefix
   * that is tagged already.
   */
  const UNTAGGED: Array<{ file: string; key: RegExp; why: string }> = [
    { file: 'src/domain/analytics/stream.ts', key: /^analytics:searches$/, why: 'the one analytics stream, shared by every tenant; scripts touch it alone' },
    { file: 'src/domain/webhooks/fairness.ts', key: /^webhook-parked-endpoints$/, why: 'the sweeper’s set of endpoints, shared; updated apart from the per-endpoint scripts' },
    { file: 'src/domain/cache/search-cache.ts', key: /^cache:generation:\*$/, why: 'a SCAN pattern, run on every master' },
    { file: 'src/platform.ts', key: /^api-key-changes$/, why: 'a pub/sub channel, not a key' },
    { file: 'src/http/admin/sign-in-throttle.ts', key: /^sign-in-failures:/, why: 'one budget per device or address, taken alone' },
    { file: 'queues/fairness.ts', key: /^(fairness:|\$\{this\.queueName\})/, why: 'under the queue’s prefix, which carries the queue’s tag' },
  ];
  const KEY = /`\$\{(?:this\.prefix|prefix|QUEUE_PREFIX|(?:platform\.)?config\.QUEUE_PREFIX)\}:([^`]*)`/g;

  function sources(folder: string): string[] {
    return readdirSync(path.join(REPO, folder), { withFileTypes: true, recursive: true })
      .filter((entry) => entry.isFile() && entry.name.endsWith('.ts'))
      .map((entry) => path.relative(REPO, path.join(entry.parentPath, entry.name)));
  }

  it('every key built from QUEUE_PREFIX carries a hash tag, or is one of the few known to be used alone', () => {
    const built = ['src', 'queues', 'workers'].flatMap(sources).flatMap((file) =>
      [...readFileSync(path.join(REPO, file), 'utf8').matchAll(KEY)].map((match) => ({ file, key: match[1] })),
    );
    // The search finds what it should: the tagged builders are among them.
    expect(built.length).toBeGreaterThan(10);
    const untagged = built.filter(({ file, key }) => !key.includes('${hashTag(') && !UNTAGGED.some((known) => known.file === file && known.key.test(key)));
    expect(untagged).toEqual([]);
  });
});
