import fc from 'fast-check';
import type { Knex } from 'knex';
import pg from 'pg';
import { connectToServer } from '../../src/db/database';
import { sqlLiteral, withLiterals } from '../../src/db/literal';
import { queryAsTenant, withTenant } from '../../src/db/tenant-scope';
import { prepareSearch, runStatement, search, type SearchRequest, type SearchStatement } from '../../src/domain/search/search';
import { startStack, type TestStack } from '../helpers/harness';

// How a search statement reaches PostgreSQL (docs/search.md, "Cost of a
// search"): one round trip — the tenant's scope and the statement's own
// settings set in the same query string, gone with it, even when it fails —
// and the values written in as literals that mean exactly what the bound
// values meant, whatever they hold.

jest.setTimeout(120_000);

const GENERAL_BOUND_MS = 30_000;
const SEARCH_BOUND_MS = 4_000;

/** Values that would break a statement if written in carelessly. */
const AWKWARD = {
  title: "O'Brien's notes on paths",
  content_type: 'markdown',
  content:
    "# Quoting\n\nO'Brien's notes: the path C:\\temp\\new and the pattern a\\?b; what? $1 :name $$ dollars $$ -- not a comment /* nor this */ " +
    "naïve café 日本語 🚀. Compost goes on the beds.",
  tags: ["it's", 'back\\slash', '{braces,comma}', '"quoted"', 'q?', "');drop table chunks;--"],
};

const QUERIES = [
  "O'Brien's",
  'what?',
  'a\\?b',
  'C:\\temp',
  '\\',
  "\\'",
  "'",
  "''",
  "E'\\\\'",
  "'; drop table documents; --",
  "compost' OR '1'='1",
  '$1',
  '$$ dollars $$',
  '"the path" -pattern',
  '/* nor */',
  'naïve café 日本語 🚀',
  'compost',
];

describe('search statements on PostgreSQL', () => {
  let stack: TestStack;
  let tenant: { id: string; slug: string; key: string };
  let awkwardId: string;

  beforeAll(async () => {
    stack = await startStack({
      database: 'postgres',
      env: { DATABASE_STATEMENT_TIMEOUT_MS: String(GENERAL_BOUND_MS), SEARCH_STATEMENT_TIMEOUT_MS: String(SEARCH_BOUND_MS) },
    });
    tenant = await stack.createTenant();
    const awkward = await stack.as(tenant.key, 'post', '/api/documents').send(AWKWARD).expect(202);
    awkwardId = awkward.body.id;
    const plain = await stack.as(tenant.key, 'post', '/api/documents').send({ title: 'Compost', content: 'Spread compost over the raised beds.' }).expect(202);
    await stack.waitForDocument(tenant.key, awkwardId);
    await stack.waitForDocument(tenant.key, plain.body.id);
  });
  afterAll(async () => {
    await stack?.close();
  });

  /** A knex of one connection to the application's database, counting the round trips made on it (one ReadyForQuery each). */
  async function oneConnection(): Promise<{ knex: Knex; roundTrips(): number; close(): Promise<void> }> {
    const knex = connectToServer(stack.env.DATABASE_URL, { poolMax: 1, statementTimeoutMs: GENERAL_BOUND_MS });
    const client = (await knex.client.acquireConnection()) as pg.Client & { connection: NodeJS.EventEmitter };
    let roundTrips = 0;
    client.connection.on('readyForQuery', () => {
      roundTrips += 1;
    });
    await knex.client.releaseConnection(client);
    return { knex, roundTrips: () => roundTrips, close: () => knex.destroy() };
  }

  /** What a connection holds of a search once it is over. */
  async function leftOn(knex: Knex): Promise<{ tenant: string; bound: string }> {
    return (await knex.raw(`select coalesce(current_setting('app.tenant_id', true), '') as tenant, current_setting('statement_timeout') as bound`)).rows[0];
  }
  const nothingLeft = { tenant: '', bound: `${GENERAL_BOUND_MS / 1000}s` };

  it('runs a search in one round trip, its scope and bound in force for the statement and gone after it', async () => {
    const probe = await oneConnection();
    try {
      const deps = { ...stack.platform.searchDeps(), db: probe.knex };
      const before = probe.roundTrips();
      const reply = await search(deps, tenant.id, { query: 'compost', mode: 'keyword', limit: 5 });
      expect(probe.roundTrips() - before).toBe(1);
      expect(reply.results.map((hit) => hit.title).sort()).toEqual(['Compost', AWKWARD.title].sort());
      expect(reply.results.every((hit) => hit.snippet.includes('<mark>'))).toBe(true);
      expect(await leftOn(probe.knex)).toEqual(nothingLeft);

      // Inside the statement: the tenant's scope and the search's own bound.
      const statement = await prepareSearch(deps, tenant.id, { query: 'compost', mode: 'keyword', limit: 5 });
      const inside = await runStatement<{ tenant: string; bound: string }>(probe.knex, tenant.id, {
        ...statement,
        sql: `select current_setting('app.tenant_id') as tenant, current_setting('statement_timeout') as bound`,
        bindings: [],
      });
      expect(inside).toEqual([{ tenant: tenant.id, bound: `${SEARCH_BOUND_MS / 1000}s` }]);
      expect(await leftOn(probe.knex)).toEqual(nothingLeft);
    } finally {
      await probe.close();
    }
  });

  it('leaves nothing behind when the statement fails or runs out of time', async () => {
    const probe = await oneConnection();
    try {
      const settings: SearchStatement['settings'] = [['statement_timeout', '50']];
      const failed = await runStatement(probe.knex, tenant.id, { sql: 'select 1 / 0', bindings: [], settings }).catch((error: unknown) => error);
      expect(failed).toMatchObject({ code: '22012' });
      expect(await leftOn(probe.knex)).toEqual(nothingLeft);
      const stopped = await runStatement(probe.knex, tenant.id, { sql: 'select pg_sleep(5)', bindings: [], settings }).catch((error: unknown) => error);
      expect(stopped).toMatchObject({ status: 503, code: 'search_timeout', details: { timeout_ms: 50 } });
      expect(await leftOn(probe.knex)).toEqual(nothingLeft);
    } finally {
      await probe.close();
    }
  });

  it('writes hostile values in as literals that find what the bound values found', async () => {
    const deps = stack.platform.searchDeps();
    // The reference: the same statement with its values bound, in a transaction of its own.
    const bound = (statement: SearchStatement) =>
      withTenant(deps.db, tenant.id, async (trx) => {
        for (const [name, value] of statement.settings) await trx.raw('select set_config(?, ?, true)', [name, value]);
        return (await trx.raw(statement.sql, statement.bindings)).rows;
      });
    const requests: SearchRequest[] = [
      ...QUERIES.map((query) => ({ query, mode: 'keyword' as const, limit: 10 })),
      ...AWKWARD.tags.map((tag) => ({ query: 'compost', mode: 'keyword' as const, limit: 10, filters: { tags: [tag] } })),
      { query: 'compost', mode: 'keyword', limit: 10, filters: { tags: AWKWARD.tags, content_type: 'markdown', created_from: '2001-01-01T00:00:00Z' } },
    ];
    let found = 0;
    for (const request of requests) {
      const statement = await prepareSearch(deps, tenant.id, request);
      const rows = await runStatement(deps.db, tenant.id, statement);
      expect({ request, rows }).toEqual({ request, rows: await bound(statement) });
      if (rows.some((row) => row.document_id === awkwardId)) found += 1;
    }
    // They matched, not merely failed alike: every filter and several of the queries find the awkward document.
    expect(found).toBeGreaterThanOrEqual(AWKWARD.tags.length + 1 + 4);
    const counts = await stack.sql(async (db) => (await db.raw('select (select count(*) from documents) as documents, (select count(*) from chunks) as chunks')).rows[0]);
    expect(counts).toEqual({ documents: 2, chunks: 2 });
  });

  it('reads back every literal as the value it was made from, whatever standard_conforming_strings says', async () => {
    const client = new pg.Client({ connectionString: stack.env.DATABASE_URL });
    await client.connect();
    try {
      for (const conforming of ['on', 'off']) {
        await client.query(`set standard_conforming_strings = ${conforming}`);
        // escape_string_warning would only add notices for the E'' strings.
        await client.query('set escape_string_warning = off');
        const same = async (literal: string, value: unknown, type: string) =>
          (await client.query(`select (${literal})::${type} is not distinct from $1::${type} as same`, [value])).rows[0].same;
        await fc.assert(
          fc.asyncProperty(fc.string({ unit: 'binary', maxLength: 40 }).filter((text) => !text.includes('\u0000')), async (text) => {
            expect(await same(sqlLiteral(text), text, 'text')).toBe(true);
          }),
          { numRuns: 300 },
        );
        await fc.assert(
          fc.asyncProperty(fc.array(fc.string({ unit: 'grapheme', maxLength: 12 }).filter((text) => !text.includes('\u0000')), { maxLength: 5 }), async (tags) => {
            expect(await same(sqlLiteral(tags), tags, 'text[]')).toBe(true);
          }),
          { numRuns: 100 },
        );
        await fc.assert(
          fc.asyncProperty(fc.double({ noNaN: true, noDefaultInfinity: true }), async (number) => {
            expect(await same(sqlLiteral(number), number, 'float8')).toBe(true);
          }),
          { numRuns: 100 },
        );
        for (const text of [...QUERIES, ...AWKWARD.tags]) expect(await same(sqlLiteral(text), text, 'text')).toBe(true);
      }
    } finally {
      await client.end();
    }
  });

  it('refuses what it cannot write safely', async () => {
    expect(() => sqlLiteral('comp\u0000ost')).toThrow(/NUL/);
    expect(() => sqlLiteral(Number.NaN)).toThrow(/finite/);
    expect(() => withLiterals('select ?, ?', ['one'])).toThrow(/2 placeholders for 1 values/);
    // Inside another transaction the settings would outlive the statement.
    await expect(withTenant(stack.platform.db.knex, tenant.id, (trx) => queryAsTenant(trx, tenant.id, 'select 1'))).rejects.toThrow(/implicit transaction/);
  });
});
