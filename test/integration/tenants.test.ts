import request from 'supertest';
import { uniqueName } from '../helpers/databases';
import { startStack, type TestStack } from '../helpers/harness';

interface TenantBody {
  id: string;
  slug: string;
  name: string;
  tier: string;
  custom_domain: string | null;
  status: string;
  created_at: string;
  updated_at: string;
}

const newSlug = () => uniqueName('t').replace(/_/g, '-');

function expectError(response: request.Response, status: number, code: string): void {
  expect(response.status).toBe(status);
  expect(response.body.error).toMatchObject({ code, message: expect.any(String) });
}

describe('tenants and their API keys (postgres)', () => {
  let stack: TestStack;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres' });
  });
  afterAll(async () => {
    await stack?.close();
  });

  async function allTenants(): Promise<TenantBody[]> {
    const response = await stack.operator('get', '/api/admin/tenants?limit=100').expect(200);
    return response.body.items as TenantBody[];
  }

  describe('tenants', () => {
    it('creates a tenant with tier free and status active by default', async () => {
      const slug = newSlug();
      const response = await stack.operator('post', '/api/admin/tenants').send({ slug, name: 'Acme Docs' }).expect(201);
      const tenant = response.body as TenantBody;
      expect(tenant).toMatchObject({ slug, name: 'Acme Docs', tier: 'free', status: 'active', custom_domain: null });
      expect(tenant.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      expect(new Date(tenant.created_at).toISOString()).toBe(tenant.created_at);

      const withTier = await stack.operator('post', '/api/admin/tenants').send({ slug: newSlug(), name: 'Big', tier: 'enterprise' }).expect(201);
      expect(withTier.body.tier).toBe('enterprise');
    });

    it('refuses a duplicate slug with 409 conflict and stores nothing', async () => {
      const slug = newSlug();
      await stack.operator('post', '/api/admin/tenants').send({ slug, name: 'First' }).expect(201);
      const before = await allTenants();
      const response = await stack.operator('post', '/api/admin/tenants').send({ slug, name: 'Second' });
      expectError(response, 409, 'conflict');
      const after = await allTenants();
      expect(after.length).toBe(before.length);
      expect(after.filter((tenant) => tenant.slug === slug).map((tenant) => tenant.name)).toEqual(['First']);
    });

    it.each([
      ['uppercase', 'Acme'],
      ['spaces', 'acme docs'],
      ['64 characters', 'a'.repeat(64)],
      ['a leading hyphen', '-acme'],
      ['an empty slug', ''],
      ['SQL', "x'; drop table tenants; --"],
    ])('refuses a slug with %s with 400', async (_why, slug) => {
      const before = (await allTenants()).length;
      const response = await stack.operator('post', '/api/admin/tenants').send({ slug, name: 'Invalid' });
      expectError(response, 400, 'validation_failed');
      expect((await allTenants()).length).toBe(before);
    });

    it('accepts a 63-character slug', async () => {
      const slug = `${'a'.repeat(50)}${Date.now().toString(36)}`.slice(0, 63).padEnd(63, 'b');
      await stack.operator('post', '/api/admin/tenants').send({ slug, name: 'Long' }).expect(201);
    });

    it('refuses an unknown tier and a missing name with 400', async () => {
      const before = (await allTenants()).length;
      expectError(await stack.operator('post', '/api/admin/tenants').send({ slug: newSlug(), name: 'X', tier: 'platinum' }), 400, 'validation_failed');
      expectError(await stack.operator('post', '/api/admin/tenants').send({ slug: newSlug() }), 400, 'validation_failed');
      expectError(await stack.operator('post', '/api/admin/tenants').send({ slug: newSlug(), name: 'X', extra: true }), 400, 'validation_failed');
      expect((await allTenants()).length).toBe(before);
    });

    it('lists tenants page by page with a cursor', async () => {
      const created: string[] = [];
      for (let i = 0; i < 5; i++) {
        const response = await stack.operator('post', '/api/admin/tenants').send({ slug: newSlug(), name: `Paged ${i}` }).expect(201);
        created.push(response.body.id);
      }
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const url: string = `/api/admin/tenants?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
        const response = await stack.operator('get', url).expect(200);
        expect(response.body.items.length).toBeLessThanOrEqual(2);
        seen.push(...response.body.items.map((item: TenantBody) => item.id));
        cursor = response.body.next_cursor;
        pages += 1;
      } while (cursor && pages < 100);
      expect(cursor).toBeNull();
      expect(new Set(seen).size).toBe(seen.length);
      const everything = (await allTenants()).map((tenant) => tenant.id);
      expect(seen).toEqual(everything);
      expect(seen).toEqual(expect.arrayContaining(created));
      // Newest first: the last created comes before the first.
      expect(seen.indexOf(created[4])).toBeLessThan(seen.indexOf(created[0]));

      expectError(await stack.operator('get', '/api/admin/tenants?cursor=garbage'), 400, 'validation_failed');
      expectError(await stack.operator('get', '/api/admin/tenants?limit=0'), 400, 'validation_failed');
      expectError(await stack.operator('get', '/api/admin/tenants?limit=101'), 400, 'validation_failed');
    });

    it('gets a tenant by id and by slug; unknown → 404', async () => {
      const slug = newSlug();
      const created = await stack.operator('post', '/api/admin/tenants').send({ slug, name: 'Findable' }).expect(201);
      const byId = await stack.operator('get', `/api/admin/tenants/${created.body.id}`).expect(200);
      const bySlug = await stack.operator('get', `/api/admin/tenants/${slug}`).expect(200);
      expect(byId.body).toEqual(created.body);
      expect(bySlug.body).toEqual(created.body);
      expectError(await stack.operator('get', '/api/admin/tenants/nobody-here'), 404, 'not_found');
      expectError(await stack.operator('get', '/api/admin/tenants/0190f5b2-0000-7000-8000-000000000000'), 404, 'not_found');
    });

    it('patches name, tier and custom_domain; a domain already taken → 409', async () => {
      const first = await stack.operator('post', '/api/admin/tenants').send({ slug: newSlug(), name: 'Patchable' }).expect(201);
      const domain = `${newSlug()}.example.com`;
      const patched = await stack
        .operator('patch', `/api/admin/tenants/${first.body.id}`)
        .send({ name: 'Renamed', tier: 'standard', custom_domain: domain })
        .expect(200);
      expect(patched.body).toMatchObject({ id: first.body.id, name: 'Renamed', tier: 'standard', custom_domain: domain, status: 'active' });
      const read = await stack.operator('get', `/api/admin/tenants/${first.body.id}`).expect(200);
      expect(read.body).toEqual(patched.body);

      const second = await stack.operator('post', '/api/admin/tenants').send({ slug: newSlug(), name: 'Other' }).expect(201);
      expectError(await stack.operator('patch', `/api/admin/tenants/${second.body.id}`).send({ custom_domain: domain }), 409, 'conflict');
      // Domains compare without case.
      expectError(await stack.operator('patch', `/api/admin/tenants/${second.body.id}`).send({ custom_domain: domain.toUpperCase() }), 409, 'conflict');
      expectError(await stack.operator('post', '/api/admin/tenants').send({ slug: newSlug(), name: 'Third', custom_domain: domain }), 409, 'conflict');
      const unchanged = await stack.operator('get', `/api/admin/tenants/${second.body.id}`).expect(200);
      expect(unchanged.body.custom_domain).toBeNull();

      expectError(await stack.operator('patch', `/api/admin/tenants/${first.body.id}`).send({ tier: 'gold' }), 400, 'validation_failed');
      expectError(await stack.operator('patch', `/api/admin/tenants/${first.body.id}`).send({ custom_domain: 'not a domain' }), 400, 'validation_failed');
      expect((await stack.operator('get', `/api/admin/tenants/${first.body.id}`).expect(200)).body).toEqual(patched.body);
      expectError(await stack.operator('patch', '/api/admin/tenants/no-such-tenant').send({ name: 'x' }), 404, 'not_found');
    });

    it('deletes a tenant (204, then 404) with its documents, chunks and keys', async () => {
      const tenant = await stack.createTenant();
      const other = await stack.createTenant();
      const document = await stack
        .as(tenant.key, 'post', '/api/documents')
        .send({ title: 'Doomed', content: '# Doomed\n\nThis document goes when its tenant goes.' })
        .expect(202);
      await stack.waitForDocument(tenant.key, document.body.id);
      const survivor = await stack.as(other.key, 'post', '/api/documents').send({ title: 'Survivor', content: 'Another tenant keeps this.' }).expect(202);
      const count = async (table: string, tenantId: string) => Number((await stack.sql((db) => db(table).where({ tenant_id: tenantId }).count('* as n').first()))?.n);
      expect(await count('chunks', tenant.id)).toBeGreaterThan(0);

      await stack.operator('delete', `/api/admin/tenants/${tenant.id}`).expect(204);
      expectError(await stack.operator('get', `/api/admin/tenants/${tenant.id}`), 404, 'not_found');
      expectError(await stack.operator('delete', `/api/admin/tenants/${tenant.id}`), 404, 'not_found');
      for (const table of ['documents', 'chunks', 'api_keys', 'index_jobs', 'index_job_items']) {
        expect({ table, rows: await count(table, tenant.id) }).toEqual({ table, rows: 0 });
      }
      expectError(await stack.as(tenant.key, 'get', '/api/documents'), 401, 'unauthenticated');
      await stack.as(other.key, 'get', `/api/documents/${survivor.body.id}`).expect(200);
      expect(await count('documents', other.id)).toBe(1);
    });

    it('deletes a tenant by slug', async () => {
      const tenant = await stack.createTenant();
      await stack.operator('delete', `/api/admin/tenants/${tenant.slug}`).expect(204);
      expectError(await stack.operator('get', `/api/admin/tenants/${tenant.id}`), 404, 'not_found');
    });
  });

  describe('API keys per tenant', () => {
    let a: { id: string; slug: string; key: string };
    let b: { id: string; slug: string; key: string };
    let aManager: string;
    let bManager: string;

    beforeAll(async () => {
      a = await stack.createTenant();
      b = await stack.createTenant();
      aManager = (await stack.operator('post', '/api/admin/api-keys', a.id).send({ name: 'a manager', scopes: ['keys:manage', 'documents:read'] }).expect(201)).body.key;
      bManager = (await stack.operator('post', '/api/admin/api-keys', b.slug).send({ name: 'b manager', scopes: ['keys:manage'] }).expect(201)).body.key;
    });

    const ids = (response: request.Response) => (response.body.items as Array<{ id: string }>).map((item) => item.id);

    it('creates and lists keys through the operator with X-Tenant-Id, each tenant seeing only its own', async () => {
      const created = await stack.operator('post', '/api/admin/api-keys', a.id).send({ name: 'operator made', scopes: ['search'] }).expect(201);
      expect(created.body).toMatchObject({ name: 'operator made', scopes: ['search'], key: expect.stringMatching(/^rw_live_/) });
      const listA = await stack.operator('get', '/api/admin/api-keys', a.id).expect(200);
      const listB = await stack.operator('get', '/api/admin/api-keys', b.slug).expect(200);
      expect(ids(listA)).toContain(created.body.id);
      expect(ids(listB)).not.toContain(created.body.id);
      const rowsA: Array<{ id: string }> = await stack.sql((db) => db('api_keys').where({ tenant_id: a.id }).whereNull('revoked_at').select('id'));
      expect([...ids(listA)].sort()).toEqual(rowsA.map((row) => row.id).sort());
      expect(ids(listA).some((id) => ids(listB).includes(id))).toBe(false);
    });

    it('refuses to let a key grant scopes it does not hold', async () => {
      const before = await stack.sql((db) => db('api_keys').where({ tenant_id: a.id }).count('* as n').first());
      expect(Number(before?.n)).toBeGreaterThan(0);
      for (const scopes of [['admin'], ['documents:write'], ['documents:read', 'jobs:manage']]) {
        const refused = await stack.as(aManager, 'post', '/api/admin/api-keys').send({ name: 'escalation', scopes }).expect(403);
        expect(refused.body.error).toMatchObject({ code: 'forbidden', details: { scopes: expect.any(Array) } });
      }
      // Without scopes a key gets the defaults, which include documents:write: refused too.
      await stack.as(aManager, 'post', '/api/admin/api-keys').send({ name: 'defaults' }).expect(403);
      const after = await stack.sql((db) => db('api_keys').where({ tenant_id: a.id }).count('* as n').first());
      expect(after).toEqual(before);
    });

    it('lets a keys:manage key create, list and revoke keys of its own tenant only', async () => {
      const created = await stack.as(aManager, 'post', '/api/admin/api-keys').send({ name: 'self made', scopes: ['documents:read'] }).expect(201);
      const key = created.body.key as string;
      await stack.as(key, 'get', '/api/documents').expect(200);
      const row = await stack.sql((db) => db('api_keys').where({ id: created.body.id }).first());
      expect(row.tenant_id).toBe(a.id);

      const listA = await stack.as(aManager, 'get', '/api/admin/api-keys').expect(200);
      const listB = await stack.as(bManager, 'get', '/api/admin/api-keys').expect(200);
      expect(ids(listA)).toContain(created.body.id);
      expect(ids(listB)).not.toContain(created.body.id);
      for (const item of listA.body.items) expect(item).not.toHaveProperty('key');

      // B's manager cannot revoke A's key: to B it does not exist.
      expectError(await stack.as(bManager, 'delete', `/api/admin/api-keys/${created.body.id}`), 404, 'not_found');
      await stack.as(key, 'get', '/api/documents').expect(200);
      // An X-Tenant-Id header does not move a key to another tenant.
      const smuggled = await stack.as(bManager, 'delete', `/api/admin/api-keys/${created.body.id}`).set('X-Tenant-Id', a.id);
      expectError(smuggled, 404, 'not_found');
      await stack.as(key, 'get', '/api/documents').expect(200);

      await stack.as(aManager, 'delete', `/api/admin/api-keys/${created.body.id}`).expect(204);
      expectError(await stack.as(key, 'get', '/api/documents'), 401, 'unauthenticated');
    });

    it("refuses to revoke another tenant's key through the operator naming the wrong tenant", async () => {
      const bKey = await stack.operator('post', '/api/admin/api-keys', b.id).send({ name: 'b reader', scopes: ['documents:read'] }).expect(201);
      expectError(await stack.operator('delete', `/api/admin/api-keys/${bKey.body.id}`, a.id), 404, 'not_found');
      await stack.as(bKey.body.key, 'get', '/api/documents').expect(200);
    });

    it('refuses key management without keys:manage with 403', async () => {
      const plain = await stack.operator('post', '/api/admin/api-keys', a.id).send({ name: 'plain', scopes: ['documents:read', 'documents:write', 'search'] }).expect(201);
      const before = ids(await stack.operator('get', '/api/admin/api-keys?limit=100', a.id).expect(200));
      expectError(await stack.as(plain.body.key, 'get', '/api/admin/api-keys'), 403, 'forbidden');
      expectError(await stack.as(plain.body.key, 'post', '/api/admin/api-keys').send({ name: 'escalate', scopes: ['admin'] }), 403, 'forbidden');
      expectError(await stack.as(plain.body.key, 'delete', `/api/admin/api-keys/${plain.body.id}`), 403, 'forbidden');
      const after = ids(await stack.operator('get', '/api/admin/api-keys?limit=100', a.id).expect(200));
      expect(after).toEqual(before);
    });

    it('answers 404 for an unknown key id and 400 for a malformed one', async () => {
      expectError(await stack.as(aManager, 'delete', '/api/admin/api-keys/0190f5b2-0000-7000-8000-000000000000'), 404, 'not_found');
      expectError(await stack.as(aManager, 'delete', '/api/admin/api-keys/not-a-uuid'), 400, 'validation_failed');
    });
  });
});
