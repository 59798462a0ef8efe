import pg from 'pg';
import { TENANT_TABLES } from '../../migrations/20261126000006_tenancy';
import { withTenant } from '../../src/db/tenant-scope';
import { LEAKPROOF_TEXT_MATCH } from '../../src/db/migrate';
import { aggregateSearchEvents } from '../../src/domain/analytics/aggregate';
import { prepareSearch } from '../../src/domain/search/search';
import { createTestDatabase, databaseUrl, OWNER_ROLE } from '../helpers/databases';
import { startStack, type TestStack } from '../helpers/harness';

type Seeded = { id: string; key: string; documentId: string };

/** Runs statements on one connection, inside one transaction acting for `tenantId` (or for nobody), then rolls back. */
async function asRole(url: string, tenantId: string | null, work: (client: pg.Client) => Promise<void>): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query('begin');
    if (tenantId) await client.query(`select set_config('app.tenant_id', $1, true)`, [tenantId]);
    await work(client);
  } finally {
    await client.query('rollback').catch(() => undefined);
    await client.end();
  }
}

const count = async (client: pg.Client, table: string, where = 'true', values: unknown[] = []) =>
  Number((await client.query(`select count(*)::int as n from ${table} where ${where}`, values)).rows[0].n);

/** The SQLSTATE a statement fails with, or null when it succeeds (in a savepoint, so the transaction goes on). */
async function failureOf(client: pg.Client, sql: string, values: unknown[]): Promise<string | null> {
  await client.query('savepoint attempt');
  try {
    await client.query(sql, values);
    await client.query('release savepoint attempt');
    return null;
  } catch (error) {
    await client.query('rollback to savepoint attempt');
    return (error as { code?: string }).code ?? 'unknown';
  }
}

/**
 * Gives the tenant 5,000 chunks in which a query word is rare, and fresh
 * statistics: the shape in which a GIN lookup beats reading every chunk of
 * the tenant, so the planner takes it whenever it may.
 */
async function plantChunks(stack: TestStack, tenantKey: string, ownerUrl: string): Promise<void> {
  const document = await stack.as(tenantKey, 'post', '/api/documents').send({ title: 'Many chunks', content: 'planted' }).expect(202);
  await stack.sql((db) =>
    db.raw(
      `insert into chunks (id, tenant_id, document_id, document_version, ordinal, content, char_start, char_end, tsv)
       select gen_random_uuid(), d.tenant_id, d.id, 1, g, 'word' || (g % 500), 0, 1, to_tsvector('english', 'word' || (g % 500) || ' filler text')
         from documents d, generate_series(1, 5000) g where d.id = ?`,
      [document.body.id],
    ),
  );
  const owner = new pg.Client({ connectionString: ownerUrl });
  await owner.connect();
  try {
    await owner.query('analyze chunks');
  } finally {
    await owner.end();
  }
}

/** The plan of a real keyword search for a rare word, as the application role runs it. */
async function keywordPlan(stack: TestStack, tenantId: string): Promise<string> {
  const statement = await prepareSearch(stack.platform.searchDeps(), tenantId, { query: 'word7', mode: 'keyword', limit: 5 });
  return withTenant(stack.platform.db.knex, tenantId, async (trx) => {
    for (const [name, value] of statement.settings) await trx.raw('select set_config(?, ?, true)', [name, value]);
    const rows: Array<Record<string, string>> = (await trx.raw(`explain ${statement.sql}`, statement.bindings)).rows;
    return rows.map((row) => Object.values(row)[0]).join('\n');
  });
}

describe('row-level security (postgres, production roles: a non-superuser owner migrates, the application role serves)', () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  let stack: TestStack;
  let a: Seeded;
  let b: Seeded;

  async function seed(): Promise<Seeded> {
    const tenant = await stack.createTenant();
    const document = await stack.as(tenant.key, 'post', '/api/documents').send({ title: 'Harbour', content: 'The harbour master keeps the tide tables.' }).expect(202);
    await stack.waitForDocument(tenant.key, document.body.id);
    await stack.as(tenant.key, 'post', '/api/search').send({ query: 'tide tables', mode: 'keyword' }).expect(200);
    return { ...tenant, documentId: document.body.id };
  }

  beforeAll(async () => {
    database = await createTestDatabase({ ownedByOwnerRole: true });
    stack = await startStack({ database: 'postgres', env: { DATABASE_URL: database.applicationUrl, MIGRATION_DATABASE_URL: database.url } });
    a = await seed();
    b = await seed();
    // The analytics tick moves search events into PostgreSQL; no scheduler runs here, so run it now.
    await aggregateSearchEvents(stack.platform.db.knex, stack.platform.redis, stack.config.QUEUE_PREFIX, 'rls-test');
  });
  afterAll(async () => {
    await stack?.close();
    await database?.drop();
  });

  it('reports the application role as held by the policies', () => {
    expect(stack.platform.rowLevelSecurity).toEqual({ enforced: true, role: 'ragworks_test_app' });
  });

  it('puts ENABLE, FORCE and both policies on every table that has a tenant_id column', async () => {
    const owner = new pg.Client({ connectionString: database.url });
    await owner.connect();
    try {
      const withTenantColumn = (
        await owner.query(`select table_name from information_schema.columns where table_schema = 'public' and column_name = 'tenant_id' order by 1`)
      ).rows.map((row) => row.table_name);
      expect(withTenantColumn).toEqual(expect.arrayContaining([...TENANT_TABLES]));
      for (const table of withTenantColumn) {
        const { rows } = await owner.query(
          `select c.relrowsecurity as enabled, c.relforcerowsecurity as forced, array_agg(p.polname::text order by p.polname) as policies
             from pg_class c left join pg_policy p on p.polrelid = c.oid where c.relname = $1 group by 1, 2`,
          [table],
        );
        expect({ table, ...rows[0] }).toEqual({ table, enabled: true, forced: true, policies: ['maintenance', 'tenant_isolation'] });
      }
    } finally {
      await owner.end();
    }
  });

  it('shows nothing to the application role when no tenant is set, though every table holds rows', async () => {
    const populated = ['api_keys', 'documents', 'chunks', 'index_jobs', 'index_job_items', 'webhook_events', 'search_events', 'tenant_usage'];
    const seen = await stack.sql(async (db) => {
      const counts: Record<string, number> = {};
      for (const table of populated) counts[table] = Number((await db(table).count('* as n').first())?.n);
      return counts;
    });
    for (const table of populated) expect({ table, rows: seen[table] > 0 }).toEqual({ table, rows: true });
    await asRole(database.applicationUrl, null, async (client) => {
      for (const table of TENANT_TABLES) expect({ table, rows: await count(client, table) }).toEqual({ table, rows: 0 });
    });
    // The application's own connection pool, outside any scope, sees the same nothing.
    expect(Number((await stack.platform.db.knex('documents').count('* as n').first())?.n)).toBe(0);
  });

  it('shows nothing to the table owner either without a tenant: FORCE holds the owner to the policies', async () => {
    const owner = new pg.Client({ connectionString: database.url });
    await owner.connect();
    try {
      expect((await owner.query('select current_user as role')).rows[0].role).toBe(OWNER_ROLE);
      expect(await count(owner, 'documents')).toBe(0);
      expect(await count(owner, 'api_keys')).toBe(0);
    } finally {
      await owner.end();
    }
  });

  it('lets tenant A read, change and delete only its own rows, and insert none for B', async () => {
    await asRole(database.applicationUrl, a.id, async (client) => {
      expect(await count(client, 'documents')).toBe(1);
      expect(await count(client, 'documents', 'id = $1', [b.documentId])).toBe(0);
      expect(await count(client, 'chunks', 'document_id = $1', [b.documentId])).toBe(0);
      expect(await count(client, 'api_keys', 'tenant_id = $1', [b.id])).toBe(0);
      expect(await count(client, 'search_events', 'tenant_id = $1', [b.id])).toBe(0);

      expect((await client.query(`update documents set title = 'taken' where id = $1`, [b.documentId])).rowCount).toBe(0);
      expect((await client.query(`delete from documents where id = $1`, [b.documentId])).rowCount).toBe(0);
      expect((await client.query(`update api_keys set revoked_at = now() where tenant_id = $1`, [b.id])).rowCount).toBe(0);
      expect((await client.query(`update documents set title = 'mine' where id = $1`, [a.documentId])).rowCount).toBe(1);

      // 42501: new row violates row-level security policy.
      expect(
        await failureOf(
          client,
          `insert into documents (id, tenant_id, title, content, content_type, status, content_bytes) values (gen_random_uuid(), $1, 'planted', 'x', 'text', 'queued', 1)`,
          [b.id],
        ),
      ).toBe('42501');
      expect(await failureOf(client, `update documents set tenant_id = $1 where id = $2`, [b.id, a.documentId])).toBe('42501');
      expect(await failureOf(client, `insert into webhook_endpoints (id, tenant_id, url, secret) values (gen_random_uuid(), $1, 'https://example.com/x', 's')`, [b.id])).toBe('42501');
    });
    // B's rows are untouched.
    const document = await stack.as(b.key, 'get', `/api/documents/${b.documentId}`).expect(200);
    expect(document.body.title).toBe('Harbour');
  });

  it('keeps keyword search on its GIN index under the policies once ts_match_vq is LEAKPROOF (a superuser step the non-superuser owner cannot take)', async () => {
    await plantChunks(stack, a.key, database.url);
    expect(await keywordPlan(stack, a.id)).not.toContain('chunks_tsv_gin');
    const admin = new pg.Client({ connectionString: databaseUrl(database.name) });
    await admin.connect();
    try {
      await admin.query(LEAKPROOF_TEXT_MATCH);
    } finally {
      await admin.end();
    }
    expect(await keywordPlan(stack, a.id)).toContain('Bitmap Index Scan on chunks_tsv_gin');
  });

  it('scopes the application code the same way: withTenant sees one tenant', async () => {
    const titles = await withTenant(stack.platform.db.knex, a.id, (trx) => trx('documents').pluck('tenant_id'));
    expect(new Set(titles)).toEqual(new Set([a.id]));
  });
});

describe('row-level security on the embedded database (PGlite)', () => {
  let stack: TestStack;

  beforeAll(async () => {
    stack = await startStack({ database: 'pglite', workers: false });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('switches its session to the application role and hides rows outside a tenant scope', async () => {
    expect(stack.platform.rowLevelSecurity).toEqual({ enforced: true, role: 'ragworks_app' });
    const a = await stack.createTenant();
    const b = await stack.createTenant();
    await stack.as(a.key, 'post', '/api/documents').send({ title: 'A', content: 'alpha' }).expect(202);
    await stack.as(b.key, 'post', '/api/documents').send({ title: 'B', content: 'beta' }).expect(202);
    expect(Number((await stack.platform.db.knex('documents').count('* as n').first())?.n)).toBe(0);
    const seenByA = await withTenant(stack.platform.db.knex, a.id, (trx) => trx('documents').pluck('title'));
    expect(seenByA).toEqual(['A']);
    const planted = await withTenant(stack.platform.db.knex, a.id, (trx) =>
      trx('documents').insert({ id: '0195f1f0-0000-7000-8000-000000000001', tenant_id: b.id, title: 'x', content: 'x', content_type: 'text', status: 'queued', content_bytes: 1 }),
    ).then(
      () => null,
      (error: { code?: string }) => error.code,
    );
    expect(planted).toBe('42501');
    // Migrated as the superuser, it made the text match LEAKPROOF, so keyword search may keep its index.
    const { rows } = await stack.platform.db.knex.raw(`select proleakproof from pg_proc where oid = 'pg_catalog.ts_match_vq(tsvector, tsquery)'::regprocedure`);
    expect(rows[0].proleakproof).toBe(true);
  });
});

describe('keyword search under row-level security (postgres, migrated by a superuser)', () => {
  let stack: TestStack;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', workers: false });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('uses the GIN index as the application role', async () => {
    expect(stack.platform.rowLevelSecurity.enforced).toBe(true);
    const tenant = await stack.createTenant();
    await plantChunks(stack, tenant.key, stack.env.MIGRATION_DATABASE_URL);
    expect(await keywordPlan(stack, tenant.id)).toContain('Bitmap Index Scan on chunks_tsv_gin');
  });
});
