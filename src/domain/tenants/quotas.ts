import type { Knex } from 'knex';
import { AppError } from '../../errors';
import { withTenant } from '../../db/tenant-scope';
import { recordEvent, type EventSink } from '../webhooks/events';

export const QUOTA_NAMES = ['documents', 'storage_mb', 'searches_per_day', 'answers_per_day', 'api_keys', 'webhook_endpoints'] as const;
export type QuotaName = (typeof QUOTA_NAMES)[number];
/** A limit per quota; `null` means none. */
export type Quotas = Record<QuotaName, number | null>;
/** What a tenant overrides: a number, `'unlimited'`, or nothing (the tier's value). */
export type QuotaOverrides = Partial<Record<QuotaName, number | 'unlimited'>>;

export const TIER_QUOTAS = {
  free: { documents: 100, storage_mb: 100, searches_per_day: 1_000, answers_per_day: 50, api_keys: 2, webhook_endpoints: 1 },
  standard: { documents: 10_000, storage_mb: 10_240, searches_per_day: 100_000, answers_per_day: 5_000, api_keys: 10, webhook_endpoints: 5 },
  enterprise: { documents: 1_000_000, storage_mb: 1_048_576, searches_per_day: 10_000_000, answers_per_day: 500_000, api_keys: 100, webhook_endpoints: 50 },
  unlimited: { documents: null, storage_mb: null, searches_per_day: null, answers_per_day: null, api_keys: null, webhook_endpoints: null },
} as const satisfies Record<string, Quotas>;

export type Tier = keyof typeof TIER_QUOTAS;

/** Days of raw search history (events and clicks) the retention job keeps per tier; `null`: kept for good. */
export const TIER_RETENTION_DAYS: Record<Tier, number | null> = { free: 7, standard: 90, enterprise: 365, unlimited: null };

export function effectiveQuotas(tier: Tier, overrides: QuotaOverrides): Quotas {
  const quotas: Quotas = { ...TIER_QUOTAS[tier] };
  for (const name of QUOTA_NAMES) {
    const override = overrides[name];
    if (override !== undefined) quotas[name] = override === 'unlimited' ? null : override;
  }
  return quotas;
}

export const BYTES_PER_MB = 1024 * 1024;

/**
 * Refusal of an operation that would pass a quota. Capacity quotas answer
 * 403 (waiting will not help); the daily search and answer quotas answer 429 with
 * Retry-After until the next UTC midnight.
 */
export class QuotaExceededError extends AppError {
  constructor(
    readonly quota: QuotaName,
    readonly limit: number,
    readonly used: number,
    retryAfterSeconds?: number,
  ) {
    super(
      retryAfterSeconds === undefined ? 403 : 429,
      'quota_exceeded',
      `The tenant's ${quota.replace(/_/g, ' ')} quota (${limit}) is used up.`,
      { quota, limit, used },
      retryAfterSeconds === undefined ? {} : { 'Retry-After': String(retryAfterSeconds) },
    );
  }
}

/** Throws when `adding` more to what is `used` would pass the limit; the error reports the use before the operation. */
export function assertRoomFor(quotas: Quotas, quota: QuotaName, used: number, adding: number): void {
  const limit = quotas[quota];
  if (limit !== null && used + adding > limit) throw new QuotaExceededError(quota, limit, used);
}

const megabytes = (bytes: number) => Math.round((bytes / BYTES_PER_MB) * 1000) / 1000;

/**
 * Refuses, before anything is written, documents or bytes that would pass
 * the tenant's limits. The tenant's counter row (kept by triggers on
 * `documents`) is locked first and stays locked until the caller's
 * transaction ends, so concurrent writers of one tenant check one after
 * another against counts that include each other's work: the limits hold
 * exactly, and a refused batch costs no insert.
 */
export async function assertDocumentCapacity(trx: Knex.Transaction, tenantId: string, quotas: Quotas, adding: { documents: number; bytes: number }): Promise<void> {
  await lockTenantCounters(trx, tenantId);
  const usage = await trx('tenant_usage').first('documents', 'storage_bytes').where({ tenant_id: tenantId });
  assertRoomFor(quotas, 'documents', usage.documents, adding.documents);
  const limit = quotas.storage_mb;
  if (limit !== null && adding.bytes > 0 && usage.storage_bytes + adding.bytes > limit * BYTES_PER_MB) {
    throw new QuotaExceededError('storage_mb', limit, megabytes(usage.storage_bytes));
  }
}

/**
 * Serialises a tenant's creations of a counted resource (keys, endpoints):
 * the tenant's counter row is locked for the rest of the transaction, then
 * the count is taken. Exact under any concurrency.
 */
export async function lockTenantCounters(trx: Knex.Transaction, tenantId: string): Promise<void> {
  await trx.raw(`insert into tenant_usage (tenant_id) values (?) on conflict (tenant_id) do update set documents = tenant_usage.documents`, [tenantId]);
}

export const utcDay = (at = new Date()): string => at.toISOString().slice(0, 10);

/**
 * Sends `quota.exceeded` at most once per tenant, quota and UTC day: the
 * notice row's primary key decides, in the transaction that stores the event.
 */
export async function noticeQuotaExceeded(db: Knex, events: EventSink, tenantId: string, error: QuotaExceededError, at = new Date()): Promise<boolean> {
  return withTenant(db, tenantId, async (trx) => {
    const day = utcDay(at);
    const inserted = await trx('quota_notices').insert({ tenant_id: tenantId, quota: error.quota, day }).onConflict(['tenant_id', 'quota', 'day']).ignore().returning('quota');
    if (inserted.length === 0) return false;
    await recordEvent(trx, events, tenantId, 'quota.exceeded', { quota: error.quota, limit: error.limit, used: error.used, day });
    return true;
  });
}
