import { withTenant } from '../../src/db/tenant-scope';
import { embedText } from '../../src/domain/embeddings/hashing';
import { prepareSearch, runStatement, type SearchRequest, type SearchStatement } from '../../src/domain/search/search';
import { startStack, type TestStack } from '../helpers/harness';
import { waitFor } from '../helpers/wait';

// Search per docs/search.md: keyword, semantic and hybrid ranking, filters, the GET
// form, tenant isolation (including a small tenant beside a big one on the
// approximate index), hostile input, and a PostgreSQL without pgvector.

type Mode = 'keyword' | 'semantic' | 'hybrid';

interface Hit {
  document_id: string;
  chunk_id: string;
  title: string;
  content: string;
  snippet: string;
  heading: string | null;
  score: number;
  tags: string[];
  content_type: string;
  source_url: string | null;
  created_at: string;
}

interface SearchReply {
  results: Hit[];
  total_results: number;
  mode: Mode;
  query: string;
  took_ms: number;
  cached: boolean;
}

interface DocumentInput {
  title: string;
  content: string;
  content_type?: 'markdown' | 'text' | 'code' | 'html';
  tags?: string[];
  source_url?: string;
}

interface CreatedDocument {
  id: string;
  title: string;
  created_at: string;
  job_id: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Posts documents through the batch endpoint and waits until the batch's index job has finished. */
async function seed(stack: TestStack, key: string, documents: DocumentInput[]): Promise<CreatedDocument[]> {
  const created: CreatedDocument[] = [];
  for (let start = 0; start < documents.length; start += 1000) {
    const reply = await stack.as(key, 'post', '/api/documents/batch').send({ documents: documents.slice(start, start + 1000) }).expect(202);
    const jobId: string = reply.body.job_id;
    await waitFor(
      async () => {
        const job = await stack.as(key, 'get', `/api/index/jobs/${jobId}`).expect(200);
        if (job.body.status === 'failed' || job.body.status === 'canceled') throw new Error(`index job ${job.body.status}: ${job.body.error}`);
        return job.body.status === 'completed' && job.body.documents_completed === job.body.documents_total;
      },
      { timeoutMs: 45_000, intervalMs: 100, what: `index job ${jobId} to complete` },
    );
    created.push(...(reply.body.items as CreatedDocument[]));
  }
  return created;
}

async function searchAs(stack: TestStack, key: string, body: Record<string, unknown>): Promise<SearchReply> {
  const reply = await stack.as(key, 'post', '/api/search').send(body);
  if (reply.status !== 200) throw new Error(`search ${JSON.stringify(body)} answered ${reply.status}: ${JSON.stringify(reply.body)}`);
  return reply.body as SearchReply;
}

const documentIds = (reply: SearchReply) => reply.results.map((hit) => hit.document_id);
const sorted = (ids: Iterable<string>) => [...ids].sort();
const uniqueSorted = (ids: Iterable<string>) => sorted(new Set(ids));

function cosine(a: number[], b: number[]): number {
  let dot = 0;
  for (let i = 0; i < a.length; i++) dot += a[i] * b[i];
  return dot; // both are L2-normalised
}

function expectDescending(reply: SearchReply): void {
  for (let i = 1; i < reply.results.length; i++) expect(reply.results[i - 1].score).toBeGreaterThanOrEqual(reply.results[i].score);
}

// The main corpus: one topic per document. Every document mentions
// "handbook" once so that a keyword search can reach all of them when
// filters are checked. Overlaps are deliberate and noted.
const CORPUS = {
  garden: {
    title: 'Compost for raised beds',
    // "compost" here once in the title and once in the body; "cast" and "iron" appear, but not as the phrase.
    content:
      '# Raised beds\n\nSpread a layer of compost over the raised beds every spring. Tomatoes and runner beans thrive when the soil drains well. ' +
      'Cast the wildflower seeds thinly along the borders. Pale yellow leaves often point to iron deficiency in the soil. Part of the household handbook.',
    tags: ['outdoors', 'plants'],
    source_url: 'https://example.com/garden/compost',
  },
  baking: {
    title: 'Sourdough bread at home',
    // "compost" three times, only in the body: more occurrences than the garden page, but no title match.
    content:
      '# Starter\n\nFeed the sourdough starter with rye flour and water every morning. Bake the loaf in a preheated cast iron skillet with the lid on. ' +
      'Scraps of dough and eggshells go to the compost; the compost bin sits by the back door, and the finished compost feeds the herb pots. Part of the household handbook.',
    tags: ['kitchen', 'bread'],
  },
  sailing: {
    title: 'Reefing the mainsail',
    content:
      '# Heavy weather\n\nWhen the wind rises above twenty knots, reef the mainsail early and ease the mainsheet. Keep the boat close hauled, ' +
      'tie the reef points with a square knot, and drop the anchor in sand rather than weed. Part of the household handbook.',
    tags: ['outdoors', 'water'],
  },
  databases: {
    title: 'Indexing a PostgreSQL table',
    content:
      '# Query planning\n\nA btree index speeds up equality and range predicates. Run vacuum and analyze so the planner has fresh statistics, ' +
      'and read the explain output to see whether a sequential scan or an index scan was chosen. Part of the household handbook.',
    tags: ['tech'],
  },
  astronomy: {
    title: 'Observing the moons of Jupiter',
    content:
      '# Telescope\n\nOn a clear night a small refracting telescope shows the four Galilean moons lined up beside the planet. ' +
      'Let the eyepiece cool and track the moons over several nights. Part of the household handbook.',
    tags: ['science'],
  },
  bees: {
    title: 'Hive inspections',
    content:
      '# Brood frames\n\nLight the smoker, open the hive gently and lift each brood frame to look for the queen, capped honey and signs of varroa mites. ' +
      'Part of the household handbook.',
    tags: ['outdoors', 'animals'],
  },
  cycling: {
    title: 'Fixing a flat tyre',
    content:
      'Lever the tyre off the rim, find the puncture by pumping the inner tube under water, roughen the rubber, glue the patch and wait before reinflating. ' +
      'Part of the household handbook.',
    content_type: 'text' as const,
    tags: ['outdoors', 'bikes'],
  },
  code: {
    title: 'Binary search in TypeScript',
    content:
      '// Part of the household handbook.\nexport function binarySearch(values: number[], target: number): number {\n  let low = 0;\n  let high = values.length - 1;\n' +
      '  while (low <= high) {\n    const middle = (low + high) >> 1;\n    if (values[middle] === target) return middle;\n' +
      '    if (values[middle] < target) low = middle + 1;\n    else high = middle - 1;\n  }\n  return -1;\n}\n',
    content_type: 'code' as const,
    tags: ['tech'],
  },
  chess: {
    title: 'Opening principles in chess',
    content:
      '# Development\n\nControl the centre with pawns, develop knights before bishops, castle early and do not move the queen out too soon. ' +
      'Part of the household handbook.',
    tags: ['games'],
  },
  coffee: {
    title: 'Pour-over coffee',
    content:
      '# Brewing\n\nGrind the beans medium fine, rinse the paper filter, bloom the grounds for thirty seconds and pour in slow spirals. ' +
      'Part of the household handbook.',
    tags: ['kitchen'],
  },
} satisfies Record<string, DocumentInput>;
type Topic = keyof typeof CORPUS;

// Added after the main corpus, so a time between the two separates them.
const LATE_DOCUMENT: DocumentInput = {
  title: 'Knitting a wool scarf',
  content: '# Casting on\n\nCast on forty stitches with chunky wool, knit every row in garter stitch and block the scarf when done. Part of the household handbook.',
  tags: ['crafts'],
};

// The small-tenant case: BIG's documents are near-copies of the query,
// SMALL's are near-copies of BIG's content with a few more words, so every
// one of BIG's chunks is nearer the query than any of SMALL's. A search that
// took the nearest chunks of all tenants and then filtered by tenant would
// leave SMALL with nothing.
const HARBOUR = 'Harbour pilot notes: approach the breakwater at slack tide, keep the green buoy to starboard and call the harbour master on channel twelve.';
// More than the 100 candidates a search takes (and the HNSW ef_search it sets), so those can all be BIG's.
const BIG_DOCUMENTS = 160;
const bigDocument = (i: number): DocumentInput => ({ title: 'Harbour pilot notes', content: `${HARBOUR} Entry ${i}.` });
const SMALL_DOCUMENTS: DocumentInput[] = [
  { title: 'Harbour pilot notes, winter', content: `${HARBOUR} In winter the ferry schedule changes and the fuel dock closes early on Sundays.` },
  { title: 'Harbour pilot notes, fog', content: `${HARBOUR} In fog sound the horn every two minutes and watch the radar for fishing boats.` },
  { title: 'Harbour pilot notes, regatta', content: `${HARBOUR} During the regatta the inner moorings are reserved for racing dinghies and their tenders.` },
];

/** BIG also holds three documents like SMALL's, tagged: a filter that leaves few of a big tenant's chunks must not starve either. */
const WINTER_TAG = 'winter-notes';

interface Crowd {
  big: { id: string; key: string };
  small: { id: string; key: string };
  smallIds: string[];
  bigTaggedIds: string[];
}

/**
 * SMALL asks for its top 3 by meaning and must get exactly its own 3
 * documents, although BIG holds over a hundred nearer chunks; BIG asking with a
 * tag filter that only 3 of its far documents pass must get those 3.
 */
async function expectSmallSetsServed(stack: TestStack): Promise<Crowd> {
  const big = await stack.createTenant();
  const small = await stack.createTenant();
  const bigCreated = await seed(stack, big.key, [
    ...Array.from({ length: BIG_DOCUMENTS }, (_, i) => bigDocument(i)),
    ...SMALL_DOCUMENTS.map((document) => ({ ...document, tags: [WINTER_TAG] })),
  ]);
  const bigIds = bigCreated.map((document) => document.id);
  const bigTaggedIds = bigIds.slice(BIG_DOCUMENTS);
  const smallIds = (await seed(stack, small.key, SMALL_DOCUMENTS)).map((document) => document.id);

  // The premise: BIG's 100th best chunk is still nearer than SMALL's best and
  // than BIG's own tagged ones, so "nearest 100, then filter" would find none of them.
  const bigTop = await searchAs(stack, big.key, { query: HARBOUR, mode: 'semantic', limit: 100 });
  expect(bigTop.results).toHaveLength(100);
  expect(documentIds(bigTop).filter((id) => bigTaggedIds.includes(id))).toEqual([]);
  const smallAll = await searchAs(stack, small.key, { query: HARBOUR, mode: 'semantic', limit: 100 });
  expect(sorted(documentIds(smallAll))).toEqual(sorted(smallIds));
  expect(bigTop.results[99].score).toBeGreaterThan(smallAll.results[0].score);

  for (const mode of ['semantic', 'hybrid'] as const) {
    const reply = await searchAs(stack, small.key, { query: HARBOUR, mode, limit: 3 });
    expect(sorted(documentIds(reply))).toEqual(sorted(smallIds));
    const filtered = await searchAs(stack, big.key, { query: HARBOUR, mode, limit: 3, filters: { tags: [WINTER_TAG] } });
    expect(sorted(documentIds(filtered))).toEqual(sorted(bigTaggedIds));
  }
  return { big, small, smallIds, bigTaggedIds };
}

/** The plan PostgreSQL chooses for a tenant's search statement, with the statement's session settings applied. */
async function explain(stack: TestStack, tenantId: string, statement: SearchStatement): Promise<string> {
  return withTenant(stack.platform.db.knex, tenantId, async (trx) => {
    for (const [name, value] of statement.settings) await trx.raw('select set_config(?, ?, true)', [name, value]);
    const rows: Array<Record<string, string>> = (await trx.raw(`explain ${statement.sql}`, statement.bindings)).rows;
    return rows.map((row) => Object.values(row)[0]).join('\n');
  });
}

describe('search on PGlite (pgvector)', () => {
  let stack: TestStack;
  let tenant: { id: string; slug: string; key: string };
  const ids = {} as Record<Topic, string>;
  const createdAt = {} as Record<Topic, string>;
  let lateId: string;
  let boundary: string;

  beforeAll(async () => {
    stack = await startStack({ database: 'pglite' });
    tenant = await stack.createTenant();
    const topics = Object.keys(CORPUS) as Topic[];
    const created = await seed(stack, tenant.key, topics.map((topic) => CORPUS[topic]));
    topics.forEach((topic, i) => {
      ids[topic] = created[i].id;
      createdAt[topic] = created[i].created_at;
    });
    // A few milliseconds on each side keep the boundary strictly between the two batches' timestamps.
    await new Promise((resolve) => setTimeout(resolve, 5));
    boundary = new Date().toISOString();
    await new Promise((resolve) => setTimeout(resolve, 5));
    [{ id: lateId }] = await seed(stack, tenant.key, [LATE_DOCUMENT]);
  });
  afterAll(async () => {
    await stack?.close();
  });

  const allIds = () => [...Object.values(ids), lateId];

  describe('keyword', () => {
    it('returns the documented fields, marks matched terms and measures itself', async () => {
      const reply = await searchAs(stack, tenant.key, { query: 'sourdough', mode: 'keyword' });
      expect(reply).toMatchObject({ mode: 'keyword', query: 'sourdough', cached: false, total_results: 1 });
      expect(reply.took_ms).toBeGreaterThan(0);
      expect(reply.results).toHaveLength(1);
      const [hit] = reply.results;
      expect(hit).toMatchObject({
        document_id: ids.baking,
        title: CORPUS.baking.title,
        tags: CORPUS.baking.tags,
        content_type: 'markdown',
        source_url: null,
        created_at: createdAt.baking,
      });
      expect(hit.chunk_id).toMatch(UUID);
      expect(hit.content).toContain('Feed the sourdough starter');
      expect(hit.score).toBeGreaterThan(0);
      expect(hit.snippet).toContain('<mark>sourdough</mark>');
      // Only the matched term is marked.
      expect(hit.snippet.replace(/<mark>sourdough<\/mark>/gi, '')).not.toContain('<mark>');

      const garden = await searchAs(stack, tenant.key, { query: 'raised beds', mode: 'keyword' });
      expect(garden.results[0]).toMatchObject({ document_id: ids.garden, source_url: CORPUS.garden.source_url, tags: ['outdoors', 'plants'] });
      expect(garden.results[0].snippet).toMatch(/<mark>raised<\/mark> <mark>beds<\/mark>/i);
    });

    it('ranks a title match above body-only matches', async () => {
      // Without the title weight the baking page would win: it says "compost" three times, the garden page twice.
      const reply = await searchAs(stack, tenant.key, { query: 'compost', mode: 'keyword' });
      expect(documentIds(reply)).toEqual([ids.garden, ids.baking]);
      expect(reply.results[0].score).toBeGreaterThan(reply.results[1].score);
      expect(reply.results[1].snippet).toMatch(/<mark>compost<\/mark>/i);
    });

    it('understands websearch syntax: quoted phrases, exclusion and OR', async () => {
      const keyword = async (query: string) => sorted(documentIds(await searchAs(stack, tenant.key, { query, mode: 'keyword' })));
      expect(await keyword('cast iron')).toEqual(sorted([ids.baking, ids.garden]));
      expect(await keyword('"cast iron"')).toEqual([ids.baking]);
      expect(await keyword('iron -skillet')).toEqual([ids.garden]);
      expect(await keyword('sourdough OR anchor')).toEqual(sorted([ids.baking, ids.sailing]));
      expect(await keyword('sourdough anchor')).toEqual([]);
    });

    it('respects the limit and counts what it returns', async () => {
      const all = await searchAs(stack, tenant.key, { query: 'handbook', mode: 'keyword', limit: 100 });
      expect(uniqueSorted(documentIds(all))).toEqual(sorted(allIds()));
      const three = await searchAs(stack, tenant.key, { query: 'handbook', mode: 'keyword', limit: 3 });
      expect(three.results).toHaveLength(3);
      expect(three.total_results).toBe(3);
      expect(three.results.map((hit) => hit.chunk_id)).toEqual(all.results.slice(0, 3).map((hit) => hit.chunk_id));
      const byDefault = await searchAs(stack, tenant.key, { query: 'handbook', mode: 'keyword' });
      expect(byDefault.results).toHaveLength(10);
      expect(byDefault.total_results).toBe(10);
    });
  });

  describe('semantic', () => {
    it('ranks the document sharing the query vocabulary first, scored by cosine similarity', async () => {
      const query = 'reef the mainsail early when the wind rises above twenty knots';
      const reply = await searchAs(stack, tenant.key, { query, mode: 'semantic', limit: 100 });
      expect(reply).toMatchObject({ mode: 'semantic', query, cached: false });
      expect(reply.total_results).toBe(reply.results.length);
      expect(reply.took_ms).toBeGreaterThan(0);
      // Every chunk of the tenant is a candidate, nearest first.
      expect(uniqueSorted(documentIds(reply))).toEqual(sorted(allIds()));
      expect(reply.results[0].document_id).toBe(ids.sailing);
      expect(reply.results[0].score).toBeGreaterThan(0);
      expect(reply.results[0].score).toBeLessThanOrEqual(1);
      expect(reply.results[0].score).toBeGreaterThan(reply.results[1].score + 0.1);
      expectDescending(reply);
      // The score is the cosine similarity between the query and what the chunk was embedded from (title, heading, text).
      const queryVector = embedText(query, 384);
      for (const hit of reply.results) {
        const chunkVector = embedText([hit.title, hit.heading, hit.content].filter(Boolean).join('\n'), 384);
        expect(hit.score).toBeCloseTo(cosine(queryVector, chunkVector), 5);
      }
    });

    it('finds by shared word stems, not only exact words', async () => {
      const reply = await searchAs(stack, tenant.key, { query: 'telescopes observing moons', mode: 'semantic', limit: 3 });
      expect(reply.results).toHaveLength(3);
      expect(reply.results[0].document_id).toBe(ids.astronomy);
    });
  });

  describe('hybrid', () => {
    it('is the default mode and fuses ranks: 0.7/(60+semantic rank) + 0.3/(60+keyword rank)', async () => {
      // "compost" matches two documents by keyword; the others are found by meaning only.
      const query = 'compost for the herb pots';
      const semantic = await searchAs(stack, tenant.key, { query, mode: 'semantic', limit: 100 });
      const keyword = await searchAs(stack, tenant.key, { query, mode: 'keyword', limit: 100 });
      const hybrid = await searchAs(stack, tenant.key, { query, limit: 100 });
      expect(hybrid.mode).toBe('hybrid');
      expect(hybrid.took_ms).toBeGreaterThan(0);
      expect(keyword.results.length).toBeGreaterThan(0);
      expect(keyword.results.length).toBeLessThan(semantic.results.length);

      const semanticRank = new Map(semantic.results.map((hit, i) => [hit.chunk_id, i + 1]));
      const keywordRank = new Map(keyword.results.map((hit, i) => [hit.chunk_id, i + 1]));
      const expected = (chunkId: string) => {
        const s = semanticRank.get(chunkId);
        const k = keywordRank.get(chunkId);
        return (s ? 0.7 / (60 + s) : 0) + (k ? 0.3 / (60 + k) : 0);
      };
      expect(uniqueSorted(hybrid.results.map((hit) => hit.chunk_id))).toEqual(uniqueSorted([...semanticRank.keys(), ...keywordRank.keys()]));
      expect(hybrid.results[0].score).toBeCloseTo(expected(hybrid.results[0].chunk_id), 12);
      for (const hit of hybrid.results) expect(hit.score).toBeCloseTo(expected(hit.chunk_id), 12);
      expectDescending(hybrid);
      // A chunk found only by meaning carries only the semantic term.
      const semanticOnly = hybrid.results.find((hit) => !keywordRank.has(hit.chunk_id))!;
      expect(semanticOnly).toBeDefined();
      expect(semanticOnly.score).toBeCloseTo(0.7 / (60 + semanticRank.get(semanticOnly.chunk_id)!), 12);
      // The baking page is the only one that says "herb pots" and "compost": first by both measures, first here.
      expect(hybrid.results[0].document_id).toBe(ids.baking);
      expect(hybrid.results[0].snippet).toMatch(/<mark>compost<\/mark>/i);
    });

    it('returns the default 10 results when more match', async () => {
      const reply = await searchAs(stack, tenant.key, { query: 'household handbook' });
      expect(reply).toMatchObject({ mode: 'hybrid', total_results: 10 });
      expect(reply.results).toHaveLength(10);
    });
  });

  describe('filters', () => {
    const modes: Mode[] = ['keyword', 'semantic', 'hybrid'];
    const found = async (filters: Record<string, unknown>, mode: Mode) =>
      uniqueSorted(documentIds(await searchAs(stack, tenant.key, { query: 'household handbook', mode, limit: 100, filters })));

    it.each(modes)('content_type (%s)', async (mode) => {
      expect(await found({ content_type: 'text' }, mode)).toEqual([ids.cycling]);
      expect(await found({ content_type: 'code' }, mode)).toEqual([ids.code]);
      expect(await found({ content_type: 'html' }, mode)).toEqual([]);
    });

    it.each(modes)('tags, all of them (%s)', async (mode) => {
      expect(await found({ tags: ['outdoors'] }, mode)).toEqual(sorted([ids.garden, ids.sailing, ids.bees, ids.cycling]));
      expect(await found({ tags: ['outdoors', 'plants'] }, mode)).toEqual([ids.garden]);
      expect(await found({ tags: ['plants', 'outdoors'] }, mode)).toEqual([ids.garden]);
      expect(await found({ tags: ['outdoors', 'kitchen'] }, mode)).toEqual([]);
      expect(await found({ tags: [] }, mode)).toEqual(sorted(allIds()));
    });

    it.each(modes)('created_from and created_to (%s)', async (mode) => {
      expect(await found({ created_to: '2001-01-01T00:00:00Z' }, mode)).toEqual([]);
      expect(await found({ created_from: '2999-01-01T00:00:00Z' }, mode)).toEqual([]);
      expect(await found({ created_from: boundary }, mode)).toEqual([lateId]);
      expect(await found({ created_to: boundary }, mode)).toEqual(sorted(Object.values(ids)));
      expect(await found({ created_from: '2001-01-01T00:00:00Z', created_to: '2999-01-01T00:00:00+02:00' }, mode)).toEqual(sorted(allIds()));
    });

    it('combines filters', async () => {
      expect(await found({ content_type: 'markdown', tags: ['kitchen'] }, 'hybrid')).toEqual(sorted([ids.baking, ids.coffee]));
      expect(await found({ content_type: 'text', tags: ['kitchen'] }, 'hybrid')).toEqual([]);
    });
  });

  describe('the statement', () => {
    const modes: Mode[] = ['keyword', 'semantic', 'hybrid'];
    const requests = (mode: Mode) => [
      { query: 'household handbook', mode, limit: 7 },
      { query: 'compost for the herb pots', mode, limit: 10, filters: { tags: ['kitchen'] } },
    ];

    it.each(modes)("ranks alike in its ranking-only form, which leaves out the results' text and snippets (%s)", async (mode) => {
      const deps = stack.platform.searchDeps();
      for (const request of requests(mode)) {
        const results = await runStatement(deps.db, tenant.id, await prepareSearch(deps, tenant.id, request));
        const ranking = await runStatement(deps.db, tenant.id, await prepareSearch(deps, tenant.id, request, 'ranking'));
        expect(results.length).toBeGreaterThan(0);
        expect(ranking).toEqual(results.map((row) => ({ chunk_id: row.chunk_id, score: row.score })));
      }
    });

    it.each(modes)('reads documents for the ranked rows only, unless a filter is on them (%s)', async (mode) => {
      const deps = stack.platform.searchDeps();
      const documentScans = async (request: SearchRequest) =>
        (await explain(stack, tenant.id, await prepareSearch(deps, tenant.id, request))).match(/ on documents\b/g)?.length ?? 0;
      const [unfiltered, filtered] = requests(mode);
      expect(await documentScans(unfiltered)).toBe(1);
      // Each side that finds candidates joins their documents to filter them.
      expect(await documentScans(filtered)).toBe(mode === 'hybrid' ? 3 : 2);
    });
  });

  describe('GET /api/search', () => {
    // The second of two identical searches may come from the cache: only its timing and `cached` differ.
    const withoutTiming = (reply: SearchReply) => ({ ...reply, took_ms: undefined, cached: undefined, query_id: undefined });

    it.each([
      ['keyword', 'compost', 5],
      ['semantic', 'reef the mainsail', 4],
      ['hybrid', 'sourdough starter', 7],
    ] as const)('gives the same results as POST (%s)', async (mode, q, limit) => {
      const viaGet = await stack.as(tenant.key, 'get', `/api/search?q=${encodeURIComponent(q)}&mode=${mode}&limit=${limit}`).expect(200);
      const viaPost = await searchAs(stack, tenant.key, { query: q, mode, limit });
      expect(viaGet.body.results.length).toBeGreaterThan(0);
      expect(withoutTiming(viaGet.body)).toEqual(withoutTiming(viaPost));
    });

    it('defaults to hybrid with 10 results and accepts content_type and tags', async () => {
      const viaGet = await stack.as(tenant.key, 'get', '/api/search?q=household%20handbook').expect(200);
      expect(withoutTiming(viaGet.body)).toEqual(withoutTiming(await searchAs(stack, tenant.key, { query: 'household handbook' })));
      expect(viaGet.body.results).toHaveLength(10);
      const filtered = await stack.as(tenant.key, 'get', '/api/search?q=handbook&mode=keyword&content_type=markdown&tags=outdoors,plants').expect(200);
      expect(documentIds(filtered.body)).toEqual([ids.garden]);
    });
  });

  describe('tenant isolation', () => {
    it("never shows another tenant's chunks, in any mode", async () => {
      const other = await stack.createTenant();
      const [own] = await seed(stack, other.key, [{ title: 'Rye sourdough for tenant B', content: 'Mix rye flour, sourdough starter, salt and water; prove overnight.' }]);
      const modes: Mode[] = ['keyword', 'semantic', 'hybrid'];
      for (const mode of modes) {
        for (const query of ['sourdough starter', 'compost raised beds', 'household handbook', 'reef the mainsail']) {
          const reply = await searchAs(stack, other.key, { query, mode, limit: 100 });
          expect(documentIds(reply).every((id) => id === own.id)).toBe(true);
        }
        const mine = await searchAs(stack, other.key, { query: 'rye sourdough', mode, limit: 100 });
        expect(documentIds(mine)).toEqual([own.id]);
        // And the first tenant does not see B's document either.
        const first = await searchAs(stack, tenant.key, { query: 'rye sourdough prove overnight', mode, limit: 100 });
        expect(documentIds(first)).not.toContain(own.id);
      }
      // The operator searches as whichever tenant it names.
      const asOperator = await stack.operator('post', '/api/search', other.slug).send({ query: 'sourdough', mode: 'keyword' }).expect(200);
      expect(documentIds(asOperator.body)).toEqual([own.id]);
    });

    it("does not starve a small tenant beside a big one (exact scan below the threshold)", async () => {
      await expectSmallSetsServed(stack);
    });
  });

  describe('hostile input', () => {
    const counts = () =>
      stack.sql(async (db) => {
        const [documents] = await db('documents').count<{ count: string }[]>({ count: '*' });
        const [chunks] = await db('chunks').count<{ count: string }[]>({ count: '*' });
        return { documents: Number(documents.count), chunks: Number(chunks.count) };
      });
    const listed = async () => {
      const reply = await stack.as(tenant.key, 'get', '/api/documents?limit=100').expect(200);
      return sorted((reply.body.items as { id: string }[]).map((item) => item.id));
    };

    it.each(["'; drop table documents; --", '\\', '%_', '$1', ':name', "compost' OR '1'='1", 'compost) | (!', '<mark>compost</mark>'])(
      'treats SQL metacharacters as text: %s',
      async (query) => {
        const before = await counts();
        for (const mode of ['keyword', 'semantic', 'hybrid'] as const) {
          const reply = await stack.as(tenant.key, 'post', '/api/search').send({ query, mode }).expect(200);
          expect(reply.body).toMatchObject({ mode, query, cached: false });
          expect(Array.isArray(reply.body.results)).toBe(true);
          expect(reply.body.total_results).toBe(reply.body.results.length);
          for (const hit of reply.body.results as Hit[]) {
            expect(allIds()).toContain(hit.document_id);
            expect(typeof hit.score).toBe('number');
            expect(Number.isFinite(hit.score)).toBe(true);
          }
          const viaGet = await stack.as(tenant.key, 'get', `/api/search?q=${encodeURIComponent(query)}&mode=${mode}`).expect(200);
          expect(viaGet.body.results.map((hit: Hit) => hit.chunk_id)).toEqual(reply.body.results.map((hit: Hit) => hit.chunk_id));
        }
        expect(await counts()).toEqual(before);
        expect(await listed()).toEqual(sorted(allIds()));
        const normal = await searchAs(stack, tenant.key, { query: 'compost', mode: 'keyword' });
        expect(documentIds(normal)).toEqual([ids.garden, ids.baking]);
      },
    );

    it('matches nothing by meaning for a query without words', async () => {
      // Such a query embeds to a zero vector, whose cosine similarity is undefined.
      for (const query of ['%_', '\\', '?!']) {
        for (const mode of ['semantic', 'hybrid'] as const) {
          const reply = await searchAs(stack, tenant.key, { query, mode });
          expect(reply.results).toEqual([]);
          expect(reply.total_results).toBe(0);
        }
      }
    });

    const invalid: Array<[string, unknown]> = [
      ['a 100 KB query', { query: 'compost '.repeat(12_800) }],
      ['an empty query', { query: '' }],
      ['a blank query', { query: '   ' }],
      ['no query', { mode: 'keyword' }],
      ['a query that is not a string', { query: ['compost'] }],
      ['a NUL in the query', { query: 'comp\u0000ost', mode: 'keyword' }],
      ['limit 0', { query: 'compost', limit: 0 }],
      ['limit 101', { query: 'compost', limit: 101 }],
      ['limit "abc"', { query: 'compost', limit: 'abc' }],
      ['a fractional limit', { query: 'compost', limit: 2.5 }],
      ['an unknown mode', { query: 'compost', mode: 'fuzzy' }],
      ['an unknown filter', { query: 'compost', filters: { author: 'me' } }],
      ['an unknown field', { query: 'compost', order_by: 'score; drop table chunks' }],
      ['an unknown content type filter', { query: 'compost', filters: { content_type: 'spreadsheet' } }],
      ['tags that are not strings', { query: 'compost', filters: { tags: [1, 2] } }],
      ['a date that is not a date', { query: 'compost', filters: { created_from: "yesterday'; --" } }],
    ];

    it.each(invalid)('refuses %s with 400 validation_failed', async (_name, body) => {
      const before = await counts();
      const reply = await stack.as(tenant.key, 'post', '/api/search').send(body as object).expect(400);
      expect(reply.body.error).toMatchObject({ code: 'validation_failed', message: expect.any(String) });
      expect(await counts()).toEqual(before);
      expect(documentIds(await searchAs(stack, tenant.key, { query: 'compost', mode: 'keyword' }))).toEqual([ids.garden, ids.baking]);
    });

    it.each([
      ['an empty q', '/api/search?q='],
      ['no q', '/api/search?mode=keyword'],
      ['limit 0', '/api/search?q=compost&limit=0'],
      ['limit 101', '/api/search?q=compost&limit=101'],
      ['limit abc', '/api/search?q=compost&limit=abc'],
      ['an unknown mode', '/api/search?q=compost&mode=fuzzy'],
      ['a NUL in q', '/api/search?q=comp%00ost&mode=keyword'],
      ['a 2 KB q', `/api/search?q=${'compost+'.repeat(256)}`],
    ])('GET refuses %s with 400 validation_failed', async (_name, url) => {
      const reply = await stack.as(tenant.key, 'get', url).expect(400);
      expect(reply.body.error.code).toBe('validation_failed');
    });

    it('refuses malformed JSON with 400 invalid_json', async () => {
      const before = await counts();
      const reply = await stack
        .as(tenant.key, 'post', '/api/search')
        .set('Content-Type', 'application/json')
        .send('{"query": "compost", "mode": ')
        .expect(400);
      expect(reply.body.error.code).toBe('invalid_json');
      expect(await counts()).toEqual(before);
    });

    it('refuses a body that is not JSON with 415', async () => {
      const reply = await stack.as(tenant.key, 'post', '/api/search').set('Content-Type', 'text/plain').send('compost').expect(415);
      expect(reply.body.error.code).toBe('unsupported_media_type');
    });

    it('needs the search scope', async () => {
      const readOnly = await stack.operator('post', '/api/admin/api-keys', tenant.id).send({ name: 'reader', scopes: ['documents:read'] }).expect(201);
      const reply = await stack.as(readOnly.body.key, 'post', '/api/search').send({ query: 'compost' }).expect(403);
      expect(reply.body.error.code).toBe('forbidden');
      await stack.as(readOnly.body.key, 'get', '/api/search?q=compost').expect(403);
      const anonymous = await stack.as('rw_live_not-a-real-key-000000000000000000', 'post', '/api/search').send({ query: 'compost' }).expect(401);
      expect(anonymous.body.error.code).toBe('unauthenticated');
    });
  });
});

describe('search on PGlite with the approximate (HNSW) index forced', () => {
  let stack: TestStack;
  beforeAll(async () => {
    // 0: no tenant with any chunk gets the exact scan; searches leave the HNSW index to the planner, with pgvector's iterative scan on.
    stack = await startStack({ database: 'pglite', env: { SEARCH_EXACT_SCAN_MAX_CHUNKS: '0' } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('still gives a small tenant, and a narrow filter, their own top k', async () => {
    const { big, small, smallIds, bigTaggedIds } = await expectSmallSetsServed(stack);

    // At this size PostgreSQL may well sort the tenant's few rows rather than
    // walk the index, which would make the answers above exact whatever the
    // settings. So the statements search builds are also run with sorting
    // priced out, as on a table large enough for the planner to prefer the
    // HNSW index; the iterative scan must then still fill the top k.
    const cases = [
      { tenantId: small.id, expected: smallIds, request: { query: HARBOUR, mode: 'semantic' as const, limit: 3 } },
      { tenantId: big.id, expected: bigTaggedIds, request: { query: HARBOUR, mode: 'semantic' as const, limit: 3, filters: { tags: [WINTER_TAG] } } },
    ];
    for (const { tenantId, expected, request } of cases) {
      const statement = await prepareSearch(stack.platform.searchDeps(), tenantId, request);
      expect(statement.settings).toContainEqual(['hnsw.iterative_scan', 'relaxed_order']);
      const onIndex = { ...statement, settings: [...statement.settings, ['enable_sort', 'off'] as [string, string]] };
      expect(await explain(stack, tenantId, onIndex)).toMatch(/Index Scan using chunks_embedding_hnsw_384/);
      const rows = await runStatement(stack.platform.db.knex, tenantId, onIndex);
      expect(sorted(rows.map((row) => row.document_id))).toEqual(sorted(expected));
      // The same plan without the iterative scan comes back short: these are cases that need it.
      const withoutIterative = { ...onIndex, settings: onIndex.settings.filter(([name]) => name !== 'hnsw.iterative_scan') };
      expect(await explain(stack, tenantId, withoutIterative)).toMatch(/Index Scan using chunks_embedding_hnsw_384/);
      expect((await runStatement(stack.platform.db.knex, tenantId, withoutIterative)).length).toBeLessThan(3);
    }
  });
});

describe('search on PostgreSQL without pgvector', () => {
  let stack: TestStack;
  let tenant: { id: string; slug: string; key: string };
  let gardenId: string;
  beforeAll(async () => {
    stack = await startStack({ database: 'postgres' });
    tenant = await stack.createTenant();
    [{ id: gardenId }] = await seed(stack, tenant.key, [CORPUS.garden, CORPUS.baking, CORPUS.sailing]);
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('searches by keyword end to end', async () => {
    const reply = await searchAs(stack, tenant.key, { query: 'compost', mode: 'keyword' });
    expect(reply.results.map((hit) => hit.title)).toEqual([CORPUS.garden.title, CORPUS.baking.title]);
    expect(reply.results[0]).toMatchObject({ document_id: gardenId, source_url: CORPUS.garden.source_url, tags: CORPUS.garden.tags });
    expect(reply.took_ms).toBeGreaterThan(0);
    const viaGet = await stack.as(tenant.key, 'get', '/api/search?q=%22cast%20iron%22&mode=keyword').expect(200);
    expect(viaGet.body.results.map((hit: Hit) => hit.title)).toEqual([CORPUS.baking.title]);
    expect(viaGet.body.results[0].snippet).toMatch(/<mark>cast<\/mark> <mark>iron<\/mark>/i);
  });

  it.each<[string, { query: string; mode?: Mode }]>([
    ['semantic', { query: 'compost', mode: 'semantic' }],
    ['hybrid', { query: 'compost', mode: 'hybrid' }],
    ['the default (hybrid)', { query: 'compost' }],
  ])('answers %s with 501 naming the extension', async (_name, body) => {
    const reply = await stack.as(tenant.key, 'post', '/api/search').send(body).expect(501);
    expect(reply.body.error.code).toBe('vector_search_unavailable');
    expect(reply.body.error.message).toMatch(/"vector"/);
    expect(reply.body.error.message).toMatch(/keyword/);
    const viaGet = await stack.as(tenant.key, 'get', `/api/search?q=compost${body.mode ? `&mode=${body.mode}` : ''}`).expect(501);
    expect(viaGet.body.error.code).toBe('vector_search_unavailable');
  });

  it('reports vector search unavailable in /api/health', async () => {
    const reply = await stack.operator('get', '/api/health').expect(200);
    expect(reply.body.status).toBe('healthy');
    expect(reply.body.services.vector_search).toMatchObject({ status: 'unavailable', extension: 'vector' });
    expect(reply.body.services.vector_search.reason).toMatch(/"vector"/);
  });
});
