import type { Knex } from 'knex';
import { withTenant } from '../../db/tenant-scope';
import { badRequest } from '../../errors';
import { BYTES_PER_MB, QUOTA_NAMES, type QuotaName, type Quotas } from '../tenants/quotas';
import { COUNTERS, GAUGES, type CounterName, type GaugeName } from './counters';
import { dayCount, dayOf, laterDay } from './days';
import { usableKeys } from '../apikeys/apikeys';
import type { DailyQuotaName } from '../tenants/daily-quota';

/** One stored day of usage. */
export type UsageDay = UsageDayFields & Record<CounterName, number>;

interface UsageDayFields {
  day: string;
  closed: boolean;
  closed_at: string | null;
  computed_at: string;
  documents: number | null;
  storage_bytes: number | null;
  chunks: number | null;
  gauges_sampled_at: string | null;
}

export interface QuotaUsage {
  used: number;
  /** `null`: no limit. */
  limit: number | null;
  remaining: number | null;
}

export interface UsageSnapshot {
  tenant_id: string;
  day: string;
  quotas: Record<QuotaName, QuotaUsage> & { storage_mb: QuotaUsage & { used_bytes: number } };
  /** Today's rollup row, as of the last hourly run; null before the first. */
  today: UsageDay | null;
}

const iso = (value: Date | string | null) => (value === null ? null : new Date(value).toISOString());

function toUsageDay(row: Record<string, unknown>): UsageDay {
  const nullableNumber = (value: unknown) => (value === null ? null : Number(value));
  return {
    day: row.day as string,
    closed: row.closed_at !== null,
    closed_at: iso(row.closed_at as Date | null),
    computed_at: iso(row.computed_at as Date)!,
    ...(Object.fromEntries(COUNTERS.map((counter) => [counter, Number(row[counter])])) as Record<CounterName, number>),
    documents: nullableNumber(row.documents),
    storage_bytes: nullableNumber(row.storage_bytes),
    chunks: nullableNumber(row.chunks),
    gauges_sampled_at: iso(row.gauges_sampled_at as Date | null),
  };
}

const usageDays = (trx: Knex.Transaction, tenantId: string) =>
  trx('usage_daily')
    .select(trx.raw(`to_char(day, 'YYYY-MM-DD') as day`), 'closed_at', 'computed_at', ...COUNTERS, ...GAUGES, 'gauges_sampled_at')
    .where({ tenant_id: tenantId })
    .orderBy('usage_daily.day');

function quota(used: number, limit: number | null): QuotaUsage {
  return { used, limit, remaining: limit === null ? null : Math.max(0, Math.round((limit - used) * 1000) / 1000) };
}

/**
 * Current use of each quota against the tenant's limits. Documents and
 * storage come from the trigger-kept counters, searches and answers from
 * today's Redis counters (`usedToday`), keys that are not revoked, and endpoints.
 */
export async function usageSnapshot(
  db: Knex,
  tenant: { id: string; quotas: Quotas },
  usedToday: Record<DailyQuotaName, number>,
  now = new Date(),
): Promise<UsageSnapshot> {
  const day = dayOf(now);
  return withTenant(db, tenant.id, async (trx) => {
    const held = await trx('tenant_usage').first('documents', 'storage_bytes').where({ tenant_id: tenant.id });
    const keys = await usableKeys(trx, tenant.id).count({ count: '*' }).first();
    const endpoints = await trx('webhook_endpoints').where({ tenant_id: tenant.id }).count({ count: '*' }).first();
    const today = await usageDays(trx, tenant.id).where('usage_daily.day', day).first();
    const storageBytes = Number(held?.storage_bytes ?? 0);
    const used: Record<QuotaName, number> = {
      documents: Number(held?.documents ?? 0),
      storage_mb: Math.ceil((storageBytes / BYTES_PER_MB) * 1000) / 1000,
      ...usedToday,
      api_keys: Number(keys?.count ?? 0),
      webhook_endpoints: Number(endpoints?.count ?? 0),
    };
    const quotas = Object.fromEntries(QUOTA_NAMES.map((name) => [name, quota(used[name], tenant.quotas[name])])) as UsageSnapshot['quotas'];
    quotas.storage_mb.used_bytes = storageBytes;
    return { tenant_id: tenant.id, day, quotas, today: today ? toUsageDay(today) : null };
  });
}

/** The longest billing period one request may ask for. */
export const MAX_BILLING_DAYS = 366;

export interface BillingStatement {
  tenant_id: string;
  start: string;
  end: string;
  /** True when every day from the later of `start` and the tenant's first day up to `end` is closed: the numbers are final. */
  final: boolean;
  days: UsageDay[];
  /** Counters: the sum over the days. Gauges: the peak (the highest daily sample). */
  totals: Record<CounterName, number> & Record<GaugeName, number | null>;
}

/**
 * The stored days from `start` to `end` (both included) with their totals.
 * Days without a row (before the tenant existed, or not rolled up yet) are
 * absent.
 */
export async function billingStatement(db: Knex, tenant: { id: string; created_at: string }, start: string, end: string): Promise<BillingStatement> {
  if (start > end) throw badRequest('`start` must not be after `end`.', { field: 'start' });
  if (dayCount(start, end) > MAX_BILLING_DAYS) throw badRequest(`A statement covers at most ${MAX_BILLING_DAYS} days.`, { field: 'end', max_days: MAX_BILLING_DAYS });
  return withTenant(db, tenant.id, async (trx) => {
    const rows = await usageDays(trx, tenant.id).whereBetween('usage_daily.day', [start, end]);
    const days = rows.map(toUsageDay);
    const totals = Object.fromEntries([
      ...COUNTERS.map((counter) => [counter, days.reduce((sum, day) => sum + day[counter], 0)]),
      ...GAUGES.map((gauge) => {
        const samples = days.map((day) => day[gauge]).filter((value): value is number => value !== null);
        return [gauge, samples.length === 0 ? null : Math.max(...samples)];
      }),
    ]) as BillingStatement['totals'];
    const expected = dayCount(laterDay(start, dayOf(new Date(tenant.created_at))), end);
    const final = days.filter((day) => day.closed).length === expected;
    return { tenant_id: tenant.id, start, end, final, days, totals };
  });
}
