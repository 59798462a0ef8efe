import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import pg from 'pg';
import { analyticsQueue } from '../../queues';
import { aggregateSearchEvents } from '../../src/domain/analytics/aggregate';
import { EXPORT_COLUMNS, TRENDING_FORMULA } from '../../src/domain/analytics/reports';
import { CONSUMER_GROUP, streamKey } from '../../src/domain/analytics/stream';
import { parseCsv } from '../helpers/csv';
import { createTestDatabase, POSTGRES_ADMIN_URL } from '../helpers/databases';
import { startStack, type TestStack } from '../helpers/harness';
import { waitFor } from '../helpers/wait';

// Search analytics end to end: events from real searches through the Redis
// stream and the aggregation job into PostgreSQL, and every report endpoint
// on data constructed so the right answer is known.

type Tenant = { id: string; slug: string; key: string };

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const ANALYTICS_ENDPOINTS = ['popular', 'trending', 'no-results', 'stats', 'timeseries', 'users/:user', 'export'] as const;

/** A search event written straight into search_events, as aggregation would have stored it. */
interface DirectEvent {
  query: string;
  at: Date | string;
  mode?: string;
  resultCount?: number;
  tookMs?: number;
  cached?: boolean;
  userId?: string | null;
  queryId?: string;
}

async function insertEvents(stack: TestStack, tenantId: string, events: DirectEvent[]): Promise<string[]> {
  const rows = events.map((event) => ({
    id: `direct-${randomUUID()}`,
    tenant_id: tenantId,
    query_id: event.queryId ?? randomUUID(),
    query: event.query,
    query_normalized: event.query.toLowerCase(),
    mode: event.mode ?? 'keyword',
    filters: '{}',
    result_count: event.resultCount ?? 1,
    took_ms: event.tookMs ?? 10,
    cached: event.cached ?? false,
    user_id: event.userId ?? null,
    created_at: new Date(event.at),
  }));
  await stack.sql((db) => db('search_events').insert(rows));
  return rows.map((row) => row.query_id);
}

/** Rows of search_query_hourly, `daysAgo` days back from now, truncated to the hour. */
async function insertRollups(stack: TestStack, tenantId: string, rows: Array<{ query: string; daysAgo: number; searches: number; noResults?: number }>) {
  await stack.sql((db) =>
    db('search_query_hourly').insert(
      rows.map((row) => ({
        tenant_id: tenantId,
        hour: new Date(Math.floor((Date.now() - row.daysAgo * DAY) / HOUR) * HOUR),
        query_normalized: row.query,
        searches: row.searches,
        no_result_searches: row.noResults ?? 0,
        total_took_ms: row.searches * 10,
        total_results: row.searches,
      })),
    ),
  );
}

/** A Prometheus sample's value from /metrics (0 when the series is absent). */
async function metric(stack: TestStack, series: string): Promise<number> {
  const text: string = (await stack.operator('get', '/metrics').expect(200)).text;
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

async function keyWithScopes(stack: TestStack, tenant: Tenant, scopes: string[]): Promise<string> {
  const response = await stack.operator('post', '/api/admin/api-keys', tenant.id).send({ name: `scopes ${scopes.join(' ')}`, scopes }).expect(201);
  return response.body.key;
}

/** Every analytics endpoint as a URL, with parameters that cover `around`. */
function analyticsUrls(userId: string, around: Date): Record<(typeof ANALYTICS_ENDPOINTS)[number], string> {
  const start = new Date(around.getTime() - 3 * HOUR).toISOString();
  const end = new Date(around.getTime() + HOUR).toISOString();
  return {
    popular: '/api/admin/analytics/popular',
    trending: '/api/admin/analytics/trending',
    'no-results': '/api/admin/analytics/no-results',
    stats: '/api/admin/analytics/stats',
    timeseries: `/api/admin/analytics/timeseries?start=${encodeURIComponent(start)}&end=${encodeURIComponent(end)}`,
    'users/:user': `/api/admin/analytics/users/${encodeURIComponent(userId)}`,
    export: `/api/admin/analytics/export?format=json&start=${encodeURIComponent(start)}&end=${encodeURIComponent(end)}`,
  };
}

/** A row of search_events as aggregation stores it. */
interface StoredEvent {
  id: string;
  tenant_id: string;
  query_id: string;
  query: string;
  query_normalized: string;
  mode: string;
  filters: Record<string, unknown>;
  result_count: number;
  took_ms: number;
  cached: boolean;
  user_id: string | null;
  created_at: Date;
}

/** A tenant's stored search events, oldest first; `narrow` adds conditions or picks columns. */
const eventsOf = (stack: TestStack, tenantId: string, narrow = (query: Knex.QueryBuilder) => query) =>
  stack.sql<StoredEvent[]>((db) => narrow(db('search_events').where({ tenant_id: tenantId }).orderBy([{ column: 'created_at' }, { column: 'id' }])));

const rollupsOf = (stack: TestStack, tenantId: string) =>
  stack.sql((db) =>
    db('search_query_hourly')
      .where({ tenant_id: tenantId })
      .orderBy([{ column: 'hour' }, { column: 'query_normalized' }])
      .select('hour', 'query_normalized', 'searches', 'no_result_searches', 'total_took_ms', 'total_results'),
  );

describe('search analytics', () => {
  let stack: TestStack;
  let tenant: Tenant;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres' });
    tenant = await stack.createTenant();
  });
  afterAll(async () => {
    await stack?.close();
  });

  const aggregate = async () => {
    const jobId = await stack.platform.queues.enqueue(analyticsQueue, { tick: new Date(Date.now() + Math.random() * 1e6).toISOString() });
    const queue = stack.platform.queues.queue(analyticsQueue.name);
    return waitFor(async () => {
      const job = await queue.getJob(jobId);
      return (await job?.getState()) === 'completed' ? job!.returnvalue : null;
    }, { what: 'the aggregation job' });
  };

  const search = (key: string, body: Record<string, unknown>) => stack.as(key, 'post', '/api/search').send({ mode: 'keyword', ...body }).expect(200);

  it('moves searches from the stream into popular queries, counting a re-run batch once', async () => {
    const document = await stack.as(tenant.key, 'post', '/api/documents').send({ title: 'Owls', content: 'Barn owls hunt at night over open fields.' }).expect(202);
    await stack.waitForDocument(tenant.key, document.body.id);
    for (let i = 0; i < 3; i += 1) await stack.as(tenant.key, 'post', '/api/search').send({ query: 'barn owls', mode: 'keyword', user_id: 'u1' }).expect(200);
    await stack.as(tenant.key, 'post', '/api/search').send({ query: 'penguins', mode: 'keyword' }).expect(200);
    const report = await aggregate();
    expect(report.inserted).toBe(4);
    const popular = await stack.as(tenant.key, 'get', '/api/admin/analytics/popular?days=1').expect(200);
    expect(popular.body.items).toEqual([
      { query: 'barn owls', searches: 3, no_result_searches: 0 },
      { query: 'penguins', searches: 1, no_result_searches: 1 },
    ]);
    const again = await aggregate();
    expect(again.inserted).toBe(0);
  });

  it('records each search with its tenant, query as typed and normalised, mode, filters, counts, timing, cache flag, user and time', async () => {
    const owner = await stack.createTenant();
    const document = await stack
      .as(owner.key, 'post', '/api/documents')
      .send({ title: 'Owls', content: 'Barn owls hunt at night over open fields.', content_type: 'text', tags: ['birds'] })
      .expect(202);
    await stack.waitForDocument(owner.key, document.body.id);

    const before = Date.now();
    const typed = await search(owner.key, { query: 'Barn   OWLS', filters: { tags: ['birds'], content_type: 'text' }, user_id: 'alice' });
    const repeated = await search(owner.key, { query: 'Barn   OWLS', filters: { tags: ['birds'], content_type: 'text' }, user_id: 'alice' });
    const byHeader = await stack.as(owner.key, 'get', '/api/search?q=penguins&mode=keyword').set('X-User-Id', 'bob').expect(200);
    const bodyWins = await stack.as(owner.key, 'post', '/api/search').set('X-User-Id', 'dave').send({ query: 'owls', mode: 'keyword', user_id: 'carol' }).expect(200);
    const anonymous = await search(owner.key, { query: 'night' });
    const after = Date.now();
    const replies = [typed, repeated, byHeader, bodyWins, anonymous];

    const ids = replies.map((reply) => reply.body.query_id);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(new Set(ids).size).toBe(5);
    expect(typed.body.total_results).toBeGreaterThan(0);
    expect(byHeader.body.total_results).toBe(0);

    const report = await aggregate();
    expect(report.inserted).toBe(5);
    const events = await eventsOf(stack, owner.id);
    expect(events.map((event) => event.query_id)).toEqual(ids);

    const expected = [
      { query: 'Barn   OWLS', query_normalized: 'barn owls', filters: { tags: ['birds'], content_type: 'text' }, user_id: 'alice' },
      { query: 'Barn   OWLS', query_normalized: 'barn owls', filters: { tags: ['birds'], content_type: 'text' }, user_id: 'alice' },
      { query: 'penguins', query_normalized: 'penguins', filters: {}, user_id: 'bob' },
      { query: 'owls', query_normalized: 'owls', filters: {}, user_id: 'carol' },
      { query: 'night', query_normalized: 'night', filters: {}, user_id: null },
    ];
    events.forEach((event, index) => {
      const reply = replies[index].body;
      expect(event).toMatchObject({
        ...expected[index],
        tenant_id: owner.id,
        mode: 'keyword',
        result_count: reply.total_results,
        took_ms: reply.took_ms,
        cached: reply.cached,
      });
      const at = new Date(event.created_at).getTime();
      expect(at).toBeGreaterThanOrEqual(before);
      expect(at).toBeLessThanOrEqual(after);
    });
    // The repeat of an identical search is the cached one, and analytics says so.
    expect(events[0].cached).toBe(false);
    expect(events[1].cached).toBe(true);
    // Nothing was recorded under the other tenant.
    expect(await eventsOf(stack, tenant.id, (query) => query.whereIn('query_id', ids))).toEqual([]);
  });

  it('aggregates a re-delivered or abandoned batch once, and a never-committed one exactly once', async () => {
    const owner = await stack.createTenant();
    const redis = stack.platform.redis;
    const key = streamKey(stack.config.QUEUE_PREFIX);
    await aggregate(); // whatever earlier tests left in the stream

    await search(owner.key, { query: 'kestrel' });
    await search(owner.key, { query: 'Kestrel' });
    await search(owner.key, { query: 'merlin' });
    const aggregatedBefore = await metric(stack, 'ragworks_analytics_events_aggregated_total');
    const first = await aggregate();
    expect(first.inserted).toBe(3);
    expect(await metric(stack, 'ragworks_analytics_events_aggregated_total')).toBe(aggregatedBefore + 3);
    const rollups = await rollupsOf(stack, owner.id);
    expect(rollups.map((row) => [row.query_normalized, row.searches])).toEqual([
      ['kestrel', 2],
      ['merlin', 1],
    ]);

    // Re-delivery: the group forgets how far it had read, so every entry is read again.
    await redis.xgroup('SETID', key, CONSUMER_GROUP, '0');
    const reread = await aggregate();
    expect(reread.read).toBeGreaterThanOrEqual(3);
    expect(reread.inserted).toBe(0);
    expect(await rollupsOf(stack, owner.id)).toEqual(rollups);
    expect(await eventsOf(stack, owner.id)).toHaveLength(3);

    // A consumer that committed and died before XACK: its entries sit in the
    // pending list, idle long enough to be claimed by the next run.
    await redis.xgroup('SETID', key, CONSUMER_GROUP, '0');
    const read = (await redis.xreadgroup('GROUP', CONSUMER_GROUP, 'crashed', 'COUNT', 10_000, 'STREAMS', key, '>')) as Array<[string, Array<[string, string[]]>]>;
    const abandoned = read[0][1].map(([id]) => id);
    expect(abandoned.length).toBe(reread.read);
    await redis.call('XCLAIM', key, CONSUMER_GROUP, 'crashed', '0', ...abandoned, 'IDLE', '600000', 'JUSTID');
    const claimed = await aggregate();
    expect(claimed).toMatchObject({ read: abandoned.length, inserted: 0, acknowledged: abandoned.length });
    expect(await rollupsOf(stack, owner.id)).toEqual(rollups);
    expect((await redis.xpending(key, CONSUMER_GROUP))[0]).toBe(0);

    // A consumer that died before committing: the claimed entry is counted, once.
    await search(owner.key, { query: 'kestrel' });
    const lost = (await redis.xreadgroup('GROUP', CONSUMER_GROUP, 'crashed', 'COUNT', 10, 'STREAMS', key, '>')) as Array<[string, Array<[string, string[]]>]>;
    expect(lost[0][1]).toHaveLength(1);
    await redis.call('XCLAIM', key, CONSUMER_GROUP, 'crashed', '0', lost[0][1][0][0], 'IDLE', '600000', 'JUSTID');
    expect(await aggregate()).toMatchObject({ inserted: 1, acknowledged: 1 });
    expect(await aggregate()).toMatchObject({ read: 0, inserted: 0 });
    expect((await rollupsOf(stack, owner.id)).map((row) => [row.query_normalized, row.searches])).toEqual([
      ['kestrel', 3],
      ['merlin', 1],
    ]);
    expect(await metric(stack, 'ragworks_analytics_events_aggregated_total')).toBe(aggregatedBefore + 4);
    expect((await redis.xpending(key, CONSUMER_GROUP))[0]).toBe(0);
  });

  it('trending: week-over-week growth = (this − last) / max(last, m), queries under m left out, formula in the reply', async () => {
    const owner = await stack.createTenant();
    const other = await stack.createTenant();
    await insertRollups(stack, owner.id, [
      // this week 30, last week 10 → (30 − 10) / 10 = 2
      { query: 'alpha', daysAgo: 1, searches: 10 },
      { query: 'alpha', daysAgo: 3, searches: 20 },
      { query: 'alpha', daysAgo: 10, searches: 10 },
      // new this week: 12 / max(0, 5) = 2.4
      { query: 'beta', daysAgo: 2, searches: 12 },
      // 4 this week is under m = 5, whatever last week was
      { query: 'gamma', daysAgo: 2, searches: 4 },
      { query: 'gamma', daysAgo: 9, searches: 50 },
      // shrinking: (6 − 12) / 12 = −0.5
      { query: 'delta', daysAgo: 4, searches: 6 },
      { query: 'delta', daysAgo: 12, searches: 12 },
      // exactly m this week: (5 − 2) / 5 = 0.6
      { query: 'epsilon', daysAgo: 5, searches: 5 },
      { query: 'epsilon', daysAgo: 8, searches: 2 },
      // three weeks ago is neither week: (5 − 0) / 5 = 1
      { query: 'omega', daysAgo: 6, searches: 5 },
      { query: 'omega', daysAgo: 20, searches: 40 },
      // last week only
      { query: 'zeta', daysAgo: 13, searches: 30 },
    ]);
    await insertRollups(stack, other.id, [{ query: 'other tenant', daysAgo: 1, searches: 100 }]);

    const response = await stack.as(owner.key, 'get', '/api/admin/analytics/trending').expect(200);
    expect(response.body.formula).toBe(TRENDING_FORMULA);
    expect(response.body.formula).toContain('(this_week - last_week) / max(last_week, m)');
    expect(response.body.m).toBe(5);
    expect(response.body.items).toEqual([
      { query: 'beta', this_week: 12, last_week: 0, growth: 2.4 },
      { query: 'alpha', this_week: 30, last_week: 10, growth: 2 },
      { query: 'omega', this_week: 5, last_week: 0, growth: 1 },
      { query: 'epsilon', this_week: 5, last_week: 2, growth: 0.6 },
      { query: 'delta', this_week: 6, last_week: 12, growth: -0.5 },
    ]);
    const limited = await stack.as(owner.key, 'get', '/api/admin/analytics/trending?limit=2').expect(200);
    expect(limited.body.items.map((item: { query: string }) => item.query)).toEqual(['beta', 'alpha']);
    await stack.as(owner.key, 'get', '/api/admin/analytics/trending?limit=0').expect(400);
  });

  it('popular and no-results count the last `days` days only', async () => {
    const owner = await stack.createTenant();
    await insertRollups(stack, owner.id, [
      { query: 'recent', daysAgo: 2, searches: 4 },
      { query: 'both', daysAgo: 1, searches: 3, noResults: 1 },
      { query: 'both', daysAgo: 20, searches: 5, noResults: 2 },
      { query: 'older', daysAgo: 20, searches: 7, noResults: 7 },
      { query: 'ancient', daysAgo: 45, searches: 100 },
    ]);
    const popular = async (query: string) => (await stack.as(owner.key, 'get', `/api/admin/analytics/popular${query}`).expect(200)).body;
    expect(await popular('?days=7')).toEqual({
      days: 7,
      items: [
        { query: 'recent', searches: 4, no_result_searches: 0 },
        { query: 'both', searches: 3, no_result_searches: 1 },
      ],
    });
    expect(await popular('')).toEqual({
      days: 30,
      items: [
        { query: 'both', searches: 8, no_result_searches: 3 },
        { query: 'older', searches: 7, no_result_searches: 7 },
        { query: 'recent', searches: 4, no_result_searches: 0 },
      ],
    });
    expect((await popular('?days=60&limit=2')).items).toEqual([
      { query: 'ancient', searches: 100, no_result_searches: 0 },
      { query: 'both', searches: 8, no_result_searches: 3 },
    ]);

    const noResults = async (query: string) => (await stack.as(owner.key, 'get', `/api/admin/analytics/no-results${query}`).expect(200)).body;
    expect(await noResults('?days=7')).toEqual({ days: 7, items: [{ query: 'both', searches: 1 }] });
    expect(await noResults('?days=60')).toEqual({
      days: 60,
      items: [
        { query: 'older', searches: 7 },
        { query: 'both', searches: 3 },
      ],
    });
    expect((await noResults('?limit=1')).items).toEqual([{ query: 'older', searches: 7 }]);

    for (const bad of ['popular?limit=0', 'popular?limit=101', 'popular?days=0', 'popular?days=401', 'no-results?days=abc', 'no-results?limit=1.5']) {
      const response = await stack.as(owner.key, 'get', `/api/admin/analytics/${bad}`).expect(400);
      expect(response.body.error.code).toBe('validation_failed');
    }
  });

  it('stats: totals, unique queries and users, averages, modes, cache hit ratio and click-through rate from clicks', async () => {
    const owner = await stack.createTenant();
    const stranger = await stack.createTenant();
    const document = await stack.as(owner.key, 'post', '/api/documents').send({ title: 'Owls', content: 'Barn owls hunt at night over open fields.' }).expect(202);
    await stack.waitForDocument(owner.key, document.body.id);

    const replies = [
      await search(owner.key, { query: 'barn owls', user_id: 'alice' }),
      await search(owner.key, { query: 'Barn  Owls', user_id: 'alice' }),
      await stack.as(owner.key, 'post', '/api/search').set('X-User-Id', 'bob').send({ query: 'penguins', mode: 'keyword' }).expect(200),
      await stack.as(owner.key, 'get', '/api/search?q=owls&mode=keyword').expect(200),
    ].map((reply) => reply.body);
    expect(replies[0].results.length).toBeGreaterThan(0);
    expect(replies[3].results.length).toBeGreaterThan(0);
    const [semanticId] = await insertEvents(stack, owner.id, [
      { query: 'night hunting', mode: 'semantic', userId: 'carol', tookMs: 40, resultCount: 3, at: new Date(Date.now() - 2 * DAY) },
      { query: 'barn owls', mode: 'hybrid', userId: 'alice', tookMs: 10, resultCount: 1, cached: true, at: new Date(Date.now() - 3 * DAY) },
      { query: 'long ago', mode: 'keyword', userId: 'dora', tookMs: 1000, resultCount: 9, at: new Date(Date.now() - 40 * DAY) },
    ]);
    expect((await aggregate()).inserted).toBe(4);

    const click = (key: string, body: Record<string, unknown>) => stack.as(key, 'post', '/api/search/click').send(body);
    const documentId = replies[0].results[0].document_id;
    await click(owner.key, { query_id: replies[0].query_id, document_id: documentId, position: 1 }).expect(202);
    await click(owner.key, { query_id: replies[0].query_id, document_id: documentId, position: 1 }).expect(202); // the same click again
    await click(owner.key, { query_id: replies[0].query_id, document_id: documentId, position: 2 }).expect(202); // another click, same search
    await click(owner.key, { query_id: replies[3].query_id, document_id: documentId, position: 1 }).expect(202);
    await click(owner.key, { query_id: semanticId, document_id: documentId, position: 3 }).expect(202);
    // Another tenant's click on this tenant's search does not count here.
    await click(stranger.key, { query_id: replies[2].query_id, document_id: documentId, position: 1 }).expect(202);
    expect(await stack.sql((db) => db('search_clicks').where({ tenant_id: owner.id }).count('* as n').first())).toEqual({ n: 4 });

    const bad: Array<Record<string, unknown>> = [
      { query_id: replies[1].query_id, document_id: documentId },
      { query_id: replies[1].query_id, document_id: documentId, position: 0 },
      { query_id: replies[1].query_id, document_id: documentId, position: 1.5 },
      { query_id: 'not-a-uuid', document_id: documentId, position: 1 },
      { query_id: replies[1].query_id, document_id: 'nope', position: 1 },
      { query_id: replies[1].query_id, document_id: documentId, position: 1, extra: true },
    ];
    for (const body of bad) {
      const response = await click(owner.key, body).expect(400);
      expect(response.body.error.code).toBe('validation_failed');
    }

    // Four real searches and two recent constructed ones; the 40-day-old one is outside the default 30 days.
    const took = [...replies.map((reply) => reply.took_ms), 40, 10];
    const results = [...replies.map((reply) => reply.total_results), 3, 1];
    const cached = [...replies.map((reply) => reply.cached), false, true].filter(Boolean).length;
    const mean = (values: number[]) => values.reduce((sum, value) => sum + value, 0) / values.length;
    const stats = (await stack.as(owner.key, 'get', '/api/admin/analytics/stats').expect(200)).body;
    expect(stats).toMatchObject({
      days: 30,
      total_searches: 6,
      unique_queries: 4, // barn owls, penguins, owls, night hunting
      unique_users: 3, // alice, bob, carol
    });
    expect(stats.by_mode).toEqual({ keyword: 4, semantic: 1, hybrid: 1 });
    expect(stats.average_latency_ms).toBeCloseTo(mean(took), 6);
    expect(stats.average_results).toBeCloseTo(mean(results), 6);
    expect(stats.cache_hit_ratio).toBeCloseTo(cached / 6, 6);
    expect(cached).toBeGreaterThan(0); // the repeated "barn owls" came from the cache
    expect(stats.click_through_rate).toBeCloseTo(3 / 6, 6); // three searches with at least one click

    const wider = (await stack.as(owner.key, 'get', '/api/admin/analytics/stats?days=60').expect(200)).body;
    expect(wider).toMatchObject({ days: 60, total_searches: 7, unique_queries: 5, unique_users: 4 });
    expect(wider.click_through_rate).toBeCloseTo(3 / 7, 6);

    const empty = (await stack.as(stranger.key, 'get', '/api/admin/analytics/stats').expect(200)).body;
    expect(empty).toEqual({
      days: 30,
      total_searches: 0,
      unique_queries: 0,
      unique_users: 0,
      average_latency_ms: 0,
      average_results: 0,
      by_mode: {},
      cache_hit_ratio: null,
      click_through_rate: null,
    });
  });

  it('timeseries: every hour or day bucket present, empty ones as zeros; a bad range is refused', async () => {
    const owner = await stack.createTenant();
    await insertEvents(stack, owner.id, [
      { query: 'z', tookMs: 7, at: '2025-03-09T23:59:59.999Z' },
      { query: 'a', tookMs: 10, at: '2025-03-10T01:15:00Z' },
      { query: 'a', tookMs: 30, at: '2025-03-10T01:45:00Z' },
      { query: 'b', tookMs: 20, at: '2025-03-10T01:50:00Z' },
      { query: 'c', tookMs: 5, at: '2025-03-10T03:20:00Z' },
      { query: 'a', tookMs: 100, at: '2025-03-10T04:00:00Z' },
    ]);
    const series = async (query: string) => (await stack.as(owner.key, 'get', `/api/admin/analytics/timeseries?${query}`).expect(200)).body;
    const bucket = (at: string, searches: number, average_latency_ms: number, unique_queries: number) => ({ bucket: at, searches, average_latency_ms, unique_queries });

    // The start may carry any offset; +05:30 here is 00:00 UTC.
    expect(await series(`start=${encodeURIComponent('2025-03-10T05:30:00+05:30')}&end=2025-03-10T04:00:00Z`)).toEqual({
      interval: 'hour',
      start: '2025-03-10T00:00:00.000Z',
      end: '2025-03-10T04:00:00.000Z',
      items: [
        bucket('2025-03-10T00:00:00.000Z', 0, 0, 0),
        bucket('2025-03-10T01:00:00.000Z', 3, 20, 2),
        bucket('2025-03-10T02:00:00.000Z', 0, 0, 0),
        bucket('2025-03-10T03:00:00.000Z', 1, 5, 1),
      ],
    });
    // An unaligned range: the first bucket is the hour the start falls in, counting from the start.
    expect((await series('start=2025-03-10T01:30:00Z&end=2025-03-10T03:30:00Z&interval=hour')).items).toEqual([
      bucket('2025-03-10T01:00:00.000Z', 2, 25, 2),
      bucket('2025-03-10T02:00:00.000Z', 0, 0, 0),
      bucket('2025-03-10T03:00:00.000Z', 1, 5, 1),
    ]);
    expect((await series('start=2025-03-08T00:00:00Z&end=2025-03-12T00:00:00Z&interval=day')).items).toEqual([
      bucket('2025-03-08T00:00:00.000Z', 0, 0, 0),
      bucket('2025-03-09T00:00:00.000Z', 1, 7, 1),
      bucket('2025-03-10T00:00:00.000Z', 5, 33, 3),
      bucket('2025-03-11T00:00:00.000Z', 0, 0, 0),
    ]);
    const year = await series('start=2025-01-01T00:00:00Z&end=2026-01-01T00:00:00Z&interval=day');
    expect(year.items).toHaveLength(365);
    expect(year.items.filter((item: { searches: number }) => item.searches > 0)).toHaveLength(2);

    for (const bad of [
      'start=2025-03-10T04:00:00Z&end=2025-03-10T04:00:00Z', // end = start
      'start=2025-03-10T04:00:00Z&end=2025-03-10T01:00:00Z', // end before start
      'start=2025-01-01T00:00:00Z&end=2026-01-01T00:00:00Z&interval=hour', // 8,760 buckets
      'end=2025-03-10T04:00:00Z',
      'start=2025-03-10T00:00:00Z',
      'start=yesterday&end=2025-03-10T04:00:00Z',
      'start=2025-03-10T00:00:00Z&end=2025-03-10T04:00:00Z&interval=week',
    ]) {
      const response = await stack.as(owner.key, 'get', `/api/admin/analytics/timeseries?${bad}`).expect(400);
      expect(response.body.error.code).toBe('validation_failed');
    }
  });

  it('users/:user_id: totals, unique queries, favourite mode and top terms over the window', async () => {
    const owner = await stack.createTenant();
    const user = 'user@example.com';
    const ago = (ms: number) => new Date(Date.now() - ms);
    const latest = ago(HOUR);
    await insertEvents(stack, owner.id, [
      { query: 'owls', mode: 'keyword', userId: user, at: ago(3 * DAY) },
      { query: 'owls', mode: 'keyword', userId: user, at: ago(2 * DAY) },
      { query: 'eagles', mode: 'keyword', userId: user, at: ago(DAY) },
      { query: 'hawks', mode: 'semantic', userId: user, at: ago(DAY) },
      { query: 'eagles', mode: 'semantic', userId: user, at: ago(2 * HOUR) },
      { query: 'kites', mode: 'hybrid', userId: user, at: latest },
      { query: 'falcons', mode: 'semantic', userId: user, at: ago(50 * DAY) },
      { query: 'falcons', mode: 'semantic', userId: user, at: ago(51 * DAY) },
      { query: 'falcons', mode: 'semantic', userId: user, at: ago(52 * DAY) },
      ...Array.from({ length: 5 }, () => ({ query: 'owls', mode: 'keyword', userId: 'someone-else', at: ago(HOUR) })),
    ]);
    const activity = async (id: string, query = '') => (await stack.as(owner.key, 'get', `/api/admin/analytics/users/${encodeURIComponent(id)}${query}`).expect(200)).body;

    expect(await activity(user)).toEqual({
      user_id: user,
      days: 30,
      total_searches: 6,
      unique_queries: 4,
      last_search_at: latest.toISOString(),
      favourite_mode: 'keyword',
      top_terms: [
        { query: 'eagles', searches: 2 },
        { query: 'owls', searches: 2 },
        { query: 'hawks', searches: 1 },
        { query: 'kites', searches: 1 },
      ],
    });
    const wider = await activity(user, '?days=60');
    expect(wider).toMatchObject({ total_searches: 9, unique_queries: 5, favourite_mode: 'semantic' });
    expect(wider.top_terms[0]).toEqual({ query: 'falcons', searches: 3 });
    expect(await activity('nobody')).toEqual({
      user_id: 'nobody',
      days: 30,
      total_searches: 0,
      unique_queries: 0,
      last_search_at: null,
      favourite_mode: null,
      top_terms: [],
    });
  });

  it('exports queries with commas, quotes and line breaks as CSV that round-trips, and as matching JSON', async () => {
    const owner = await stack.createTenant();
    const typed = [
      { query: 'owls, hawks and "eagles"', user_id: 'user,with "quotes"' },
      { query: 'line one\nline two', user_id: 'alice' },
      { query: 'carriage\r\nreturn, "quoted"' },
      { query: '"' },
      { query: 'ünïcödé — 日本語', user_id: 'bob' },
      { query: 'plain' },
    ];
    const start = new Date(Date.now() - 1000).toISOString();
    const ids: string[] = [];
    for (const body of typed) ids.push((await search(owner.key, body)).body.query_id);
    expect((await aggregate()).inserted).toBe(typed.length);
    const end = new Date(Date.now() + 1000).toISOString();
    const range = `start=${encodeURIComponent(start)}&end=${encodeURIComponent(end)}`;

    const json = await stack.as(owner.key, 'get', `/api/admin/analytics/export?format=json&${range}`).expect(200);
    expect(json.headers['content-type']).toMatch(/^application\/json/);
    expect(json.headers['content-disposition']).toBe(`attachment; filename="search-events-${start.slice(0, 10)}-${end.slice(0, 10)}.json"`);
    const exported: Array<Record<string, unknown>> = json.body;
    const stored = await eventsOf(stack, owner.id, (query) => query.select([...EXPORT_COLUMNS]));
    expect(exported).toEqual(stored.map((row) => ({ ...row, created_at: new Date(row.created_at).toISOString() })));
    expect(exported.map((row) => row.query_id)).toEqual(ids);
    expect(exported.map((row) => row.query)).toEqual(typed.map((body) => body.query));

    const csv = await stack.as(owner.key, 'get', `/api/admin/analytics/export?format=csv&${range}`).expect(200);
    expect(csv.headers['content-type']).toMatch(/^text\/csv/);
    expect(csv.headers['content-disposition']).toBe(`attachment; filename="search-events-${start.slice(0, 10)}-${end.slice(0, 10)}.csv"`);
    const [header, ...records] = parseCsv(csv.text);
    expect(header).toEqual([...EXPORT_COLUMNS]);
    const asText = (value: unknown) => (value === null || value === undefined ? '' : String(value));
    expect(records).toEqual(exported.map((row) => EXPORT_COLUMNS.map((column) => asText(row[column]))));
    const column = (name: string) => records.map((record) => record[header.indexOf(name)]);
    expect(column('query')).toEqual(typed.map((body) => body.query));
    expect(column('user_id')).toEqual(typed.map((body) => body.user_id ?? ''));
  });

  it('exports text that a spreadsheet would run as a formula as inert text, and JSON unchanged (CSV injection)', async () => {
    const owner = await stack.createTenant();
    const typed = [
      { query: '=HYPERLINK("http://x","y")', user_id: '@SUM(1)' },
      { query: '+1+1', user_id: '-2+3' },
      { query: '@cmd', user_id: '\tindented' },
      { query: 'plain = fine', user_id: 'a=b' },
    ];
    const start = new Date(Date.now() - 1000).toISOString();
    for (const body of typed) await search(owner.key, body);
    expect((await aggregate()).inserted).toBe(typed.length);
    const range = `start=${encodeURIComponent(start)}&end=${encodeURIComponent(new Date(Date.now() + 1000).toISOString())}`;

    const csv = await stack.as(owner.key, 'get', `/api/admin/analytics/export?format=csv&${range}`).expect(200);
    const [header, ...records] = parseCsv(csv.text);
    const column = (name: string) => records.map((record) => record[header.indexOf(name)]);
    expect(column('query')).toEqual(["'=HYPERLINK(\"http://x\",\"y\")", "'+1+1", "'@cmd", 'plain = fine']);
    expect(column('query_normalized')).toEqual(["'=hyperlink(\"http://x\",\"y\")", "'+1+1", "'@cmd", 'plain = fine']);
    expect(column('user_id')).toEqual(["'@SUM(1)", "'-2+3", "'\tindented", 'a=b']);
    for (const record of records) for (const cell of record) expect(cell).not.toMatch(/^[=+\-@\t\r]/);
    // Every field quoted, the header too: nothing in the file is a bare cell.
    expect(csv.text.split('\r\n')[0]).toBe(header.map((name) => `"${name}"`).join(','));

    const json = await stack.as(owner.key, 'get', `/api/admin/analytics/export?format=json&${range}`).expect(200);
    expect(json.body.map((row: { query: string }) => row.query)).toEqual(typed.map((body) => body.query));
    expect(json.body.map((row: { user_id: string }) => row.user_id)).toEqual(typed.map((body) => body.user_id));
  });

  it('streams a large export complete and in order, paging through equal timestamps', async () => {
    const owner = await stack.createTenant();
    const total = 3_000;
    // 70 events share each timestamp, so pages of the export end in the middle of a run of equal times.
    await stack.sql((db) =>
      db.raw(
        `insert into search_events (id, tenant_id, query_id, query, query_normalized, mode, filters, result_count, took_ms, cached, user_id, created_at)
         select 'bulk-' || lpad(i::text, 5, '0'), ?, gen_random_uuid(), 'bulk, "query" ' || i, 'bulk, "query" ' || i, 'keyword', '{}',
                i % 7, i / 10.0, i % 2 = 0, 'user-' || (i % 13), timestamptz '2025-06-01T00:00:00Z' + (i / 70) * interval '1 second'
           from generate_series(0, ?::int - 1) as i`,
        [owner.id, total],
      ),
    );
    await insertEvents(stack, owner.id, [
      { query: 'just before the start', at: '2025-05-31T23:59:59.999Z' },
      { query: 'at the end, which is excluded', at: '2025-06-01T01:00:00Z' },
    ]);
    const expectedIds = Array.from({ length: total }, (_, i) => `bulk-${String(i).padStart(5, '0')}`);
    const range = 'start=2025-06-01T00:00:00Z&end=2025-06-01T01:00:00Z';

    const json = await stack.as(owner.key, 'get', `/api/admin/analytics/export?format=json&${range}`).expect(200);
    expect(json.headers['transfer-encoding']).toBe('chunked');
    expect(json.headers['content-length']).toBeUndefined();
    const rows: Array<{ id: string; query: string }> = json.body;
    expect(rows.map((row) => row.id)).toEqual(expectedIds);
    expect(rows[2_999].query).toBe('bulk, "query" 2999');

    const csv = await stack.as(owner.key, 'get', `/api/admin/analytics/export?format=csv&${range}`).expect(200);
    expect(csv.headers['transfer-encoding']).toBe('chunked');
    const [header, ...records] = parseCsv(csv.text);
    expect(records.map((record) => record[header.indexOf('id')])).toEqual(expectedIds);
    expect(records[1_234][header.indexOf('query')]).toBe('bulk, "query" 1234');

    for (const bad of [
      'format=csv&start=2025-06-01T01:00:00Z&end=2025-06-01T01:00:00Z', // empty range
      'format=json&start=2025-06-01T01:00:00Z&end=2025-06-01T00:00:00Z', // reversed
      'format=json&end=2025-06-01T01:00:00Z',
      'format=xml&start=2025-06-01T00:00:00Z&end=2025-06-01T01:00:00Z',
      'format=csv&start=2025-06-01&end=2025-06-02', // dates without a time
    ]) {
      const response = await stack.as(owner.key, 'get', `/api/admin/analytics/export?${bad}`).expect(400);
      expect(response.body.error.code).toBe('validation_failed');
    }
  });

  it('keeps every endpoint to the caller’s tenant, and needs analytics:read', async () => {
    const a = await stack.createTenant();
    const b = await stack.createTenant();
    const now = new Date();
    const user = 'shared-user';
    await insertEvents(stack, a.id, [
      { query: 'alpha-secret', userId: user, at: new Date(now.getTime() - HOUR) },
      { query: 'alpha-secret', userId: user, at: new Date(now.getTime() - HOUR) },
      { query: 'alpha-empty', userId: user, resultCount: 0, at: new Date(now.getTime() - HOUR) },
    ]);
    await insertEvents(stack, b.id, [{ query: 'bravo-secret', userId: user, at: new Date(now.getTime() - HOUR) }]);
    await insertRollups(stack, a.id, [
      { query: 'alpha-secret', daysAgo: 0, searches: 6 },
      { query: 'alpha-empty', daysAgo: 0, searches: 5, noResults: 5 },
    ]);
    await insertRollups(stack, b.id, [
      { query: 'bravo-secret', daysAgo: 0, searches: 7 },
      { query: 'bravo-empty', daysAgo: 0, searches: 5, noResults: 5 },
    ]);
    const urls = analyticsUrls(user, now);

    for (const endpoint of ANALYTICS_ENDPOINTS) {
      const url = urls[endpoint];
      const asA = await stack.as(a.key, 'get', url).expect(200);
      const asB = await stack.as(b.key, 'get', url).expect(200);
      expect(asA.text).not.toContain('bravo');
      expect(asB.text).not.toContain('alpha');
      if (endpoint !== 'stats' && endpoint !== 'timeseries') {
        expect(asA.text).toContain('alpha-');
        expect(asB.text).toContain('bravo-');
      }
      // The operator naming a tenant (by id or slug) sees exactly what its key sees.
      expect((await stack.operator('get', url, a.id).expect(200)).body).toEqual(asA.body);
      expect((await stack.operator('get', url, b.slug).expect(200)).body).toEqual(asB.body);
    }
    const count = async (key: string, url: string) => (await stack.as(key, 'get', url).expect(200)).body;
    expect((await count(a.key, urls.stats)).total_searches).toBe(3);
    expect((await count(b.key, urls.stats)).total_searches).toBe(1);
    expect((await count(a.key, urls['users/:user'])).total_searches).toBe(3);
    expect((await count(b.key, urls['users/:user'])).total_searches).toBe(1);
    const searchesIn = (body: { items: Array<{ searches: number }> }) => body.items.reduce((sum, item) => sum + item.searches, 0);
    expect(searchesIn(await count(a.key, urls.timeseries))).toBe(3);
    expect(searchesIn(await count(b.key, urls.timeseries))).toBe(1);

    // The operator must name a tenant; an unknown one is not found.
    const unnamed = await stack.operator('get', urls.popular).expect(400);
    expect(unnamed.body.error.code).toBe('validation_failed');
    await stack.operator('get', urls.popular, randomUUID()).expect(404);

    const searchOnly = await keyWithScopes(stack, a, ['search', 'documents:read']);
    const analyticsOnly = await keyWithScopes(stack, a, ['analytics:read']);
    for (const endpoint of ANALYTICS_ENDPOINTS) {
      const refused = await stack.as(searchOnly, 'get', urls[endpoint]).expect(403);
      expect(refused.body.error.code).toBe('forbidden');
      await stack.as(analyticsOnly, 'get', urls[endpoint]).expect(200);
    }
    await stack.as(analyticsOnly, 'post', '/api/search').send({ query: 'alpha', mode: 'keyword' }).expect(403);
  });
});

describe('search analytics on a database server outside UTC, with no workers running', () => {
  let stack: TestStack;
  let own: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
  let tenant: Tenant;

  beforeAll(async () => {
    // The server's time zone must not shift hourly rollups or day buckets: reports are in UTC.
    own = await createTestDatabase();
    const admin = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
    await admin.connect();
    try {
      await admin.query(`alter database ${own.name} set timezone to 'Asia/Kolkata'`);
    } finally {
      await admin.end();
    }
    stack = await startStack({ database: 'postgres', workers: false, env: { DATABASE_URL: own.applicationUrl, MIGRATION_DATABASE_URL: own.url } });
    tenant = await stack.createTenant();
  });
  afterAll(async () => {
    await stack?.close();
    await own?.drop();
  });

  const aggregate = () => aggregateSearchEvents(stack.platform.db.knex, stack.platform.redis, stack.config.QUEUE_PREFIX, 'test-consumer');
  const count = async (table: string) => Number((await stack.sql((db) => db(table).count('* as n').first()))?.n);

  it('runs on a server whose own sessions are not in UTC, while ragworks sessions are', async () => {
    const outsider = new pg.Client({ connectionString: own!.url });
    await outsider.connect();
    try {
      expect((await outsider.query(`select current_setting('TimeZone') as zone`)).rows[0].zone).toBe('Asia/Kolkata');
    } finally {
      await outsider.end();
    }
    const setting = await stack.platform.db.knex.raw(`select current_setting('TimeZone') as zone`);
    expect(setting.rows[0].zone).toBe('UTC');
  });

  it('writes nothing to the database on the search path: events wait in the stream until aggregation', async () => {
    const key = streamKey(stack.config.QUEUE_PREFIX);
    for (const query of ['first', 'second', 'first']) {
      await stack.as(tenant.key, 'post', '/api/search').send({ query, mode: 'keyword', user_id: 'u' }).expect(200);
    }
    expect(await stack.platform.redis.xlen(key)).toBe(3);
    expect(await count('search_events')).toBe(0);
    expect(await count('search_query_hourly')).toBe(0);

    expect(await aggregate()).toMatchObject({ read: 3, inserted: 3, acknowledged: 3 });
    expect(await count('search_events')).toBe(3);
    // Rolled up per UTC hour: the hour of each event, with no half-hour offset.
    const events = await stack.sql((db) => db('search_events').select('created_at', 'query_normalized'));
    const rollups = await stack.sql((db) => db('search_query_hourly').select('hour', 'query_normalized', 'searches'));
    const hourOf = (at: Date) => new Date(Math.floor(new Date(at).getTime() / HOUR) * HOUR).toISOString();
    const expected = new Map<string, number>();
    for (const event of events) {
      const slot = `${hourOf(event.created_at)} ${event.query_normalized}`;
      expected.set(slot, (expected.get(slot) ?? 0) + 1);
    }
    expect(new Map(rollups.map((row) => [`${new Date(row.hour).toISOString()} ${row.query_normalized}`, row.searches]))).toEqual(expected);
  });

  it('buckets the time series by UTC hours and days', async () => {
    await insertEvents(stack, tenant.id, [
      { query: 'a', tookMs: 10, at: '2025-03-10T20:00:00Z' }, // 01:30 on the 11th in Kolkata
      { query: 'b', tookMs: 20, at: '2025-03-10T23:30:00Z' },
      { query: 'c', tookMs: 30, at: '2025-03-11T01:00:00Z' },
    ]);
    const series = async (query: string) => (await stack.as(tenant.key, 'get', `/api/admin/analytics/timeseries?${query}`).expect(200)).body.items;
    expect(await series('start=2025-03-09T00:00:00Z&end=2025-03-12T00:00:00Z&interval=day')).toEqual([
      { bucket: '2025-03-09T00:00:00.000Z', searches: 0, average_latency_ms: 0, unique_queries: 0 },
      { bucket: '2025-03-10T00:00:00.000Z', searches: 2, average_latency_ms: 15, unique_queries: 2 },
      { bucket: '2025-03-11T00:00:00.000Z', searches: 1, average_latency_ms: 30, unique_queries: 1 },
    ]);
    expect(await series('start=2025-03-10T20:00:00Z&end=2025-03-10T22:00:00Z&interval=hour')).toEqual([
      { bucket: '2025-03-10T20:00:00.000Z', searches: 1, average_latency_ms: 10, unique_queries: 1 },
      { bucket: '2025-03-10T21:00:00.000Z', searches: 0, average_latency_ms: 0, unique_queries: 0 },
    ]);
  });

  it('refuses a search whose query or filter holds a lone surrogate, and aggregates the ones around it', async () => {
    // JSON allows "\ud800" on its own; PostgreSQL's jsonb does not: refused at the door.
    const raw = '{"query":"owls \\ud800 at night","mode":"keyword","filters":{"tags":["\\udfff"]},"user_id":"surrogate"}';
    await stack.as(tenant.key, 'post', '/api/search').set('Content-Type', 'application/json').send(raw).expect(400);
    await stack.as(tenant.key, 'post', '/api/search').send({ query: 'well formed', mode: 'keyword', user_id: 'surrogate' }).expect(200);
    expect(await aggregate()).toMatchObject({ read: 1, inserted: 1, acknowledged: 1 });
    const stored = await stack.sql((db) => db('search_events').where({ user_id: 'surrogate' }).orderBy('created_at').select('query', 'filters'));
    expect(stored).toEqual([{ query: 'well formed', filters: {} }]);
  });

  it('answers the search when Redis refuses the event, and counts the event as dropped', async () => {
    const redis = stack.platform.redis;
    const key = streamKey(stack.config.QUEUE_PREFIX);
    // A plain string where the stream should be: XADD fails with WRONGTYPE.
    await redis.del(key);
    await redis.set(key, 'not a stream');
    try {
      const before = await metric(stack, 'ragworks_analytics_events_dropped_total');
      const response = await stack.as(tenant.key, 'post', '/api/search').send({ query: 'dropped', mode: 'keyword' }).expect(200);
      expect(response.body.query_id).toEqual(expect.any(String));
      await waitFor(async () => (await metric(stack, 'ragworks_analytics_events_dropped_total')) === before + 1, { what: 'the dropped-event metric' });
      await stack.as(tenant.key, 'get', '/api/search?q=dropped&mode=keyword').expect(200);
      await waitFor(async () => (await metric(stack, 'ragworks_analytics_events_dropped_total')) === before + 2, { what: 'the dropped-event metric' });
      expect(await redis.get(key)).toBe('not a stream');
    } finally {
      await redis.del(key);
    }
  });
});

describe('search analytics switched off', () => {
  let stack: TestStack;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', workers: false, env: { ANALYTICS_ENABLED: 'false' } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('records no events when ANALYTICS_ENABLED=false, and search answers as usual', async () => {
    const tenant = await stack.createTenant();
    await stack.as(tenant.key, 'post', '/api/search').send({ query: 'owls', mode: 'keyword', user_id: 'u' }).expect(200);
    await stack.as(tenant.key, 'get', '/api/search?q=owls&mode=keyword').expect(200);
    expect(await stack.platform.redis.exists(streamKey(stack.config.QUEUE_PREFIX))).toBe(0);
    const report = await aggregateSearchEvents(stack.platform.db.knex, stack.platform.redis, stack.config.QUEUE_PREFIX, 'test-consumer');
    expect(report.inserted).toBe(0);
    expect((await stack.as(tenant.key, 'get', '/api/admin/analytics/stats').expect(200)).body.total_searches).toBe(0);
  });
});
