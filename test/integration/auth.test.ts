import { createHash } from 'node:crypto';
import request from 'supertest';
import { ADMIN_TOKEN, startStack, type TestStack } from '../helpers/harness';
import { waitFor } from '../helpers/wait';

interface KeyItem {
  id: string;
  name: string;
  prefix: string;
  scopes: string[];
  last_used_at: string | null;
  request_count: number;
  [field: string]: unknown;
}

describe('authentication and authorization (postgres)', () => {
  let stack: TestStack;
  let tenant: { id: string; slug: string; key: string };

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', workers: false });
    tenant = await stack.createTenant();
  });
  afterAll(async () => {
    await stack?.close();
  });

  /** A new key for the shared tenant, created by the operator. */
  async function createKey(body: Record<string, unknown>, tenantId = tenant.id) {
    const response = await stack.operator('post', '/api/admin/api-keys', tenantId).send({ name: 'k', ...body }).expect(201);
    return response.body as KeyItem & { key: string; expires_at: string | null };
  }

  async function listKeys(tenantId = tenant.id): Promise<KeyItem[]> {
    const response = await stack.operator('get', '/api/admin/api-keys?limit=100', tenantId).expect(200);
    return response.body.items as KeyItem[];
  }

  function expectError(response: request.Response, status: number, code: string): void {
    expect(response.status).toBe(status);
    expect(response.headers['content-type']).toMatch(/application\/json/);
    expect(response.body.error).toMatchObject({ code, message: expect.any(String) });
  }

  describe('credentials', () => {
    it('answers 401 unauthenticated without credentials', async () => {
      const response = await request(stack.app).get('/api/documents');
      expectError(response, 401, 'unauthenticated');
    });

    it('answers 401 to a garbage bearer token', async () => {
      expectError(await stack.as('not-a-key-at-all', 'get', '/api/documents'), 401, 'unauthenticated');
      const empty = await request(stack.app).get('/api/documents').set('Authorization', 'Bearer');
      expectError(empty, 401, 'unauthenticated');
    });

    it('answers 401 to a well-formed rw_live_ key nobody issued', async () => {
      const forged = `rw_live_${'A'.repeat(40)}`;
      expectError(await stack.as(forged, 'get', '/api/documents'), 401, 'unauthenticated');
      // A near miss of a real key is no key either.
      const altered = tenant.key.slice(0, -1) + (tenant.key.endsWith('A') ? 'B' : 'A');
      expectError(await stack.as(altered, 'get', '/api/documents'), 401, 'unauthenticated');
    });

    it('accepts the key in X-API-Key like a bearer token', async () => {
      const viaHeader = await request(stack.app).get('/api/documents').set('X-API-Key', tenant.key);
      expect(viaHeader.status).toBe(200);
      expect(viaHeader.body).toEqual({ items: [], next_cursor: null });
      const wrong = await request(stack.app).get('/api/documents').set('X-API-Key', 'rw_live_nope');
      expectError(wrong, 401, 'unauthenticated');
    });

    it('accepts the operator token', async () => {
      const response = await stack.operator('get', '/api/admin/tenants').expect(200);
      expect(response.body.items.map((item: { id: string }) => item.id)).toContain(tenant.id);
      await request(stack.app).get('/api/admin/tenants').set('X-API-Key', ADMIN_TOKEN).expect(200);
    });

    it('refuses a tenant key on an operator-only route with 403 forbidden', async () => {
      expectError(await stack.as(tenant.key, 'get', '/api/admin/tenants'), 403, 'forbidden');
      const attempt = await stack.as(tenant.key, 'post', '/api/admin/tenants').send({ slug: 'sneaky', name: 'Sneaky' });
      expectError(attempt, 403, 'forbidden');
      const tenants = await stack.operator('get', '/api/admin/tenants?limit=100').expect(200);
      expect(tenants.body.items.map((item: { slug: string }) => item.slug)).not.toContain('sneaky');
    });
  });

  describe('scopes', () => {
    it('lets a documents:read key read but not write or search', async () => {
      const reader = await createKey({ scopes: ['documents:read'] });
      await stack.as(reader.key, 'get', '/api/documents').expect(200);
      const write = await stack.as(reader.key, 'post', '/api/documents').send({ title: 'Nope', content: 'Should not be stored.' });
      expectError(write, 403, 'forbidden');
      const search = await stack.as(reader.key, 'post', '/api/search').send({ query: 'anything', mode: 'keyword' });
      expectError(search, 403, 'forbidden');
      const listed = await stack.as(tenant.key, 'get', '/api/documents').expect(200);
      expect(listed.body.items).toEqual([]);
    });

    it('grants every tenant scope to an admin key', async () => {
      const admin = await createKey({ scopes: ['admin'] });
      const created = await stack.as(admin.key, 'post', '/api/documents').send({ title: 'Scoped', content: 'Admin keys may write.' }).expect(202);
      await stack.as(admin.key, 'get', `/api/documents/${created.body.id}`).expect(200);
      await stack.as(admin.key, 'post', '/api/search').send({ query: 'admin', mode: 'keyword' }).expect(200);
      await stack.as(admin.key, 'get', '/api/admin/api-keys').expect(200);
      await stack.as(admin.key, 'get', '/api/admin/jobs?queue=indexing&state=waiting').expect(200);
      await stack.as(admin.key, 'delete', `/api/documents/${created.body.id}`).expect(204);
      // …but never the operator's routes.
      expectError(await stack.as(admin.key, 'get', '/api/admin/queues'), 403, 'forbidden');
    });

    it('gives a key without scopes the documented defaults (read, write, search) and nothing more', async () => {
      const plain = await createKey({});
      expect([...plain.scopes].sort()).toEqual(['documents:read', 'documents:write', 'search']);
      await stack.as(plain.key, 'get', '/api/documents').expect(200);
      expectError(await stack.as(plain.key, 'get', '/api/admin/api-keys'), 403, 'forbidden');
    });

    it('rejects an unknown scope with 400 and creates no key', async () => {
      const before = (await listKeys()).length;
      const response = await stack.operator('post', '/api/admin/api-keys', tenant.id).send({ name: 'bad', scopes: ['documents:delete'] });
      expectError(response, 400, 'validation_failed');
      expect((await listKeys()).length).toBe(before);
    });
  });

  describe('revocation', () => {
    it('stops a revoked key at once; revoking twice is 404', async () => {
      const doomed = await createKey({ scopes: ['documents:read'] });
      await stack.as(doomed.key, 'get', '/api/documents').expect(200);
      await stack.operator('delete', `/api/admin/api-keys/${doomed.id}`, tenant.id).expect(204);
      expectError(await stack.as(doomed.key, 'get', '/api/documents'), 401, 'unauthenticated');
      expectError(await stack.operator('delete', `/api/admin/api-keys/${doomed.id}`, tenant.id), 404, 'not_found');
      expect((await listKeys()).map((item) => item.id)).not.toContain(doomed.id);
    });
  });

  describe('expiry', () => {
    it('accepts a key until expires_at and refuses it after', async () => {
      const expiresAt = new Date(Date.now() + 2_500);
      const shortLived = await createKey({ scopes: ['documents:read'], expires_at: expiresAt.toISOString() });
      expect(new Date(shortLived.expires_at!).getTime()).toBe(expiresAt.getTime());
      await stack.as(shortLived.key, 'get', '/api/documents').expect(200);
      const refused = await waitFor(
        async () => {
          const response = await stack.as(shortLived.key, 'get', '/api/documents');
          return response.status === 401 ? response : null;
        },
        { timeoutMs: 15_000, intervalMs: 250, what: 'the key to expire' },
      );
      expectError(refused, 401, 'unauthenticated');
      expect(Date.now()).toBeGreaterThanOrEqual(expiresAt.getTime());
    });

    it('refuses expires_at in the past with 400 and creates no key', async () => {
      const before = (await listKeys()).length;
      const response = await stack
        .operator('post', '/api/admin/api-keys', tenant.id)
        .send({ name: 'stale', expires_at: new Date(Date.now() - 60_000).toISOString() });
      expectError(response, 400, 'validation_failed');
      const notADate = await stack.operator('post', '/api/admin/api-keys', tenant.id).send({ name: 'stale', expires_at: 'tomorrow' });
      expectError(notADate, 400, 'validation_failed');
      expect((await listKeys()).length).toBe(before);
    });
  });

  describe('usage', () => {
    it('records last_used_at and request_count', async () => {
      const used = await createKey({ scopes: ['documents:read'] });
      const fresh = (await listKeys()).find((item) => item.id === used.id)!;
      expect(fresh).toMatchObject({ last_used_at: null, request_count: 0 });
      const before = Date.now();
      for (let i = 0; i < 3; i++) await stack.as(used.key, 'get', '/api/documents').expect(200);
      const seen = await waitFor(
        async () => {
          const item = (await listKeys()).find((candidate) => candidate.id === used.id);
          return item && item.request_count === 3 ? item : null;
        },
        { timeoutMs: 10_000, what: 'key usage to be flushed' },
      );
      expect(seen.last_used_at).not.toBeNull();
      // Allow for clock granularity between this process and the database round trip.
      expect(new Date(seen.last_used_at!).getTime()).toBeGreaterThanOrEqual(before - 1_000);
    });
  });

  describe('key format and storage', () => {
    it('issues rw_live_ keys with 32+ random characters, shown once and stored only as SHA-256', async () => {
      const created = await createKey({ name: 'format check', scopes: ['search'] });
      expect(created.key).toMatch(/^rw_live_[A-Za-z0-9_-]{32,}$/);
      expect(created).toMatchObject({ id: expect.any(String), name: 'format check', scopes: ['search'], expires_at: null });
      expect(created.key.startsWith(created.prefix)).toBe(true);
      expect(created.prefix.length).toBeLessThan(created.key.length - 16);
      const another = await createKey({ scopes: ['search'] });
      expect(another.key).not.toBe(created.key);

      const items = await listKeys();
      const listed = items.find((item) => item.id === created.id)!;
      expect(listed).toMatchObject({ prefix: created.prefix, name: 'format check' });
      for (const item of items) {
        expect(item).not.toHaveProperty('key');
        expect(item).not.toHaveProperty('key_hash');
        expect(JSON.stringify(item)).not.toContain(created.key);
      }
      const again = await stack.operator('get', `/api/admin/api-keys?limit=100`, tenant.id).expect(200);
      expect(JSON.stringify(again.body)).not.toContain(created.key.slice(created.prefix.length));

      const row = await stack.sql((db) => db('api_keys').where({ id: created.id }).first());
      expect(row.key_hash).toBe(createHash('sha256').update(created.key, 'utf8').digest('hex'));
      for (const [column, value] of Object.entries(row as Record<string, unknown>)) {
        if (value === null || value === undefined) continue;
        expect({ column, contains: JSON.stringify(value).includes(created.key) }).toEqual({ column, contains: false });
        expect({ column, contains: JSON.stringify(value).includes(created.key.slice(created.prefix.length)) }).toEqual({ column, contains: false });
      }
      // No table anywhere holds the key, in any column, for any tenant.
      await stack.sql(async (db) => {
        const tables = await db('information_schema.tables').select('table_name').where({ table_schema: 'public', table_type: 'BASE TABLE' });
        expect(tables.length).toBeGreaterThan(1);
        for (const { table_name: table } of tables as Array<{ table_name: string }>) {
          const hits = await db.raw(`select count(*)::int as n from ?? t where t::text like ?`, [table, `%${created.key.slice(created.prefix.length)}%`]);
          expect({ table, rows: hits.rows[0].n }).toEqual({ table, rows: 0 });
        }
      });
    });
  });

  describe('operator acting on a tenant', () => {
    it('requires X-Tenant-Id on a tenant-scoped route', async () => {
      const response = await stack.operator('get', '/api/documents');
      expectError(response, 400, 'validation_failed');
      expect(response.body.error.message).toMatch(/X-Tenant-Id/);
    });

    it('answers 404 for an unknown tenant', async () => {
      expectError(await stack.operator('get', '/api/documents', 'no-such-tenant'), 404, 'not_found');
      expectError(await stack.operator('get', '/api/documents', '0190f5b2-0000-7000-8000-000000000000'), 404, 'not_found');
    });

    it('accepts the tenant by id or by slug', async () => {
      const created = await stack.operator('post', '/api/documents', tenant.slug).send({ title: 'By slug', content: 'Operator wrote this.' }).expect(202);
      const byId = await stack.operator('get', `/api/documents/${created.body.id}`, tenant.id).expect(200);
      expect(byId.body.title).toBe('By slug');
      const asTenant = await stack.as(tenant.key, 'get', `/api/documents/${created.body.id}`).expect(200);
      expect(asTenant.body.id).toBe(created.body.id);
      await stack.operator('delete', `/api/documents/${created.body.id}`, tenant.slug).expect(204);
    });
  });

  describe('suspension', () => {
    it("refuses a suspended tenant's keys with 403 tenant_suspended and lets them back on resume", async () => {
      const other = await stack.createTenant();
      await stack.as(other.key, 'get', '/api/documents').expect(200);
      const suspended = await stack.operator('post', `/api/admin/tenants/${other.id}/suspend`).expect(200);
      expect(suspended.body.status).toBe('suspended');
      expectError(await stack.as(other.key, 'get', '/api/documents'), 403, 'tenant_suspended');
      const write = await stack.as(other.key, 'post', '/api/documents').send({ title: 'x', content: 'while suspended' });
      expectError(write, 403, 'tenant_suspended');
      // Other tenants are untouched.
      await stack.as(tenant.key, 'get', '/api/documents').expect(200);

      const resumed = await stack.operator('post', `/api/admin/tenants/${other.slug}/resume`).expect(200);
      expect(resumed.body.status).toBe('active');
      const listed = await stack.as(other.key, 'get', '/api/documents').expect(200);
      expect(listed.body.items).toEqual([]);
    });
  });
});
