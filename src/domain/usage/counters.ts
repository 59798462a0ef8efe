import type { Knex } from 'knex';
import { addDays, startOf } from './days';

/** Counted per UTC day from the timestamps of their source rows. */
export const COUNTERS = [
  'documents_created',
  'documents_deleted',
  'searches',
  'index_jobs',
  'webhook_deliveries',
  'answers',
  'answer_prompt_tokens',
  'answer_completion_tokens',
] as const;
export type CounterName = (typeof COUNTERS)[number];
export type Counters = Record<CounterName, number>;

/** Sampled at a point in time: what the tenant holds. */
export const GAUGES = ['documents', 'storage_bytes', 'chunks'] as const;
export type GaugeName = (typeof GAUGES)[number];
export type Gauges = Record<GaugeName, number>;

export const zeroCounters = (): Counters => Object.fromEntries(COUNTERS.map((counter) => [counter, 0])) as Counters;

/**
 * Where each counter comes from. Documents are counted from the
 * `document.created` / `document.deleted` events, which are stored in the
 * same transaction as the change, one per document, whether or not any
 * endpoint subscribes; searches from the analytics events, which may arrive
 * late; deliveries of any origin (event, redelivery, replay, test); answers
 * and the model tokens they spent (none for one answered from the cache)
 * from the answer events.
 */
const SOURCES: ReadonlyArray<{ counter: CounterName; table: string; where?: string; value?: string }> = [
  { counter: 'documents_created', table: 'webhook_events', where: `type = 'document.created'` },
  { counter: 'documents_deleted', table: 'webhook_events', where: `type = 'document.deleted'` },
  { counter: 'searches', table: 'search_events' },
  { counter: 'index_jobs', table: 'index_jobs' },
  { counter: 'webhook_deliveries', table: 'webhook_deliveries' },
  { counter: 'answers', table: 'answer_events' },
  { counter: 'answer_prompt_tokens', table: 'answer_events', value: 'sum(prompt_tokens)' },
  { counter: 'answer_completion_tokens', table: 'answer_events', value: 'sum(completion_tokens)' },
];

/**
 * Every counter of every day from `first` to `last` (both included), each
 * day being exactly [day 00:00 UTC, next day 00:00 UTC). Days without rows
 * are present with zeros. Pure function of the raw rows: running it again
 * over the same rows gives the same numbers.
 */
export async function countersByDay(trx: Knex.Transaction, tenantId: string, first: string, last: string): Promise<Map<string, Counters>> {
  const from = startOf(first).toISOString();
  const until = startOf(addDays(last, 1)).toISOString();
  const selects = SOURCES.map(
    (source) => `select '${source.counter}' as counter, to_char(created_at at time zone 'UTC', 'YYYY-MM-DD') as day, ${source.value ?? 'count(*)'} as count
                   from ${source.table}
                  where tenant_id = :tenantId and created_at >= cast(:from as timestamptz) and created_at < cast(:until as timestamptz)${source.where ? ` and ${source.where}` : ''}
                  group by 2`,
  );
  const result = await trx.raw(selects.join('\nunion all\n'), { tenantId, from, until });
  const byDay = new Map<string, Counters>();
  for (let day = first; day <= last; day = addDays(day, 1)) byDay.set(day, zeroCounters());
  for (const row of result.rows as Array<{ counter: CounterName; day: string; count: number | string }>) {
    const counters = byDay.get(row.day);
    if (counters) counters[row.counter] = Number(row.count);
  }
  return byDay;
}

/** What the tenant holds right now: live counters kept by triggers, and its chunks. */
export async function currentGauges(trx: Knex.Transaction, tenantId: string): Promise<Gauges> {
  const result = await trx.raw(
    `select coalesce((select documents from tenant_usage where tenant_id = :tenantId), 0) as documents,
            coalesce((select storage_bytes from tenant_usage where tenant_id = :tenantId), 0) as storage_bytes,
            coalesce((select sum(chunk_count) from documents where tenant_id = :tenantId), 0) as chunks`,
    { tenantId },
  );
  const row = result.rows[0];
  return { documents: Number(row.documents), storage_bytes: Number(row.storage_bytes), chunks: Number(row.chunks) };
}
