import request from 'supertest';
import { indexingQueue } from '../../queues';
import { createApp } from '../../src/http/app';
import { WorkerRuntime } from '../../workers/runtime';
import { uniqueName } from '../helpers/databases';
import { ADMIN_TOKEN, startStack, type TestStack } from '../helpers/harness';
import { waitFor } from '../helpers/wait';

const domainFor = (label: string) => `${uniqueName(label).replace(/_/g, '-')}.docs.example.com`;

describe('custom domains (postgres)', () => {
  let stack: TestStack;
  let a: Awaited<ReturnType<TestStack['createTenant']>>;
  let b: Awaited<ReturnType<TestStack['createTenant']>>;
  let domain: string;

  /** A request arriving on `host`, as a browser or an API client sends it. */
  const on = (host: string, method: 'get' | 'post', url: string, token: string) =>
    request(stack.app)[method](url).set('Host', host).set('Authorization', `Bearer ${token}`);

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', workers: false });
    a = await stack.createTenant();
    b = await stack.createTenant();
    domain = domainFor('a');
    await stack.operator('patch', `/api/admin/tenants/${a.id}`).send({ custom_domain: domain }).expect(200);
    await stack.as(a.key, 'post', '/api/documents').send({ title: 'Of A', content: 'alpha' }).expect(202);
    await stack.as(b.key, 'post', '/api/documents').send({ title: 'Of B', content: 'beta' }).expect(202);
  });
  afterAll(async () => {
    await stack?.close();
  });

  it("serves the domain's tenant to its own keys, with or without a port in Host", async () => {
    const listed = await on(domain, 'get', '/api/documents', a.key).expect(200);
    expect(listed.body.items.map((item: { title: string }) => item.title)).toEqual(['Of A']);
    await on(`${domain.toUpperCase()}:8443`, 'get', '/api/documents', a.key).expect(200);
  });

  it("refuses another tenant's key there with 403, and changes nothing", async () => {
    const refused = await on(domain, 'post', '/api/documents', b.key).send({ title: 'Planted', content: 'x' });
    expect(refused.status).toBe(403);
    expect(refused.body.error).toMatchObject({ code: 'forbidden', message: expect.stringContaining(domain) });
    const ofB = await stack.as(b.key, 'get', '/api/documents').expect(200);
    expect(ofB.body.items.map((item: { title: string }) => item.title)).toEqual(['Of B']);
  });

  it('resolves the operator to the domain tenant without X-Tenant-Id, and refuses a different one', async () => {
    const listed = await on(domain, 'get', '/api/documents', ADMIN_TOKEN).expect(200);
    expect(listed.body.items.map((item: { title: string }) => item.title)).toEqual(['Of A']);
    const mismatch = await on(domain, 'get', '/api/documents', ADMIN_TOKEN).set('X-Tenant-Id', b.id);
    expect(mismatch.status).toBe(403);
    await on(domain, 'get', '/api/documents', ADMIN_TOKEN).set('X-Tenant-Id', a.slug).expect(200);
  });

  it('binds the domain written with a trailing dot, in any case, with a port, exactly like the plain name', async () => {
    const titles = (response: request.Response) => response.body.items.map((item: { title: string }) => item.title);
    for (const host of [`${domain.toUpperCase()}.`, `${domain}.:8080`, `${domain.toUpperCase()}:8443`]) {
      const refused = await on(host, 'post', '/api/documents', b.key).send({ title: 'Planted', content: 'x' });
      expect({ host, status: refused.status, message: refused.body.error?.message }).toEqual({ host, status: 403, message: expect.stringContaining(domain) });
      expect(titles(await on(host, 'get', '/api/documents', a.key).expect(200))).toEqual(['Of A']);
      // The operator without X-Tenant-Id acts on the domain's tenant, and may not name another.
      expect(titles(await on(host, 'get', '/api/documents', ADMIN_TOKEN).expect(200))).toEqual(['Of A']);
      expect((await on(host, 'get', '/api/documents', ADMIN_TOKEN).set('X-Tenant-Id', b.id)).status).toBe(403);
    }
    expect(titles(await stack.as(b.key, 'get', '/api/documents').expect(200))).toEqual(['Of B']);
  });

  it('stores a custom domain in lower case, and refuses one written with a trailing dot or a port', async () => {
    const other = domainFor('b');
    for (const written of [`${other}.`, `${other}:8080`]) {
      const refused = await stack.operator('patch', `/api/admin/tenants/${b.id}`).send({ custom_domain: written });
      expect({ written, status: refused.status, code: refused.body.error?.code }).toEqual({ written, status: 400, code: 'validation_failed' });
    }
    const stored = await stack.operator('patch', `/api/admin/tenants/${b.id}`).send({ custom_domain: other.toUpperCase() }).expect(200);
    expect(stored.body.custom_domain).toBe(other);
    await on(`${other}.`, 'get', '/api/documents', b.key).expect(200);
    expect((await on(`${other}.`, 'get', '/api/documents', a.key)).status).toBe(403);
    await stack.operator('patch', `/api/admin/tenants/${b.id}`).send({ custom_domain: null }).expect(200);
  });

  it('takes the host from X-Forwarded-Host only from a proxy TRUST_PROXY names', async () => {
    // From a peer nobody named, the header is a mere claim: the request's own Host decides.
    await stack.as(b.key, 'get', '/api/documents').set('X-Forwarded-Host', domain).expect(200);
    const behindProxy = createApp({ ...stack.platform, config: { ...stack.platform.config, TRUST_PROXY: 'loopback' } });
    const viaProxy = (key: string) => request(behindProxy).get('/api/documents').set('Authorization', `Bearer ${key}`).set('X-Forwarded-Host', `${domain.toUpperCase()}.`);
    expect((await viaProxy(b.key)).status).toBe(403);
    await viaProxy(a.key).expect(200);
  });

  it('leaves other hosts alone, and follows a changed domain at once', async () => {
    await on('api.example.org', 'get', '/api/documents', b.key).expect(200);
    const moved = domainFor('moved');
    await stack.operator('patch', `/api/admin/tenants/${a.id}`).send({ custom_domain: moved }).expect(200);
    await on(domain, 'get', '/api/documents', b.key).expect(200);
    expect((await on(moved, 'get', '/api/documents', b.key)).status).toBe(403);
    await stack.operator('patch', `/api/admin/tenants/${a.id}`).send({ custom_domain: domain }).expect(200);
  });
});

describe('suspension (postgres)', () => {
  let stack: TestStack;
  let workers: WorkerRuntime | undefined;

  beforeAll(async () => {
    // Workers start later, once the tenant is suspended with work queued.
    stack = await startStack({ database: 'postgres', workers: false });
  });
  afterAll(async () => {
    await workers?.drain(5_000);
    await stack?.close();
  });

  it("refuses a suspended tenant's keys with 403 tenant_suspended, holds its queued jobs delayed, and runs them on resume", async () => {
    const tenant = await stack.createTenant();
    const other = await stack.createTenant();
    const held = await stack.as(tenant.key, 'post', '/api/documents').send({ title: 'Held', content: 'The ferry leaves at noon.' }).expect(202);
    const free = await stack.as(other.key, 'post', '/api/documents').send({ title: 'Free', content: 'The ferry leaves at noon.' }).expect(202);

    await stack.operator('post', `/api/admin/tenants/${tenant.id}/suspend`).expect(200);
    for (const [method, url] of [['get', '/api/documents'], ['post', '/api/search'], ['get', `/api/documents/${held.body.id}`]] as const) {
      const refused = await stack.as(tenant.key, method, url).send(method === 'post' ? { query: 'ferry' } : undefined);
      expect(refused.status).toBe(403);
      expect(refused.body.error.code).toBe('tenant_suspended');
    }
    // The operator still sees it, suspended.
    expect((await stack.operator('get', `/api/admin/tenants/${tenant.id}`).expect(200)).body.status).toBe('suspended');

    workers = new WorkerRuntime(stack.platform, ['indexing']);
    workers.start();
    await workers.waitUntilReady();
    await stack.waitForDocument(other.key, free.body.id);

    const queue = stack.platform.queues.queue(indexingQueue.name);
    const heldJobs = async () => (await queue.getJobs(['delayed'])).filter((job) => job.data.documentId === held.body.id);
    const [job] = await waitFor(async () => {
      const jobs = await heldJobs();
      return jobs.length === 1 ? jobs : null;
    }, { what: 'the suspended tenant job to wait in delayed' });
    expect(job.attemptsMade).toBe(0);
    expect(await queue.getJobs(['failed'])).toHaveLength(0);
    const whileSuspended = await stack.operator('get', `/api/documents/${held.body.id}`, tenant.id).expect(200);
    expect(whileSuspended.body.status).toBe('queued');

    const resumedAt = Date.now();
    await stack.operator('post', `/api/admin/tenants/${tenant.id}/resume`).expect(200);
    await stack.waitForDocument(tenant.key, held.body.id);
    // Promoted on resume, not left to its recheck (a minute at the soonest).
    expect(Date.now() - resumedAt).toBeLessThan(20_000);
    expect(await queue.getJobs(['failed'])).toHaveLength(0);
    await stack.as(tenant.key, 'post', '/api/search').send({ query: 'ferry', mode: 'keyword' }).expect(200);
  });

  it("forgets a deleted tenant's held jobs", async () => {
    const tenant = await stack.createTenant();
    await stack.operator('post', `/api/admin/tenants/${tenant.id}/suspend`).expect(200);
    const held = await stack.operator('post', '/api/documents', tenant.id).send({ title: 'Held', content: 'Waits for the resumption.' }).expect(202);
    const note = `${stack.config.QUEUE_PREFIX}:suspended-jobs:{${tenant.id}}`;
    await waitFor(async () => (await stack.platform.redis.smembers(note)).some((member) => member.includes(held.body.id)), { what: 'the job to be held' });
    await stack.operator('delete', `/api/admin/tenants/${tenant.id}`).expect(204);
    expect(await stack.platform.redis.exists(note)).toBe(0);
  });
});
