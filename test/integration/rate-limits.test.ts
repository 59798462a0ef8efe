import net from 'node:net';
import request from 'supertest';
import { REDIS_URL, uniqueName } from '../helpers/databases';
import { startStack, type TestStack } from '../helpers/harness';
import { killLeftoverProcesses, startRagworks, type RagworksProcess } from '../helpers/processes';
import { startTcpProxy, targetOf, throughProxy, type TcpProxy } from '../helpers/tcp-proxy';
import { waitFor } from '../helpers/wait';

// Web children take a few seconds to start, several times that on busy shared cores.
jest.setTimeout(120_000);

const WINDOW_SECONDS = 60;
/** Small limits, so a test reaches them in a few requests; the window outlasts every test. */
const LIMITS = {
  RATE_LIMIT_WINDOW_SECONDS: String(WINDOW_SECONDS),
  RATE_LIMIT_TENANT: 'free=8,standard=80,enterprise=800,unlimited=0',
  RATE_LIMIT_KEY: 'free=5,standard=50,enterprise=500,unlimited=0',
};

type Headers = Record<string, string | string[] | undefined>;

/** On the free tier, whose small limits these tests reach (the harness makes unlimited tenants unless told). */
const freeTenant = (stack: TestStack) => stack.createTenant(undefined, 'free');

/** A structured-field list of `"name";param=int;…` members, as the draft's fields are written. */
function parseList(value: string | string[] | undefined): Record<string, Record<string, number>> {
  expect(typeof value).toBe('string');
  const members: Record<string, Record<string, number>> = {};
  for (const member of String(value).split(',')) {
    const [name, ...params] = member.trim().split(';');
    expect(name).toMatch(/^"[a-z]+"$/);
    members[name.slice(1, -1)] = Object.fromEntries(
      params.map((param) => {
        const [key, number] = param.split('=');
        expect(number).toMatch(/^\d+$/);
        return [key, Number(number)];
      }),
    );
  }
  return members;
}

/** Available quota per policy, from the `RateLimit` field. */
function remaining(headers: Headers): Record<string, number> {
  return Object.fromEntries(Object.entries(parseList(headers['ratelimit'])).map(([name, params]) => [name, params.r]));
}

function expectNoRateLimitHeaders(headers: Headers): void {
  expect(headers['ratelimit-policy']).toBeUndefined();
  expect(headers['ratelimit']).toBeUndefined();
}

/** `ragworks_rate_limit_decisions_total` by outcome, as /metrics shows it (read from the registry: /metrics also asks Redis for queue gauges). */
async function decisions(stack: TestStack): Promise<Record<string, number>> {
  const text = await stack.platform.metrics.registry.getSingleMetricAsString('ragworks_rate_limit_decisions_total');
  const counts: Record<string, number> = { allowed: 0, limited: 0, unavailable: 0 };
  for (const match of text.matchAll(/^ragworks_rate_limit_decisions_total\{outcome="(\w+)"\} (\d+)$/gm)) counts[match[1]] = Number(match[2]);
  return counts;
}

describe('rate limits (postgres, one API process)', () => {
  let stack: TestStack;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', workers: false, env: LIMITS });
  });
  afterAll(async () => {
    await stack?.close();
  });

  async function secondKey(tenantId: string): Promise<string> {
    return (await stack.operator('post', '/api/admin/api-keys', tenantId).send({ name: 'second', scopes: ['admin'] }).expect(201)).body.key;
  }
  const list = (key: string) => stack.as(key, 'get', '/api/documents');

  it('sends RateLimit-Policy and RateLimit on every limited route, counting down', async () => {
    const tenant = await freeTenant(stack);
    const seen: Array<Record<string, number>> = [];
    for (const url of ['/api/documents', '/api/stats', '/api/documents']) {
      const response = await stack.as(tenant.key, 'get', url);
      expect(response.status).toBe(200);
      expect(parseList(response.headers['ratelimit-policy'])).toEqual({
        tenant: { q: 8, w: WINDOW_SECONDS },
        key: { q: 5, w: WINDOW_SECONDS },
      });
      const limits = parseList(response.headers['ratelimit']);
      for (const { t } of Object.values(limits)) {
        expect(t).toBeGreaterThanOrEqual(1);
        expect(t).toBeLessThanOrEqual(WINDOW_SECONDS);
      }
      seen.push(remaining(response.headers));
    }
    expect(seen).toEqual([
      { tenant: 7, key: 4 },
      { tenant: 6, key: 3 },
      { tenant: 5, key: 2 },
    ]);
    // An error answer from a limited route carries them too.
    const missing = await stack.as(tenant.key, 'get', '/api/documents/00000000-0000-0000-0000-000000000000');
    expect(missing.status).toBe(404);
    expect(remaining(missing.headers)).toEqual({ tenant: 4, key: 1 });
  });

  it('refuses the request past the key limit with 429 rate_limited, Retry-After and the fields, before reading the input', async () => {
    const tenant = await freeTenant(stack);
    const before = await decisions(stack);
    for (let i = 0; i < 5; i++) await list(tenant.key).expect(200);

    const title = uniqueName('refused');
    const refused = await stack.as(tenant.key, 'post', '/api/documents').send({ title, content: `# ${title}\n\nNever stored.` });
    expect(refused.status).toBe(429);
    expect(refused.headers['content-type']).toMatch(/^application\/json/);
    expect(refused.body.error).toMatchObject({
      code: 'rate_limited',
      details: { policy: 'key', limit: 5, window_seconds: WINDOW_SECONDS },
    });
    expect(typeof refused.body.error.message).toBe('string');
    expect(refused.headers['retry-after']).toMatch(/^\d+$/);
    const retryAfter = Number(refused.headers['retry-after']);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(WINDOW_SECONDS);
    expect(parseList(refused.headers['ratelimit-policy'])).toEqual({ tenant: { q: 8, w: WINDOW_SECONDS }, key: { q: 5, w: WINDOW_SECONDS } });
    // The refused request took nothing from the tenant: 8 - 5.
    expect(remaining(refused.headers)).toEqual({ tenant: 3, key: 0 });
    // Retry-After does not point before the end of the exhausted policy's effective window.
    expect(retryAfter).toBeGreaterThanOrEqual(parseList(refused.headers['ratelimit']).key.t);

    // Refused before validation: a malformed body gets the same answer, not a 400.
    const malformed = await stack.as(tenant.key, 'post', '/api/documents').send({ nonsense: true });
    expect(malformed.status).toBe(429);
    expect(malformed.body.error.code).toBe('rate_limited');

    // The refused document was never stored.
    const stored = await stack.operator('get', '/api/documents?limit=100', tenant.id).expect(200);
    expect(stored.body.items.map((item: { title: string }) => item.title)).not.toContain(title);

    const after = await decisions(stack);
    expect(after.allowed - before.allowed).toBe(5);
    expect(after.limited - before.limited).toBe(2);
    expect((await request(stack.app).get('/metrics').expect(200)).text).toContain(`ragworks_rate_limit_decisions_total{outcome="limited"} ${after.limited}`);
  });

  it("gives each key its own budget and the tenant's keys one shared budget", async () => {
    const tenant = await freeTenant(stack);
    const other = await secondKey(tenant.id);

    for (let i = 0; i < 5; i++) await list(tenant.key).expect(200);
    await list(tenant.key).expect(429);
    // The second key has its own five, but the tenant has only what the first key was admitted for: 8 - 5.
    expect(remaining((await list(other).expect(200)).headers)).toEqual({ tenant: 2, key: 4 });
    expect(remaining((await list(other).expect(200)).headers)).toEqual({ tenant: 1, key: 3 });
    expect(remaining((await list(other).expect(200)).headers)).toEqual({ tenant: 0, key: 2 });
    const refused = await list(other);
    expect(refused.status).toBe(429);
    expect(refused.body.error.details).toEqual({ policy: 'tenant', limit: 8, window_seconds: WINDOW_SECONDS });
    expect(remaining(refused.headers)).toEqual({ tenant: 0, key: 2 });

    // Another tenant is untouched.
    const neighbour = await freeTenant(stack);
    expect(remaining((await list(neighbour.key).expect(200)).headers)).toEqual({ tenant: 7, key: 4 });
  });

  it("applies the tenant's tier: a tier change holds from the next request, with what was used carried over", async () => {
    const tenant = await freeTenant(stack);
    for (let i = 0; i < 5; i++) await list(tenant.key).expect(200);
    await list(tenant.key).expect(429);

    await stack.operator('patch', `/api/admin/tenants/${tenant.id}`).send({ tier: 'standard' }).expect(200);
    const upgraded = await list(tenant.key).expect(200);
    expect(parseList(upgraded.headers['ratelimit-policy'])).toEqual({ tenant: { q: 80, w: WINDOW_SECONDS }, key: { q: 50, w: WINDOW_SECONDS } });
    // Five admitted, one refused (which took nothing), and this one.
    expect(remaining(upgraded.headers)).toEqual({ tenant: 80 - 6, key: 50 - 6 });

    // The unlimited tier has no limits (0), so no policy to announce.
    await stack.operator('patch', `/api/admin/tenants/${tenant.id}`).send({ tier: 'unlimited' }).expect(200);
    for (let i = 0; i < 3; i++) expectNoRateLimitHeaders((await list(tenant.key).expect(200)).headers);

    await stack.operator('patch', `/api/admin/tenants/${tenant.id}`).send({ tier: 'free' }).expect(200);
    const downgraded = await list(tenant.key);
    expect(downgraded.status).toBe(429);
    expect(downgraded.body.error.details).toMatchObject({ limit: 5 });
  });

  it("lets a runaway key spend nothing of its tenant's budget: a never-used sibling key still gets what the tenant has left", async () => {
    const tenant = await freeTenant(stack);
    const sibling = await secondKey(tenant.id);
    for (let i = 0; i < 5; i++) await list(tenant.key).expect(200);
    for (let i = 0; i < 10; i++) {
      const refused = await list(tenant.key);
      expect(refused.status).toBe(429);
      expect(refused.body.error.details.policy).toBe('key');
    }
    // The tenant's budget less the five requests the runaway key was admitted for, and this one.
    expect(remaining((await list(sibling).expect(200)).headers)).toEqual({ tenant: 8 - 5 - 1, key: 4 });
  });

  it("spends none of a key's budget on a request its tenant's limit refuses", async () => {
    const tenant = await freeTenant(stack);
    const sibling = await secondKey(tenant.id);
    for (let i = 0; i < 5; i++) await list(tenant.key).expect(200);
    for (let i = 0; i < 3; i++) await list(sibling).expect(200);
    for (let i = 0; i < 4; i++) {
      const refused = await list(sibling);
      expect(refused.status).toBe(429);
      expect(refused.body.error.details.policy).toBe('tenant');
      expect(remaining(refused.headers)).toEqual({ tenant: 0, key: 2 });
    }
    // Larger budgets on the same counters show what was really spent: three of the sibling's, eight of the tenant's (and this one).
    await stack.operator('patch', `/api/admin/tenants/${tenant.id}`).send({ tier: 'standard' }).expect(200);
    expect(remaining((await list(sibling).expect(200)).headers)).toEqual({ tenant: 80 - 9, key: 50 - 4 });
  });

  it('gives the rate-limit unit back when a quota then refuses the request (403 capacity, 429 daily searches)', async () => {
    const tenant = await freeTenant(stack);
    await stack.operator('patch', `/api/admin/tenants/${tenant.id}`).send({ quotas: { documents: 0, searches_per_day: 1 } }).expect(200);
    await list(tenant.key).expect(200);

    const full = await stack.as(tenant.key, 'post', '/api/documents').send({ title: 'No room', content: 'Never stored.' });
    expect(full.status).toBe(403);
    expect(full.body.error).toMatchObject({ code: 'quota_exceeded', details: { quota: 'documents' } });
    expect(remaining(full.headers)).toEqual({ tenant: 7, key: 4 });

    const search = () => stack.as(tenant.key, 'post', '/api/search').send({ query: 'harbour', mode: 'keyword' });
    expect(remaining((await search().expect(200)).headers)).toEqual({ tenant: 6, key: 3 });
    const overQuota = await search();
    expect(overQuota.status).toBe(429);
    expect(overQuota.body.error).toMatchObject({ code: 'quota_exceeded', details: { quota: 'searches_per_day' } });
    expect(remaining(overQuota.headers)).toEqual({ tenant: 6, key: 3 });

    // Neither refusal spent anything: two admitted requests so far, this is the third.
    expect(remaining((await list(tenant.key).expect(200)).headers)).toEqual({ tenant: 5, key: 2 });
  });

  it('spends none of the daily search quota on a search the rate limit refuses', async () => {
    const tenant = await freeTenant(stack);
    const search = () => stack.as(tenant.key, 'post', '/api/search').send({ query: 'harbour', mode: 'keyword' });
    await search().expect(200);
    for (let i = 0; i < 4; i++) await list(tenant.key).expect(200);
    for (let i = 0; i < 3; i++) {
      const refused = await search();
      expect(refused.status).toBe(429);
      expect(refused.body.error.code).toBe('rate_limited');
    }
    const usage = await stack.operator('get', '/api/admin/usage', tenant.id).expect(200);
    expect(usage.body.quotas.searches_per_day.used).toBe(1);
  });

  it('does not limit the operator token, nor count its requests against the tenant', async () => {
    const tenant = await freeTenant(stack);
    for (let i = 0; i < 12; i++) {
      const response = await stack.operator('get', '/api/documents', tenant.id).expect(200);
      expectNoRateLimitHeaders(response.headers);
    }
    expect(remaining((await list(tenant.key).expect(200)).headers)).toEqual({ tenant: 7, key: 4 });
  });
});

describe('rate limits switched off (RATE_LIMIT_ENABLED=false)', () => {
  let stack: TestStack;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', workers: false, env: { ...LIMITS, RATE_LIMIT_ENABLED: 'false' } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('lets every request through without the fields', async () => {
    const tenant = await freeTenant(stack);
    for (let i = 0; i < 12; i++) {
      const response = await stack.as(tenant.key, 'get', '/api/documents').expect(200);
      expectNoRateLimitHeaders(response.headers);
    }
    expect(await decisions(stack)).toEqual({ allowed: 0, limited: 0, unavailable: 0 });
  });
});

describe('rate limits while Redis is away', () => {
  let stack: TestStack;
  let redisProxy: TcpProxy;

  beforeAll(async () => {
    redisProxy = await startTcpProxy(targetOf(REDIS_URL, 6379));
    stack = await startStack({ database: 'postgres', workers: false, env: { ...LIMITS, REDIS_URL: throughProxy(REDIS_URL, redisProxy) } });
  });
  afterAll(async () => {
    redisProxy?.restore();
    await stack?.close();
    await redisProxy?.close();
  });

  it('lets reads and searches through unlimited (fail open), counts them as unavailable, and limits again once Redis is back', async () => {
    const tenant = await freeTenant(stack);
    for (let i = 0; i < 5; i++) await stack.as(tenant.key, 'get', '/api/documents').expect(200);
    await stack.as(tenant.key, 'get', '/api/documents').expect(429);

    redisProxy.cut();
    try {
      const before = await decisions(stack);
      for (let i = 0; i < 3; i++) {
        const read = await stack.as(tenant.key, 'get', '/api/documents').expect(200);
        // The policy is known without Redis; what is left of it is not.
        expect(parseList(read.headers['ratelimit-policy'])).toEqual({ tenant: { q: 8, w: WINDOW_SECONDS }, key: { q: 5, w: WINDOW_SECONDS } });
        expect(read.headers['ratelimit']).toBeUndefined();
      }
      await stack.as(tenant.key, 'post', '/api/search').send({ query: 'harbour', mode: 'keyword' }).expect(200);
      const after = await decisions(stack);
      expect(after.unavailable - before.unavailable).toBe(4);
      expect(after.limited).toBe(before.limited);
    } finally {
      redisProxy.restore();
    }

    // Back: the counters kept in Redis hold again.
    const again = await waitFor(
      async () => {
        const response = await stack.as(tenant.key, 'get', '/api/documents');
        return response.status === 429 ? response : null;
      },
      { timeoutMs: 20_000, intervalMs: 200, what: 'the limit to hold again once Redis is back' },
    );
    expect(again.body.error.code).toBe('rate_limited');
  });
});

/**
 * A proxy to Redis that can hang: its connections stay open but nothing
 * more reaches Redis, as with a host that stopped answering (a cut
 * connection fails at once; this one never answers).
 */
async function startHangingProxy(target: { host: string; port: number }) {
  const pairs = new Set<{ client: net.Socket; upstream: net.Socket }>();
  let hung = false;
  const server = net.createServer((client) => {
    const upstream = net.connect(target);
    const pair = { client, upstream };
    pairs.add(pair);
    client.on('error', () => undefined);
    upstream.on('error', () => undefined);
    upstream.pipe(client);
    if (!hung) client.pipe(upstream);
    const close = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', close);
    upstream.on('close', close);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `redis://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    hang() {
      hung = true;
      for (const { client, upstream } of pairs) {
        client.unpipe(upstream);
        client.pause();
      }
    },
    resume() {
      hung = false;
      for (const { client, upstream } of pairs) client.pipe(upstream);
    },
    async close() {
      for (const { client } of pairs) client.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('rate limits while Redis hangs', () => {
  let stack: TestStack;
  let proxy: Awaited<ReturnType<typeof startHangingProxy>>;

  beforeAll(async () => {
    proxy = await startHangingProxy(targetOf(REDIS_URL, 6379));
    stack = await startStack({ database: 'postgres', workers: false, env: { ...LIMITS, REDIS_URL: proxy.url } });
  });
  afterAll(async () => {
    proxy?.resume();
    await stack?.close();
    await proxy?.close();
  });

  it('does not hold requests waiting for counters that never come', async () => {
    const tenant = await freeTenant(stack);
    await stack.as(tenant.key, 'get', '/api/documents').expect(200);
    const before = await decisions(stack);
    proxy.hang();
    try {
      for (let i = 0; i < 3; i++) {
        const started = Date.now();
        const read = await stack.as(tenant.key, 'get', '/api/documents');
        // Not a benchmark: far above a healthy answer, far below a hang.
        expect({ status: read.status, prompt: Date.now() - started < 2_000 }).toEqual({ status: 200, prompt: true });
        expect(read.headers['ratelimit']).toBeUndefined();
      }
      expect((await decisions(stack)).unavailable - before.unavailable).toBe(3);
    } finally {
      proxy.resume();
    }
  });
});

describe('one limit shared by two API processes', () => {
  let stack: TestStack;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', workers: false, env: LIMITS });
  });
  afterAll(async () => {
    await killLeftoverProcesses();
    await stack?.close();
  });

  const listeningUrl = async (child: RagworksProcess): Promise<string> => {
    const line = await child.waitForMessage('api listening', { timeoutMs: 90_000 });
    return String(line.url).replace('localhost', '127.0.0.1');
  };

  it("refuses the request past the tenant's limit, counted across both processes", async () => {
    const env = { ...stack.env, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info' };
    const children = [startRagworks('web', env), startRagworks('web', env)];
    const urls = await Promise.all(children.map(listeningUrl));
    expect(new Set(urls).size).toBe(2);

    const tenant = await freeTenant(stack);
    const secondKey = (await stack.operator('post', '/api/admin/api-keys', tenant.id).send({ name: 'second', scopes: ['admin'] }).expect(201)).body.key;
    // Each process serves one key: no process alone sees more than 4 requests, under every limit (8 per tenant, 5 per key).
    const keys = [tenant.key, secondKey];
    const get = (i: number) => fetch(`${urls[i % 2]}/api/documents`, { headers: { Authorization: `Bearer ${keys[i % 2]}` } });

    const tenantLeft: number[] = [];
    for (let i = 0; i < 8; i++) {
      const response = await get(i);
      expect(response.status).toBe(200);
      tenantLeft.push(parseList(response.headers.get('ratelimit') ?? undefined).tenant.r);
    }
    expect(tenantLeft).toEqual([7, 6, 5, 4, 3, 2, 1, 0]);

    const refused = await get(8);
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    const body = (await refused.json()) as { error: { code: string; details: unknown } };
    expect(body.error).toMatchObject({ code: 'rate_limited', details: { policy: 'tenant', limit: 8, window_seconds: WINDOW_SECONDS } });
    // The other process refuses too: the budget is one.
    expect((await get(9)).status).toBe(429);

    for (const child of children) expect(await child.stop('SIGTERM')).toEqual({ code: 0, signal: null });
  });
});
