import pg from 'pg';
import { createTestDatabase } from '../helpers/databases';
import { startStack, type TestStack } from '../helpers/harness';

// Typo tolerance per docs/search.md#typos: a keyword or hybrid search whose
// words match no chunk is retried with each word that matches nothing replaced
// by the closest word of the tenant's own vocabulary, and says so in
// `did_you_mean`; on both databases.

interface SearchReply {
  results: Array<{ document_id: string; title: string }>;
  query: string;
  did_you_mean: string | null;
  cached: boolean;
}

const DOCUMENTS = [
  { title: 'Streaming replication', content: 'A standby server follows the primary through streaming replication of the write-ahead log.' },
  { title: 'Lantern care', content: 'Trim the lantern wick and polish the lantern glass before the festival.' },
  { title: 'Kubernetes operators', content: 'An operator reconciles the desired state of a Kubernetes deployment.' },
];

async function search(stack: TestStack, key: string, body: Record<string, unknown>): Promise<SearchReply> {
  const reply = await stack.as(key, 'post', '/api/search').send(body);
  if (reply.status !== 200) throw new Error(`search answered ${reply.status}: ${JSON.stringify(reply.body)}`);
  return reply.body as SearchReply;
}

const titles = (reply: SearchReply) => reply.results.map((hit) => hit.title);

describe.each(['postgres', 'pglite'] as const)('typo tolerance on %s', (database) => {
  let stack: TestStack;
  let tenant: { id: string; key: string };

  beforeAll(async () => {
    stack = await startStack({ database });
    tenant = await stack.createTenant();
    await stack.indexDocuments(tenant.key, DOCUMENTS);
  });

  afterAll(async () => {
    await stack?.close();
  });

  it('corrects a misspelt word in a keyword search, answers with the corrected results and says did_you_mean', async () => {
    const reply = await search(stack, tenant.key, { query: 'streaming replicaton', mode: 'keyword' });
    expect({ query: reply.query, did_you_mean: reply.did_you_mean, titles: titles(reply) }).toEqual({
      query: 'streaming replicaton',
      did_you_mean: 'streaming replication',
      titles: ['Streaming replication'],
    });
  });

  it('counts a transposition as one typo, and allows two in a long word', async () => {
    expect((await search(stack, tenant.key, { query: 'lantren', mode: 'keyword' })).did_you_mean).toBe('lantern');
    const twice = await search(stack, tenant.key, { query: 'Kubrenetis', mode: 'keyword' });
    expect({ did_you_mean: twice.did_you_mean, titles: titles(twice) }).toEqual({ did_you_mean: 'kubernetes', titles: ['Kubernetes operators'] });
  });

  it('leaves a query whose words match alone: did_you_mean is null', async () => {
    const reply = await search(stack, tenant.key, { query: 'lantern wick', mode: 'keyword' });
    expect({ did_you_mean: reply.did_you_mean, titles: titles(reply) }).toEqual({ did_you_mean: null, titles: ['Lantern care'] });
  });

  it('does not correct a word too far from every word it knows, nor a short one', async () => {
    expect(await search(stack, tenant.key, { query: 'zygomorphic', mode: 'keyword' })).toMatchObject({ did_you_mean: null, results: [] });
    // "wik" is one letter from "wick", but three letters are too few to guess from.
    expect(await search(stack, tenant.key, { query: 'wik', mode: 'keyword' })).toMatchObject({ did_you_mean: null, results: [] });
  });

  it('typo_tolerance: false searches the words as written, in the body and in the query string', async () => {
    expect(await search(stack, tenant.key, { query: 'streaming replicaton', mode: 'keyword', typo_tolerance: false })).toMatchObject({
      did_you_mean: null,
      results: [],
    });
    const byQueryString = await stack.as(tenant.key, 'get', '/api/search?q=lantren&mode=keyword&typo_tolerance=false').expect(200);
    expect({ did_you_mean: byQueryString.body.did_you_mean, results: byQueryString.body.results }).toEqual({ did_you_mean: null, results: [] });
    const tolerant = await stack.as(tenant.key, 'get', '/api/search?q=lantren&mode=keyword').expect(200);
    expect(tolerant.body.did_you_mean).toBe('lantern');
    const refused = await stack.as(tenant.key, 'post', '/api/search').send({ query: 'lantern', typo_tolerance: 'yes' });
    expect({ status: refused.status, code: refused.body.error.code }).toEqual({ status: 400, code: 'validation_failed' });
  });

  it('answers a corrected search again from the cache, with its did_you_mean', async () => {
    const body = { query: 'polish the lanturn', mode: 'keyword' };
    const first = await search(stack, tenant.key, body);
    const second = await search(stack, tenant.key, body);
    expect([first.cached, second.cached, second.did_you_mean, titles(second)]).toEqual([false, true, 'polish the lantern', ['Lantern care']]);
  });

  it("proposes only the tenant's own words", async () => {
    const other = await stack.createTenant();
    await stack.indexDocuments(other.key, [{ title: 'Saffron', content: 'Saffron threads are picked by hand at dawn.' }]);
    expect((await search(stack, other.key, { query: 'safron', mode: 'keyword' })).did_you_mean).toBe('saffron');
    expect(await search(stack, tenant.key, { query: 'safron', mode: 'keyword' })).toMatchObject({ did_you_mean: null, results: [] });
    // And the other tenant never hears of lanterns.
    expect(await search(stack, other.key, { query: 'lantren', mode: 'keyword' })).toMatchObject({ did_you_mean: null, results: [] });
  });

  it('learns the words of documents indexed later, and offers no word whose documents are gone', async () => {
    const fresh = await stack.createTenant();
    const [zeppelin] = await stack.indexDocuments(fresh.key, [{ title: 'Airships', content: 'The zeppelin floated over the harbour.' }]);
    expect((await search(stack, fresh.key, { query: 'zepelin', mode: 'keyword' })).did_you_mean).toBe('zeppelin');
    await stack.as(fresh.key, 'delete', `/api/documents/${zeppelin}`).expect(204);
    expect(await search(stack, fresh.key, { query: 'zepelin', mode: 'keyword' })).toMatchObject({ did_you_mean: null, results: [] });
  });
});

// Hybrid search needs pgvector, which the embedded database has and this machine's PostgreSQL lacks.
describe('typo tolerance in hybrid search (PGlite, with pgvector)', () => {
  let stack: TestStack;

  afterAll(async () => {
    await stack?.close();
  });

  it('corrects in hybrid mode too: the keyword side finds the document by the corrected word', async () => {
    stack = await startStack({ database: 'pglite' });
    const tenant = await stack.createTenant();
    await stack.indexDocuments(tenant.key, DOCUMENTS);
    const reply = await search(stack, tenant.key, { query: 'standbye', mode: 'hybrid' });
    expect({ did_you_mean: reply.did_you_mean, first: titles(reply)[0] }).toEqual({ did_you_mean: 'standby', first: 'Streaming replication' });
    // Semantic search matches by meaning: no typo pass.
    expect((await search(stack, tenant.key, { query: 'standbye', mode: 'semantic' })).did_you_mean).toBeNull();
  });
});

describe('typo tolerance after upgrading a database that already holds documents', () => {
  it("fills each tenant's vocabulary from the chunks indexed before the migration", async () => {
    const database = await createTestDatabase();
    const env = { DATABASE_URL: database.applicationUrl, MIGRATION_DATABASE_URL: database.url };
    let stack: TestStack | undefined;
    try {
      stack = await startStack({ database: 'postgres', env });
      const tenant = await stack.createTenant();
      await stack.indexDocuments(tenant.key, DOCUMENTS);
      await stack.close();
      stack = undefined;

      // Back to the schema before the vocabulary: as if these documents had been indexed by the previous release.
      const owner = new pg.Client({ connectionString: database.url });
      await owner.connect();
      try {
        await owner.query('drop table search_terms');
        await owner.query(`delete from knex_migrations where name = '20261204000012_search_terms'`);
      } finally {
        await owner.end();
      }

      stack = await startStack({ database: 'postgres', env });
      const reply = await search(stack, tenant.key, { query: 'kubernetis operater', mode: 'keyword' });
      expect({ did_you_mean: reply.did_you_mean, titles: titles(reply) }).toEqual({ did_you_mean: 'kubernetes operator', titles: ['Kubernetes operators'] });
    } finally {
      await stack?.close();
      await database.drop();
    }
  });
});
