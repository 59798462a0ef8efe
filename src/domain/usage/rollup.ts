import type { Knex } from 'knex';
import { withTenant } from '../../db/tenant-scope';
import { TIER_RETENTION_DAYS, type Tier } from '../tenants/quotas';
import { COUNTERS, countersByDay, currentGauges, type Counters, type Gauges } from './counters';
import { addDays, closesAt, dayOf, daysFrom, firstWholeDay, laterDay } from './days';

/**
 * The most days back an hourly run recomputes, so a run's work stays
 * bounded however long the rollup was down.
 */
export const MAX_CATCH_UP_DAYS = 31;

export interface RollupSettings {
  /** How long after a day's end late events are still counted (USAGE_DAY_CLOSE_GRACE_MINUTES). */
  graceMinutes: number;
  /** How long webhook events and deliveries are kept (WEBHOOK_LOG_RETENTION_DAYS). */
  webhookLogDays: number;
}

/** What the rollup and the reconciliation need to know of a tenant. */
export interface UsageTenant {
  id: string;
  tier: Tier;
  created_at: Date | string;
}

/**
 * How many days back every raw source of a tenant's counters is still
 * whole: search events are kept per tier, webhook events and deliveries
 * for WEBHOOK_LOG_RETENTION_DAYS. Recounting a day older than this would
 * count rows retention has already removed.
 */
export function rawDataDays(tier: Tier, webhookLogDays: number): number {
  return Math.min(TIER_RETENTION_DAYS[tier] ?? Number.POSITIVE_INFINITY, webhookLogDays);
}

/** The first day whose counters can be recomputed from raw rows at `now`: not before the tenant existed, nor before retention's cut. */
export function firstRecountableDay(tenant: UsageTenant, now: Date, webhookLogDays: number): string {
  return laterDay(dayOf(new Date(tenant.created_at)), firstWholeDay(now, rawDataDays(tenant.tier, webhookLogDays)));
}

export interface RollupResult {
  /** Days written (open days recomputed, and days closed now). */
  written: string[];
  /** Days closed by this run. */
  closed: string[];
}

/**
 * Recomputes the tenant's usage for today and every earlier day not yet
 * closed, as of `now`, and closes each day whose end plus the grace period
 * has passed. Counters are recounted from the raw rows of the exact UTC day,
 * so a re-run writes the same numbers and a late event that arrives before
 * the close is counted by the next run. Gauges are sampled: a run during the
 * day writes the current values; later runs leave them; the close keeps the
 * last sample, or takes the current value if the day never had one.
 * A closed row is never written again (the upsert's WHERE).
 *
 * Open days too old to recount (see firstRecountableDay, at most
 * MAX_CATCH_UP_DAYS back) are closed as they stand.
 */
export async function rollUpTenantUsage(db: Knex, tenant: UsageTenant, now: Date, settings: RollupSettings): Promise<RollupResult> {
  const today = dayOf(now);
  const first = laterDay(firstRecountableDay(tenant, now, settings.webhookLogDays), addDays(today, -MAX_CATCH_UP_DAYS));
  if (first > today) return { written: [], closed: [] };
  return withTenant(db, tenant.id, async (trx) => {
    const closedStale = await closeStaleDays(trx, tenant.id, first, now);
    // Closed days are skipped up front, so only open days are recounted; the upsert's guard covers a day closed meanwhile by another run.
    const closedRows = await trx('usage_daily').select(trx.raw(`to_char(day, 'YYYY-MM-DD') as day`)).where({ tenant_id: tenant.id }).where('day', '>=', first).whereNotNull('closed_at');
    const closedDays = new Set(closedRows.map((row: { day: string }) => row.day));
    const open = daysFrom(first, today).filter((day) => !closedDays.has(day));
    if (open.length === 0) return { written: closedStale, closed: closedStale };
    const counters = await countersByDay(trx, tenant.id, open[0], today);
    const gauges = await currentGauges(trx, tenant.id);
    const written = await upsertDays(trx, tenant.id, open.map((day) => usageRow(day, counters.get(day)!, gauges, now, settings.graceMinutes)), now);
    return {
      written: [...closedStale, ...written.map((row) => row.day)],
      closed: [...closedStale, ...written.filter((row) => row.closed).map((row) => row.day)],
    };
  });
}

interface DayRow extends Counters {
  day: string;
  /** Gauges to offer: the current values when this run samples or closes the day, else null. */
  documents: number | null;
  storage_bytes: number | null;
  chunks: number | null;
  sampled_at: string | null;
  close: boolean;
}

function usageRow(day: string, counters: Counters, gauges: Gauges, now: Date, graceMinutes: number): DayRow {
  const samples = day === dayOf(now);
  const close = now.getTime() >= closesAt(day, graceMinutes).getTime();
  const offer = samples || close;
  return {
    day,
    ...counters,
    documents: offer ? gauges.documents : null,
    storage_bytes: offer ? gauges.storage_bytes : null,
    chunks: offer ? gauges.chunks : null,
    sampled_at: offer ? now.toISOString() : null,
    close,
  };
}

/**
 * One statement for every day; returns the days it wrote. On conflict:
 * counters are replaced; a sample offered by a run during the day replaces
 * the stored one unless that one is from a later tick (jobs can run out of
 * order), a sample offered by the closing run only fills a missing one; a
 * row already closed is left alone, so a closed day never changes.
 */
async function upsertDays(trx: Knex.Transaction, tenantId: string, rows: DayRow[], now: Date): Promise<Array<{ day: string; closed: boolean }>> {
  if (rows.length === 0) return [];
  const takeSample = `excluded.gauges_sampled_at is not null and (u.gauges_sampled_at is null
    or (excluded.closed_at is null and excluded.gauges_sampled_at >= u.gauges_sampled_at))`;
  const gauge = (column: string) => `${column} = case when ${takeSample} then excluded.${column} else u.${column} end`;
  const result = await trx.raw(
    `insert into usage_daily as u (tenant_id, day, ${COUNTERS.join(', ')},
                                   documents, storage_bytes, chunks, gauges_sampled_at, computed_at, closed_at)
     select :tenantId, r.day, ${COUNTERS.map((counter) => `r.${counter}`).join(', ')},
            r.documents, r.storage_bytes, r.chunks, r.sampled_at, cast(:now as timestamptz), case when r.close then cast(:now as timestamptz) end
       from jsonb_to_recordset(cast(:rows as jsonb)) as r(day date, ${COUNTERS.map((counter) => `${counter} bigint`).join(', ')},
            documents bigint, storage_bytes bigint, chunks bigint, sampled_at timestamptz, close boolean)
     on conflict (tenant_id, day) do update set
            ${COUNTERS.map((counter) => `${counter} = excluded.${counter}`).join(',\n            ')},
            ${gauge('documents')},
            ${gauge('storage_bytes')},
            ${gauge('chunks')},
            ${gauge('gauges_sampled_at')},
            computed_at = excluded.computed_at,
            closed_at = excluded.closed_at
      where u.closed_at is null
     returning to_char(day, 'YYYY-MM-DD') as day, closed_at is not null as closed`,
    { tenantId, now: now.toISOString(), rows: JSON.stringify(rows) },
  );
  return result.rows;
}

/**
 * Closes open days before `first` without recounting them: their raw rows
 * may be gone. A gauge never sampled takes the current value.
 */
async function closeStaleDays(trx: Knex.Transaction, tenantId: string, first: string, now: Date): Promise<string[]> {
  const stale = await trx('usage_daily').where({ tenant_id: tenantId }).where('day', '<', first).whereNull('closed_at').first('tenant_id');
  if (!stale) return [];
  const gauges = await currentGauges(trx, tenantId);
  const result = await trx.raw(
    `update usage_daily
        set documents = coalesce(documents, :documents), storage_bytes = coalesce(storage_bytes, :storageBytes), chunks = coalesce(chunks, :chunks),
            gauges_sampled_at = coalesce(gauges_sampled_at, cast(:now as timestamptz)), closed_at = cast(:now as timestamptz)
      where tenant_id = :tenantId and day < cast(:first as date) and closed_at is null
     returning to_char(day, 'YYYY-MM-DD') as day`,
    { tenantId, first, now: now.toISOString(), documents: gauges.documents, storageBytes: gauges.storage_bytes, chunks: gauges.chunks },
  );
  return result.rows.map((row: { day: string }) => row.day).sort();
}

/** Every tenant, for the hourly fan-out and the reconciliation. Tenants are not tenant-owned rows. */
export async function usageTenants(db: Knex): Promise<UsageTenant[]> {
  return db('tenants').select('id', 'tier', 'created_at').orderBy('id');
}

export async function usageTenant(db: Knex, tenantId: string): Promise<UsageTenant | null> {
  return (await db('tenants').first('id', 'tier', 'created_at').where({ id: tenantId })) ?? null;
}
