import type { RedisClient } from '../../redis';
import type { Knex } from 'knex';
import { acrossTenants } from '../../db/tenant-scope';
import { CONSUMER_GROUP, ensureConsumerGroup, normaliseQuery, streamKey, type SearchEvent } from './stream';

export interface AggregationReport {
  read: number;
  inserted: number;
  acknowledged: number;
  batches: number;
}

/** Entries a crashed consumer left unacknowledged are taken over after this long. */
const CLAIM_IDLE_MS = 60_000;
const BATCH = 500;
/** One job aggregates at most this many batches; the next tick continues. */
const MAX_BATCHES = 100;

type StreamEntry = [id: string, fields: string[]];

/**
 * Moves search events from the Redis stream into PostgreSQL through a
 * consumer group: raw events and hourly per-query rollups in one
 * transaction, acknowledged only after it commits. The raw event's primary
 * key is its stream id, and only newly inserted events are rolled up, so a
 * batch read twice (a crash before the acknowledgement) counts nothing twice.
 */
export async function aggregateSearchEvents(db: Knex, redis: RedisClient, prefix: string, consumer: string): Promise<AggregationReport> {
  await ensureConsumerGroup(redis, prefix);
  const report: AggregationReport = { read: 0, inserted: 0, acknowledged: 0, batches: 0 };
  const stream = streamKey(prefix);

  // First what other consumers left pending for too long, then what nobody has read.
  const claimed = (await redis.xautoclaim(stream, CONSUMER_GROUP, consumer, CLAIM_IDLE_MS, '0', 'COUNT', BATCH)) as [string, StreamEntry[]];
  if (claimed[1].length > 0) await processBatch(db, redis, stream, claimed[1], report);

  while (report.batches < MAX_BATCHES) {
    const reply = (await redis.xreadgroup('GROUP', CONSUMER_GROUP, consumer, 'COUNT', BATCH, 'STREAMS', stream, '>')) as Array<[string, StreamEntry[]]> | null;
    const entries = reply?.[0]?.[1] ?? [];
    if (entries.length === 0) break;
    await processBatch(db, redis, stream, entries, report);
  }
  return report;
}

async function processBatch(db: Knex, redis: RedisClient, stream: string, entries: StreamEntry[], report: AggregationReport): Promise<void> {
  report.batches += 1;
  report.read += entries.length;
  const rows = entries.flatMap(([id, fields]) => {
    const event = parseEvent(fields);
    if (!event) return [];
    return [
      {
        id,
        tenant_id: event.tenantId,
        query_id: event.queryId,
        query: event.query,
        query_normalized: normaliseQuery(event.query),
        mode: event.mode,
        filters: JSON.stringify(event.filters ?? {}),
        result_count: event.resultCount,
        took_ms: event.tookMs,
        cached: event.cached,
        user_id: event.userId,
        created_at: event.at,
      },
    ];
  });
  if (rows.length > 0) {
    // A batch mixes tenants: the one cross-tenant write of analytics.
    await acrossTenants(db, async (trx) => {
      // Rollup hours are UTC hours: date_trunc on timestamptz follows the session's time zone.
      await trx.raw(`set local time zone 'UTC'`);
      // Events of tenants deleted meanwhile are skipped by the join.
      const inserted = await trx.raw(
        `insert into search_events (id, tenant_id, query_id, query, query_normalized, mode, filters, result_count, took_ms, cached, user_id, created_at)
         select r.id, r.tenant_id, r.query_id, r.query, r.query_normalized, r.mode, r.filters::jsonb, r.result_count, r.took_ms, r.cached, r.user_id, r.created_at
           from jsonb_to_recordset(?::jsonb) as r(id text, tenant_id uuid, query_id uuid, query text, query_normalized text, mode text, filters text,
                                                result_count int, took_ms float8, cached boolean, user_id text, created_at timestamptz)
           join tenants t on t.id = r.tenant_id
         on conflict (id) do nothing
         returning tenant_id, query_normalized, result_count, took_ms, created_at`,
        [JSON.stringify(rows)],
      );
      const fresh: Array<{ tenant_id: string; query_normalized: string; result_count: number; took_ms: number; created_at: Date }> = inserted.rows;
      report.inserted += fresh.length;
      if (fresh.length === 0) return;
      await trx.raw(
        `insert into search_query_hourly (tenant_id, hour, query_normalized, searches, no_result_searches, total_took_ms, total_results)
         select tenant_id, date_trunc('hour', created_at), query_normalized, count(*), count(*) filter (where result_count = 0), sum(took_ms), sum(result_count)
           from jsonb_to_recordset(?::jsonb) as r(tenant_id uuid, query_normalized text, result_count int, took_ms float8, created_at timestamptz)
          group by 1, 2, 3
         on conflict (tenant_id, hour, query_normalized) do update
            set searches = search_query_hourly.searches + excluded.searches,
                no_result_searches = search_query_hourly.no_result_searches + excluded.no_result_searches,
                total_took_ms = search_query_hourly.total_took_ms + excluded.total_took_ms,
                total_results = search_query_hourly.total_results + excluded.total_results`,
        [JSON.stringify(fresh)],
      );
    });
  }
  report.acknowledged += await redis.xack(stream, CONSUMER_GROUP, ...entries.map(([id]) => id));
}

function parseEvent(fields: string[]): SearchEvent | null {
  const index = fields.indexOf('event');
  if (index < 0) return null;
  try {
    // A lone surrogate in the query or a filter (JSON.stringify keeps it as
    // \udXXX) is refused by jsonb and would fail the whole batch on every
    // retry, stalling aggregation for everyone; U+FFFD stands in for it, as
    // it did when the search itself sent the text to PostgreSQL.
    return JSON.parse(fields[index + 1], (_key, value: unknown) => (typeof value === 'string' ? value.toWellFormed() : value)) as SearchEvent;
  } catch {
    return null;
  }
}
