import type { Knex } from 'knex';
import { withTenant } from '../../db/tenant-scope';
import { badRequest } from '../../errors';
import { newId } from '../ids';

const daysAgo = (db: Knex, days: number) => db.raw(`now() - make_interval(days => ?)`, [days]);

/** Most searched queries over the last `days` days. */
export async function popularQueries(db: Knex, tenantId: string, options: { limit: number; days: number }) {
  return withTenant(db, tenantId, async (trx) => {
    const rows = await trx('search_query_hourly')
      .select('query_normalized as query')
      .sum({ searches: 'searches' })
      .sum({ no_result_searches: 'no_result_searches' })
      .where({ tenant_id: tenantId })
      .where('hour', '>=', daysAgo(trx, options.days))
      .groupBy('query_normalized')
      .orderBy([{ column: 'searches', order: 'desc' }, { column: 'query_normalized' }])
      .limit(options.limit);
    return rows.map((row: Record<string, unknown>) => ({ query: row.query, searches: Number(row.searches), no_result_searches: Number(row.no_result_searches) }));
  });
}

/** The trending formula, stated in every reply. */
export const TRENDING_FORMULA = 'growth = (this_week - last_week) / max(last_week, m); only queries with this_week >= m';

/**
 * Week-over-week growth of each query: this week is the last 7 days, last
 * week the 7 before. Dividing by max(last_week, m) keeps a query that went
 * from 0 to 1 from topping the list; m is also the minimum volume.
 */
export async function trendingQueries(db: Knex, tenantId: string, options: { limit: number; minVolume: number }) {
  return withTenant(db, tenantId, async (trx) => {
    const m = options.minVolume;
    const result = await trx.raw(
      `select query_normalized as query, this_week, last_week,
              (this_week - last_week)::float8 / greatest(last_week, ?) as growth
         from (select query_normalized,
                      sum(searches) filter (where hour >= now() - interval '7 days') as this_week,
                      coalesce(sum(searches) filter (where hour < now() - interval '7 days'), 0) as last_week
                 from search_query_hourly
                where tenant_id = ? and hour >= now() - interval '14 days'
                group by query_normalized) weeks
        where this_week >= ?
        order by growth desc, this_week desc, query_normalized
        limit ?`,
      [m, tenantId, m, options.limit],
    );
    return {
      formula: TRENDING_FORMULA,
      m,
      items: result.rows.map((row: Record<string, unknown>) => ({
        query: row.query,
        this_week: Number(row.this_week),
        last_week: Number(row.last_week),
        growth: Number(row.growth),
      })),
    };
  });
}

/** Queries that found nothing, most frequent first. */
export async function noResultQueries(db: Knex, tenantId: string, options: { limit: number; days: number }) {
  return withTenant(db, tenantId, async (trx) => {
    const rows = await trx('search_query_hourly')
      .select('query_normalized as query')
      .sum({ searches: 'no_result_searches' })
      .where({ tenant_id: tenantId })
      .where('hour', '>=', daysAgo(trx, options.days))
      .groupBy('query_normalized')
      .havingRaw('sum(no_result_searches) > 0')
      .orderBy([{ column: 'searches', order: 'desc' }, { column: 'query_normalized' }])
      .limit(options.limit);
    return rows.map((row: Record<string, unknown>) => ({ query: row.query, searches: Number(row.searches) }));
  });
}

/**
 * Totals over the last `days` days. Click-through rate is Algolia's:
 * searches with at least one click divided by searches.
 */
export async function searchStats(db: Knex, tenantId: string, days: number) {
  return withTenant(db, tenantId, async (trx) => {
    const since = daysAgo(trx, days);
    const totals = await trx('search_events')
      .where({ tenant_id: tenantId })
      .where('created_at', '>=', since)
      .first(
        trx.raw('count(*)::int as total_searches'),
        trx.raw('count(distinct query_normalized)::int as unique_queries'),
        trx.raw('count(distinct user_id)::int as unique_users'),
        trx.raw('coalesce(avg(took_ms), 0)::float8 as average_latency_ms'),
        trx.raw('coalesce(avg(result_count), 0)::float8 as average_results'),
        trx.raw('count(*) filter (where cached)::int as cached_searches'),
        // Only the tenant's own clicks: a click is stored under the tenant that sent it, whatever query_id it names.
        trx.raw(`count(*) filter (where exists (select 1 from search_clicks c where c.query_id = search_events.query_id and c.tenant_id = search_events.tenant_id))::int as searches_with_clicks`),
      );
    const modes = await trx('search_events').select('mode').count('* as searches').where({ tenant_id: tenantId }).where('created_at', '>=', since).groupBy('mode');
    const total = Number(totals.total_searches);
    return {
      days,
      total_searches: total,
      unique_queries: Number(totals.unique_queries),
      unique_users: Number(totals.unique_users),
      average_latency_ms: Number(totals.average_latency_ms),
      average_results: Number(totals.average_results),
      by_mode: Object.fromEntries(modes.map((row: Record<string, unknown>) => [row.mode, Number(row.searches)])),
      cache_hit_ratio: total > 0 ? Number(totals.cached_searches) / total : null,
      click_through_rate: total > 0 ? Number(totals.searches_with_clicks) / total : null,
    };
  });
}

/**
 * Answers over the last `days` days: how many (and how many from the
 * cache), their latency, the share that cited none of their passages (the
 * model could not answer from them, or ignored the instruction to cite),
 * the tokens they spent, the feedback, and the latest answers rated down
 * with their comments.
 */
export async function answerStats(db: Knex, tenantId: string, days: number) {
  return withTenant(db, tenantId, async (trx) => {
    const since = daysAgo(trx, days);
    const totals = await trx('answer_events')
      .where({ tenant_id: tenantId })
      .where('created_at', '>=', since)
      .first(
        trx.raw('count(*)::int as total_answers'),
        trx.raw('count(*) filter (where cached)::int as cached_answers'),
        trx.raw('count(*) filter (where cited = 0)::int as uncited_answers'),
        trx.raw('coalesce(avg(took_ms), 0)::float8 as average_latency_ms'),
        trx.raw('coalesce(sum(prompt_tokens), 0)::int8 as prompt_tokens'),
        trx.raw('coalesce(sum(completion_tokens), 0)::int8 as completion_tokens'),
        trx.raw(`count(*) filter (where rating = 'up')::int as rated_up`),
        trx.raw(`count(*) filter (where rating = 'down')::int as rated_down`),
      );
    const ratedDown = await trx('answer_events')
      .select('query_id', 'question', 'feedback_comment as comment', 'feedback_at')
      .where({ tenant_id: tenantId, rating: 'down' })
      .where('created_at', '>=', since)
      .orderBy('feedback_at', 'desc')
      .limit(10);
    const total = Number(totals.total_answers);
    return {
      days,
      total_answers: total,
      cached_answers: Number(totals.cached_answers),
      average_latency_ms: Number(totals.average_latency_ms),
      no_citation_rate: total > 0 ? Number(totals.uncited_answers) / total : null,
      prompt_tokens: Number(totals.prompt_tokens),
      completion_tokens: Number(totals.completion_tokens),
      feedback: { up: Number(totals.rated_up), down: Number(totals.rated_down) },
      recent_down: ratedDown.map((row: { query_id: string; question: string; comment: string | null; feedback_at: Date }) => ({
        query_id: row.query_id,
        question: row.question,
        comment: row.comment,
        rated_at: row.feedback_at.toISOString(),
      })),
    };
  });
}

/** At most this many buckets per time series. */
const MAX_BUCKETS = 5_000;

/** Searches per hour or day between `start` and `end`, every bucket present, empty ones as zeros. */
export async function searchTimeseries(db: Knex, tenantId: string, options: { start: string; end: string; interval: 'hour' | 'day' }) {
  return withTenant(db, tenantId, async (trx) => {
    const start = new Date(options.start);
    const end = new Date(options.end);
    if (!(end > start)) throw badRequest('`end` must be after `start`.', { field: 'end' });
    const buckets = (end.getTime() - start.getTime()) / (options.interval === 'hour' ? 3_600_000 : 86_400_000);
    if (buckets > MAX_BUCKETS) throw badRequest(`At most ${MAX_BUCKETS} buckets; use a shorter range or interval=day.`, { buckets: Math.ceil(buckets) });
    const step = options.interval === 'hour' ? '1 hour' : '1 day';
    // Buckets are UTC hours and days whatever the server's time zone: date_trunc
    // and interval arithmetic on timestamptz follow the session's TimeZone.
    await trx.raw(`set local time zone 'UTC'`);
    const result: { rows: Array<{ bucket: Date; searches: number; average_latency_ms: number; unique_queries: number }> } = await trx.raw(
      `select b.bucket, count(e.id)::int as searches, coalesce(avg(e.took_ms), 0)::float8 as average_latency_ms,
              count(distinct e.query_normalized)::int as unique_queries
         from generate_series(date_trunc(?, ?::timestamptz), ?::timestamptz - interval '1 microsecond', ?::interval) as b(bucket)
         left join search_events e
           on e.tenant_id = ? and e.created_at >= b.bucket and e.created_at < b.bucket + ?::interval
          and e.created_at >= ?::timestamptz and e.created_at < ?::timestamptz
        group by b.bucket
        order by b.bucket`,
      [options.interval, start.toISOString(), end.toISOString(), step, tenantId, step, start.toISOString(), end.toISOString()],
    );
    return {
      interval: options.interval,
      start: start.toISOString(),
      end: end.toISOString(),
      items: result.rows.map((row) => ({
        bucket: new Date(row.bucket).toISOString(),
        searches: Number(row.searches),
        average_latency_ms: Number(row.average_latency_ms),
        unique_queries: Number(row.unique_queries),
      })),
    };
  });
}

/** One user's searching: totals, favourite mode, top queries. */
export async function userActivity(db: Knex, tenantId: string, userId: string, days: number) {
  return withTenant(db, tenantId, async (trx) => {
    const base = () => trx('search_events').where({ tenant_id: tenantId, user_id: userId }).where('created_at', '>=', daysAgo(trx, days));
    // One transaction, one connection: its statements run one after another.
    const totals = await base().first(trx.raw('count(*)::int as total_searches'), trx.raw('count(distinct query_normalized)::int as unique_queries'), trx.raw('max(created_at) as last_search_at'));
    const modes = await base().select('mode').count('* as searches').groupBy('mode').orderBy([{ column: 'searches', order: 'desc' }, { column: 'mode' }]);
    const terms = await base().select('query_normalized as query').count('* as searches').groupBy('query_normalized').orderBy([{ column: 'searches', order: 'desc' }, { column: 'query_normalized' }]).limit(10);
    return {
      user_id: userId,
      days,
      total_searches: Number(totals.total_searches),
      unique_queries: Number(totals.unique_queries),
      last_search_at: totals.last_search_at ? new Date(totals.last_search_at).toISOString() : null,
      favourite_mode: (modes[0]?.mode as string | undefined) ?? null,
      top_terms: terms.map((row: Record<string, unknown>) => ({ query: row.query, searches: Number(row.searches) })),
    };
  });
}

/** Records a click on a result; the same click twice is one. */
export async function recordClick(db: Knex, tenantId: string, click: { query_id: string; document_id: string; position: number }) {
  return withTenant(db, tenantId, async (trx) => {
    await trx('search_clicks')
      .insert({ id: newId(), tenant_id: tenantId, ...click })
      .onConflict(['tenant_id', 'query_id', 'document_id', 'position'])
      .ignore();
  });
}

export const EXPORT_COLUMNS = ['id', 'created_at', 'query_id', 'query', 'query_normalized', 'mode', 'result_count', 'took_ms', 'cached', 'user_id'] as const;

const EXPORT_PAGE = 1_000;

/**
 * The tenant's raw events in a time range, a page at a time (keyset on
 * created_at and id): an export of any size is never held in memory, and
 * this works on the embedded database too, which has no cursors.
 */
export async function* exportEvents(db: Knex, tenantId: string, range: { start: string; end: string }): AsyncGenerator<Record<string, unknown>> {
  let after: { created_at: Date; id: string } | null = null;
  for (;;) {
    const query = db('search_events')
      .select([...EXPORT_COLUMNS])
      .where({ tenant_id: tenantId })
      .where('created_at', '>=', range.start)
      .where('created_at', '<', range.end)
      .orderBy([{ column: 'created_at' }, { column: 'id' }])
      .limit(EXPORT_PAGE);
    if (after) query.whereRaw('(created_at, id) > (?, ?)', [after.created_at, after.id]);
    const rows: Array<Record<string, unknown> & { created_at: Date; id: string }> = await withTenant(db, tenantId, (trx) => query.transacting(trx));
    for (const row of rows) yield row;
    if (rows.length < EXPORT_PAGE) return;
    after = rows[rows.length - 1];
  }
}
