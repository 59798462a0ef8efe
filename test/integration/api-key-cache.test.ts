import { AsyncLocalStorage } from 'node:async_hooks';
import request from 'supertest';
import { ApiKeyCache } from '../../src/domain/apikeys/key-cache';
import type { ChangeListener, CredentialChannel } from '../../src/domain/apikeys/credential-changes';
import { REDIS_URL } from '../helpers/databases';
import { startStack, type TestStack } from '../helpers/harness';
import { killLeftoverProcesses, startRagworks, type LogLine, type RagworksProcess } from '../helpers/processes';
import { startTcpProxy, targetOf, throughProxy, type TcpProxy } from '../helpers/tcp-proxy';
import { waitFor } from '../helpers/wait';

// API keys verified once and kept in each process's memory: what keeps a
// verdict, what drops it, and that a change made through one API process
// holds in another before the change has answered (docs/api.md,
// "Authentication").

jest.setTimeout(120_000);

/** A change channel the test drives by hand. */
class ManualChannel implements CredentialChannel {
  listening = true;
  listener!: ChangeListener;

  listen(listener: ChangeListener): void {
    this.listener = listener;
  }

  change(subject: Parameters<ChangeListener['begin']>[0]): void {
    this.listener.begin(subject);
    this.listener.end(subject);
  }
}

describe('the API key cache (one process, a change channel driven by hand)', () => {
  let stack: TestStack;
  let channel: ManualChannel;
  let cache: ApiKeyCache;
  const counting = new AsyncLocalStorage<true>();
  let connections = 0;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', workers: false });
    // Database connections taken by the cache under test, and no one else's (the health check pings too).
    const pool = stack.platform.db.knex.client as { acquireConnection(): Promise<unknown> };
    const acquire = pool.acquireConnection;
    pool.acquireConnection = function (this: unknown) {
      if (counting.getStore()) connections += 1;
      return acquire.call(this);
    };
  });
  afterAll(async () => {
    await stack?.close();
  });
  beforeEach(() => {
    channel = new ManualChannel();
    cache = new ApiKeyCache(stack.platform.db.knex, 100, channel);
  });

  /** The verdict, and how many database connections it took. */
  async function verify(key: string, options: { host?: string; now?: Date } = {}) {
    connections = 0;
    const verdict = await counting.run(true, () => cache.verify(key, options));
    return { ok: verdict.ok, reason: verdict.ok ? undefined : verdict.reason, connections };
  }

  const newKey = async (tenantId: string, body: Record<string, unknown> = {}) =>
    (await stack.operator('post', '/api/admin/api-keys', tenantId).send({ name: 'cached', scopes: ['admin'], ...body }).expect(201)).body.key as string;

  it('verifies a key in the database once, then from memory, and checks its expiry on every use', async () => {
    const tenant = await stack.createTenant();
    const expiresAt = new Date(Date.now() + 24 * 3600_000);
    const key = await newKey(tenant.id, { expires_at: expiresAt.toISOString() });
    expect(await verify(key)).toEqual({ ok: true, reason: undefined, connections: 1 });
    expect(await verify(key)).toEqual({ ok: true, reason: undefined, connections: 0 });
    expect(await verify(key, { now: new Date(expiresAt.getTime() + 1) })).toEqual({ ok: false, reason: 'expired', connections: 0 });
  });

  it('remembers refusals: a key nobody issued costs one lookup, a malformed one none', async () => {
    const forged = `rw_live_${'Q'.repeat(40)}`;
    expect(await verify(forged)).toEqual({ ok: false, reason: 'unknown', connections: 1 });
    expect(await verify(forged)).toEqual({ ok: false, reason: 'unknown', connections: 0 });
    expect(await verify('rw_live_too-short')).toEqual({ ok: false, reason: 'unknown', connections: 0 });
  });

  it('keeps nothing it read while a change to it was under way, and caches the key again once the change has ended', async () => {
    const tenant = await stack.createTenant();
    const key = await newKey(tenant.id);
    const keyId = (await verifyKeyId(key))!;
    channel.change({ keyId });
    // A lookup overlapped by a change: what it read may predate the change.
    connections = 0;
    const overlapped = counting.run(true, () => cache.verify(key));
    channel.change({ keyId });
    expect((await overlapped).ok).toBe(true);
    expect(await verify(key)).toMatchObject({ ok: true, connections: 1 });
    // Between the beginning and the end of a change, every use is checked in the database.
    channel.listener.begin({ keyId });
    expect(await verify(key)).toMatchObject({ ok: true, connections: 1 });
    expect(await verify(key)).toMatchObject({ ok: true, connections: 1 });
    channel.listener.end({ keyId });
    expect(await verify(key)).toMatchObject({ ok: true, connections: 1 });
    expect(await verify(key)).toMatchObject({ ok: true, connections: 0 });
  });

  it("drops on a tenant's change (named by id or slug) its keys and every verdict made on a custom domain; other tenants keep theirs", async () => {
    const first = await stack.createTenant();
    const second = await stack.createTenant();
    const host = 'docs.cache-test.example';
    for (const options of [{}, { host }]) for (const key of [first.key, second.key]) await verify(key, options);
    channel.change({ tenant: first.id });
    expect(await verify(first.key)).toMatchObject({ ok: true, connections: 1 });
    expect(await verify(second.key)).toMatchObject({ ok: true, connections: 0 });
    expect(await verify(second.key, { host })).toMatchObject({ ok: true, connections: 1 });
    channel.change({ tenant: second.slug });
    expect(await verify(second.key)).toMatchObject({ ok: true, connections: 1 });
  });

  it('while the channel is not heard, checks every use in the database and keeps nothing', async () => {
    const tenant = await stack.createTenant();
    await verify(tenant.key);
    expect(await verify(tenant.key)).toMatchObject({ connections: 0 });
    channel.listening = false;
    expect(await verify(tenant.key)).toMatchObject({ ok: true, connections: 1 });
    expect(await verify(tenant.key)).toMatchObject({ ok: true, connections: 1 });
    // Heard again: what was kept before may have missed a change, so it starts afresh.
    channel.listening = true;
    expect(await verify(tenant.key)).toMatchObject({ ok: true, connections: 1 });
    expect(await verify(tenant.key)).toMatchObject({ ok: true, connections: 0 });
  });

  async function verifyKeyId(key: string): Promise<string | undefined> {
    const verdict = await cache.verify(key);
    return verdict.ok ? verdict.apiKey.id : undefined;
  }
});

describe('an operator token shaped like an API key', () => {
  const token = `rw_live_${'T'.repeat(40)}`;
  let stack: TestStack;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', workers: false, env: { ADMIN_TOKEN: token } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it("is still the operator's: a key-shaped secret is compared with it before it is looked up as a key", async () => {
    await request(stack.app).get('/api/admin/tenants').set('Authorization', `Bearer ${token}`).expect(200);
    await request(stack.app).get('/api/admin/tenants').set('Authorization', `Bearer rw_live_${'U'.repeat(40)}`).expect(401);
  });
});

describe('changes made through one API process hold in another (two web processes)', () => {
  let stack: TestStack;
  let proxy: TcpProxy;
  let a: { child: RagworksProcess; url: string };
  let b: { child: RagworksProcess; url: string };

  const listening = async (child: RagworksProcess) => ({
    child,
    url: String((await child.waitForMessage('api listening', { timeoutMs: 90_000 })).url).replace('localhost', '127.0.0.1'),
  });

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', workers: false });
    // B reaches Redis through a proxy the test can hang; A directly.
    proxy = await startTcpProxy(targetOf(REDIS_URL, 6379));
    const env = { ...stack.env, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info' };
    [a, b] = await Promise.all([listening(startRagworks('web', env)), listening(startRagworks('web', { ...env, REDIS_URL: throughProxy(REDIS_URL, proxy) }))]);
  });
  afterAll(async () => {
    proxy?.restore();
    await killLeftoverProcesses();
    await stack?.close();
    await proxy?.close();
  });

  const call = (server: { url: string }, key: string, method: string, path: string, body?: unknown) =>
    fetch(`${server.url}${path}`, {
      method,
      headers: { Authorization: `Bearer ${key}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
  /** The operator, acting on a tenant through process A. */
  const throughA = (tenantId: string, method: string, path: string, body?: unknown) =>
    fetch(`${a.url}${path}`, {
      method,
      headers: { Authorization: `Bearer ${stack.env.ADMIN_TOKEN}`, 'X-Tenant-Id': tenantId, ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
  const search = (server: { url: string }, key: string) => call(server, key, 'POST', '/api/search', { query: 'anything', mode: 'keyword' });

  /** Waits until B verifies keys from memory: its change channel is heard (after `since` log lines). */
  const heard = (since = 0) =>
    b.child.waitForLog((line: LogLine) => b.child.logs.indexOf(line) >= since && line.msg === 'API keys are verified from memory: the change channel is heard', {
      what: 'B to hear the change channel',
    });

  async function keyFor(tenantId: string, scopes: string[]): Promise<{ id: string; key: string }> {
    const created = await stack.operator('post', '/api/admin/api-keys', tenantId).send({ name: 'two processes', scopes }).expect(201);
    return { id: created.body.id, key: created.body.key };
  }

  it('B keeps what it verified (a change made behind its back, in the database, is not seen), and holds a scope change made through A from the next request', async () => {
    const tenant = await stack.createTenant();
    const { id, key } = await keyFor(tenant.id, ['documents:read', 'search']);
    expect((await search(b, key)).status).toBe(200);
    await heard();
    expect((await search(b, key)).status).toBe(200);

    // Not through ragworks: nobody announces it, and B goes on with what it verified.
    await stack.sql((db) => db('api_keys').where({ id }).update({ scopes: ['documents:read'] }));
    expect((await search(b, key)).status).toBe(200);

    const changed = await throughA(tenant.id, 'PATCH', `/api/admin/api-keys/${id}`, { scopes: ['documents:read'] }).then(async (response) => ({
      status: response.status,
      body: await response.json(),
    }));
    expect(changed).toMatchObject({ status: 200, body: { id, scopes: ['documents:read'] } });
    const refused = await search(b, key);
    expect({ status: refused.status, code: ((await refused.json()) as { error: { code: string } }).error.code }).toEqual({ status: 403, code: 'forbidden' });
    expect((await call(b, key, 'GET', '/api/documents')).status).toBe(200);
  });

  it('B refuses a key revoked through A from the next request', async () => {
    const tenant = await stack.createTenant();
    const { id, key } = await keyFor(tenant.id, ['documents:read']);
    expect((await call(b, key, 'GET', '/api/documents')).status).toBe(200);
    await heard();
    expect((await call(b, key, 'GET', '/api/documents')).status).toBe(200);
    expect((await throughA(tenant.id, 'DELETE', `/api/admin/api-keys/${id}`)).status).toBe(204);
    expect((await call(b, key, 'GET', '/api/documents')).status).toBe(401);
  });

  it("B refuses the keys of a tenant suspended through A from the next request, and accepts them again once it is resumed there", async () => {
    const tenant = await stack.createTenant();
    expect((await call(b, tenant.key, 'GET', '/api/documents')).status).toBe(200);
    await heard();
    expect((await throughA(tenant.id, 'POST', `/api/admin/tenants/${tenant.id}/suspend`)).status).toBe(200);
    const refused = await call(b, tenant.key, 'GET', '/api/documents');
    expect({ status: refused.status, code: ((await refused.json()) as { error: { code: string } }).error.code }).toEqual({ status: 403, code: 'tenant_suspended' });
    expect((await throughA(tenant.id, 'POST', `/api/admin/tenants/${tenant.id}/resume`)).status).toBe(200);
    expect((await call(b, tenant.key, 'GET', '/api/documents')).status).toBe(200);
  });

  it('with its change channel silent (its Redis connections hung), B checks keys in the database on every request: a key revoked through A is refused within a second', async () => {
    // An unlimited tenant: its reads take no rate limits, so B's requests do not touch the hung Redis at all.
    const tenant = await stack.createTenant();
    const { id, key } = await keyFor(tenant.id, ['documents:read']);
    expect((await call(b, key, 'GET', '/api/documents')).status).toBe(200);
    await heard();
    // Verified from memory from here on.
    expect((await call(b, key, 'GET', '/api/documents')).status).toBe(200);
    const mark = b.child.logs.length;
    proxy.hang();
    try {
      // Announced on Redis, which B no longer hears.
      expect((await throughA(tenant.id, 'DELETE', `/api/admin/api-keys/${id}`)).status).toBe(204);
      // The guarantee's own bound, not a speed figure: B stops relying on what it cached within a second of its channel going silent.
      await waitFor(async () => (await call(b, key, 'GET', '/api/documents')).status === 401, { timeoutMs: 1_000, intervalMs: 25, what: 'B to refuse the revoked key' });
      await b.child.waitForLog((line) => b.child.logs.indexOf(line) >= mark && line.msg === 'API keys are verified in the database on every request: the change channel is not heard', {
        what: 'B to say its change channel is silent',
      });
      // Meanwhile B answers: keys are checked in the database.
      expect((await call(b, tenant.key, 'GET', '/api/documents')).status).toBe(200);
    } finally {
      proxy.restore();
    }
    await heard(mark);
  });
});
