import { createReranker } from '../../src/domain/search/reranker';
import { startStack, type TestStack } from '../helpers/harness';
import { startRerankProvider, type FakeRerankProvider } from '../helpers/rerank-provider';

// Reranking per docs/search.md: `rerank: true` reorders the best candidates
// with a cross-encoder served over HTTP (a real server run by the test, in
// both request shapes), caches its scores without ever serving a stale
// ranking, and answers in the retrieved order when the reranker fails.

interface Hit {
  document_id: string;
  title: string;
  score: number;
}

interface SearchReply {
  results: Hit[];
  total_results: number;
  cached: boolean;
  reranked: boolean;
}

const API_KEY = 'rerank-key-for-tests';
const MODEL = 'test/cross-encoder';

/** Six documents about lanterns; the one about saffron mentions lanterns least, so keyword ranking puts it last. */
const DOCUMENTS = [
  { title: 'Lantern care', content: 'Lantern lantern lantern: trim the lantern wick and clean the lantern glass.' },
  { title: 'Lantern history', content: 'The lantern lit streets; lantern makers sold a lantern to every lantern lighter.' },
  { title: 'Lantern festivals', content: 'At the lantern festival each lantern floats; a paper lantern is a lantern of wishes.' },
  { title: 'Storm lanterns', content: 'A storm lantern keeps its lantern flame behind lantern glass in the wind.' },
  { title: 'Lantern fuel', content: 'Lantern oil or a lantern battery: choose the lantern fuel for the trip.' },
  { title: 'Saffron harvest', content: 'Pickers of saffron work before dawn by a lantern, and saffron threads dry by the stove.' },
];

async function search(stack: TestStack, key: string, body: Record<string, unknown>): Promise<SearchReply> {
  const reply = await stack.as(key, 'post', '/api/search').send(body);
  if (reply.status !== 200) throw new Error(`search answered ${reply.status}: ${JSON.stringify(reply.body)}`);
  return reply.body as SearchReply;
}

const titles = (reply: SearchReply) => reply.results.map((hit) => hit.title);

describe('rerank: true with a Cohere-shaped reranker', () => {
  let provider: FakeRerankProvider;
  let stack: TestStack;
  let tenant: { id: string; key: string };

  beforeAll(async () => {
    provider = await startRerankProvider({ word: 'saffron', model: MODEL, apiKey: API_KEY });
    stack = await startStack({ database: 'postgres', env: { ...provider.env, RERANK_TIMEOUT_MS: '500' } });
    tenant = await stack.createTenant();
    await stack.indexDocuments(tenant.key, DOCUMENTS);
  });

  afterAll(async () => {
    await stack?.close();
    await provider?.close();
  });

  beforeEach(() => {
    provider.mode = 'ok';
    provider.calls.length = 0;
  });

  it('reorders the best candidates by the reranker\'s scores, takes `limit` of them and says so', async () => {
    const plain = await search(stack, tenant.key, { query: 'lantern', mode: 'keyword', limit: 3 });
    expect(plain.reranked).toBe(false);
    expect(titles(plain)).not.toContain('Saffron harvest');
    expect(provider.calls).toHaveLength(0);

    const reranked = await search(stack, tenant.key, { query: 'lantern', mode: 'keyword', limit: 3, rerank: true, rerank_candidates: 6 });
    expect({ reranked: reranked.reranked, total: reranked.total_results, first: reranked.results[0].title, score: reranked.results[0].score }).toEqual({
      reranked: true,
      total: 3,
      first: 'Saffron harvest',
      // "saffron" in its title and twice in its text.
      score: 3,
    });
    // One call, with the key, the model, the query and every candidate's title and text.
    expect(provider.calls).toHaveLength(1);
    const [call] = provider.calls;
    expect(call.headers.authorization).toBe(`Bearer ${API_KEY}`);
    expect({ model: call.body.model, query: call.body.query, documents: call.body.documents?.length, texts: call.body.texts }).toEqual({
      model: MODEL,
      query: 'lantern',
      documents: 6,
      texts: undefined,
    });
    expect(call.body.documents!.some((passage) => passage.startsWith('Saffron harvest') && passage.includes('saffron threads dry'))).toBe(true);
  });

  it('asks the reranker about at least `limit` candidates, and about `rerank_candidates` (50 by default) at most', async () => {
    // Other spellings of the same search for every document: new searches, so nothing comes from the cache.
    await search(stack, tenant.key, { query: 'lanterns', mode: 'keyword', limit: 3, rerank: true, rerank_candidates: 2 });
    await search(stack, tenant.key, { query: 'Lanterns', mode: 'keyword', limit: 1, rerank: true, rerank_candidates: 2 });
    await search(stack, tenant.key, { query: 'LANTERNS', mode: 'keyword', limit: 1, rerank: true });
    expect(provider.calls.map((call) => call.body.documents!.length)).toEqual([3, 2, 6]);
  });

  it('answers the same reranked search from the cache, and a changed index is reranked afresh', async () => {
    const body = { query: 'lantern lantern', mode: 'keyword', limit: 2, rerank: true };
    expect(await search(stack, tenant.key, body)).toMatchObject({ cached: false, reranked: true });
    expect(await search(stack, tenant.key, body)).toMatchObject({ cached: true, reranked: true });
    expect(provider.calls).toHaveLength(1);

    const [added] = await stack.indexDocuments(tenant.key, [{ title: 'Saffron lantern', content: 'A lantern of saffron silk, saffron dyed, saffron bright.' }]);
    const after = await search(stack, tenant.key, body);
    expect({ cached: after.cached, first: after.results[0].document_id, score: after.results[0].score }).toEqual({ cached: false, first: added, score: 4 });
    await stack.as(tenant.key, 'delete', `/api/documents/${added}`).expect(204);
  });

  it('the GET form takes rerank=true and rerank_candidates', async () => {
    const reply = await stack.as(tenant.key, 'get', '/api/search?q=Lantern&mode=keyword&limit=2&rerank=true&rerank_candidates=6').expect(200);
    expect({ reranked: reply.body.reranked, first: reply.body.results[0].title }).toEqual({ reranked: true, first: 'Saffron harvest' });
    expect(provider.calls[0].body.documents).toHaveLength(6);
  });

  it('a reranker that is down or hangs costs the order, not the answer, and its failure is not cached', async () => {
    const body = { query: 'lanterns lantern', mode: 'keyword', limit: 3, rerank: true, rerank_candidates: 6 };
    const retrieved = await search(stack, tenant.key, { ...body, rerank: false });

    provider.mode = 'down';
    const down = await search(stack, tenant.key, body);
    expect({ reranked: down.reranked, titles: titles(down) }).toEqual({ reranked: false, titles: titles(retrieved) });

    provider.mode = 'hang';
    const started = Date.now();
    const hung = await search(stack, tenant.key, body);
    expect({ reranked: hung.reranked, titles: titles(hung), prompt: Date.now() - started < 3_000 }).toEqual({ reranked: false, titles: titles(retrieved), prompt: true });

    const metrics = await stack.operator('get', '/metrics').expect(200);
    expect(metrics.text).toMatch(/ragworks_rerank_requests_total\{outcome="failed"\} [2-9]/);

    provider.mode = 'ok';
    const back = await search(stack, tenant.key, body);
    expect({ reranked: back.reranked, first: back.results[0].title }).toEqual({ reranked: true, first: 'Saffron harvest' });
  });

  it('refuses candidates out of range and a rerank that is not a boolean, and calls nobody', async () => {
    for (const body of [
      { query: 'lantern', rerank: true, rerank_candidates: 0 },
      { query: 'lantern', rerank: true, rerank_candidates: 101 },
      { query: 'lantern', rerank: 'yes' },
    ]) {
      const reply = await stack.as(tenant.key, 'post', '/api/search').send(body);
      expect({ status: reply.status, code: reply.body.error?.code }).toEqual({ status: 400, code: 'validation_failed' });
    }
    await stack.as(tenant.key, 'get', '/api/search?q=lantern&rerank=maybe').expect(400);
    expect(provider.calls).toHaveLength(0);
  });
});

describe('rerank: true with a TEI-shaped reranker', () => {
  let provider: FakeRerankProvider;
  let stack: TestStack;

  beforeAll(async () => {
    provider = await startRerankProvider({ word: 'saffron', model: MODEL, apiKey: API_KEY });
    stack = await startStack({ database: 'pglite', env: { ...provider.env, RERANK_API: 'tei' } });
  });

  afterAll(async () => {
    await stack?.close();
    await provider?.close();
  });

  it('sends `texts`, reads `[{index, score}]`, and reranks', async () => {
    const tenant = await stack.createTenant();
    await stack.indexDocuments(tenant.key, DOCUMENTS);
    const reply = await search(stack, tenant.key, { query: 'lantern', mode: 'keyword', limit: 2, rerank: true });
    expect({ reranked: reply.reranked, first: reply.results[0].title }).toEqual({ reranked: true, first: 'Saffron harvest' });
    expect({ texts: provider.calls[0].body.texts?.length, documents: provider.calls[0].body.documents }).toEqual({ texts: 6, documents: undefined });
  });
});

describe('rerank: true without RERANK_URL', () => {
  let stack: TestStack;

  beforeAll(async () => {
    stack = await startStack({ database: 'pglite' });
  });

  afterAll(async () => {
    await stack?.close();
  });

  it('answers 501 rerank_unavailable naming the settings; without rerank the search answers reranked: false', async () => {
    const tenant = await stack.createTenant();
    const refused = await stack.as(tenant.key, 'post', '/api/search').send({ query: 'lantern', mode: 'keyword', rerank: true });
    expect({ status: refused.status, code: refused.body.error.code, settings: refused.body.error.details.settings }).toEqual({
      status: 501,
      code: 'rerank_unavailable',
      settings: ['RERANK_URL', 'RERANK_MODEL'],
    });
    expect(await search(stack, tenant.key, { query: 'lantern', mode: 'keyword' })).toMatchObject({ reranked: false });
  });
});

describe('the reranker as the platform builds it', () => {
  it('counts every outcome, and logs once when it starts failing and once when it answers again', async () => {
    const provider = await startRerankProvider({ word: 'saffron', model: MODEL, apiKey: API_KEY });
    try {
      const outcomes: string[] = [];
      const lines: string[] = [];
      const logger = { warn: (_fields: object, message: string) => lines.push(`warn: ${message}`), info: (message: string) => lines.push(`info: ${message}`) };
      const config = { RERANK_URL: provider.env.RERANK_URL, RERANK_MODEL: MODEL, RERANK_API_KEY: API_KEY, RERANK_API: 'cohere' as const, RERANK_TIMEOUT_MS: 2_000 };
      const reranker = createReranker(config, { counted: (outcome) => outcomes.push(outcome), logger })!;
      const score = () => reranker.score('saffron', ['saffron', 'lantern']).then(() => 'scored', () => 'threw');

      expect(await score()).toBe('scored');
      provider.mode = 'down';
      expect([await score(), await score()]).toEqual(['threw', 'threw']);
      provider.mode = 'ok';
      expect([await score(), await score()]).toEqual(['scored', 'scored']);

      expect(outcomes).toEqual(['reranked', 'failed', 'failed', 'reranked', 'reranked']);
      expect(lines).toEqual(['warn: the reranker failed; searches asking for it answer in their original order', 'info: the reranker answers again']);
    } finally {
      await provider.close();
    }
  });

  it('is none without RERANK_URL', () => {
    expect(createReranker({ RERANK_URL: undefined, RERANK_MODEL: undefined, RERANK_API_KEY: undefined, RERANK_API: 'cohere', RERANK_TIMEOUT_MS: 2_000 }, { counted: () => undefined, logger: console })).toBeNull();
  });
});
