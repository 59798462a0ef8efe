import type { Knex } from 'knex';
import { acrossTenants } from '../db/tenant-scope';
import { TIER_RETENTION_DAYS } from './tenants/quotas';

export interface RetentionPolicy {
  rollupDays: number;
  webhookLogDays: number;
  /** Audit trail entries older than this go. */
  auditDays: number;
  /** Dead letters redriven or discarded longer ago than this go; open ones stay until someone acts. */
  deadLetterDays: number;
}

/** `tier → days` as SQL rows, for joining each event to its tenant's retention; tiers that keep for good are left out. */
const tierRetention = Object.entries(TIER_RETENTION_DAYS)
  .filter(([, days]) => days !== null)
  .map(([tier, days]) => `('${tier}', ${Number(days)})`)
  .join(', ');

/** Rows per DELETE: small enough that no statement holds its locks for long. */
const BATCH = 5_000;

/**
 * Deletes, in batches, raw search events, clicks and answer events older than their
 * tenant's tier retention, hourly rollups older than theirs, and finished
 * webhook deliveries (with their attempts) and events older than the
 * delivery-log retention, audit entries older than theirs, dead letters
 * closed (redriven or discarded) longer ago than theirs, and dashboard
 * sessions a day after they ended. Retention is cross-tenant by nature; each
 * batch is its own short transaction.
 * Returns the rows removed per table.
 */
export async function applyRetention(knex: Knex, policy: RetentionPolicy): Promise<Record<string, number>> {
  const deleteBatch = (sql: string, bindings: Knex.RawBinding[]) => acrossTenants(knex, (trx) => trx.raw(sql, bindings));
  const removed: Record<string, number> = {};
  const sweep = async (table: string, where: string, days: number) => {
    let total = 0;
    for (;;) {
      const result = await deleteBatch(
        `delete from ${table} where ctid in (select ctid from ${table} where ${where} < now() - make_interval(days => ?) limit ${BATCH})`,
        [days],
      );
      const count = Number(result.rowCount ?? 0);
      total += count;
      if (count < BATCH) break;
    }
    removed[table] = total;
  };
  const sweepByTier = async (table: string) => {
    let total = 0;
    for (;;) {
      const result = await deleteBatch(
        `delete from ${table} where ctid in (
           select r.ctid from ${table} r
             join tenants t on t.id = r.tenant_id
             join (values ${tierRetention}) as keep(tier, days) on keep.tier = t.tier
            where r.created_at < now() - make_interval(days => keep.days)
            limit ${BATCH})`,
        [],
      );
      const count = Number(result.rowCount ?? 0);
      total += count;
      if (count < BATCH) break;
    }
    removed[table] = total;
  };
  await sweepByTier('search_events');
  await sweepByTier('search_clicks');
  await sweepByTier('answer_events');
  await sweep('search_query_hourly', 'hour', policy.rollupDays);
  await sweep('webhook_attempts', 'created_at', policy.webhookLogDays);
  // A pending delivery is still being retried: only finished ones go.
  let deliveries = 0;
  for (;;) {
    const result = await deleteBatch(
      `delete from webhook_deliveries where id in (
         select id from webhook_deliveries where status <> 'pending' and updated_at < now() - make_interval(days => ?) limit ${BATCH})`,
      [policy.webhookLogDays],
    );
    const count = Number(result.rowCount ?? 0);
    deliveries += count;
    if (count < BATCH) break;
  }
  removed.webhook_deliveries = deliveries;
  // Events go once nothing is still delivering them; their deliveries and attempts go with them. Replay reaches back this far.
  let events = 0;
  for (;;) {
    const result = await deleteBatch(
      `delete from webhook_events where id in (
         select e.id from webhook_events e
          where e.created_at < now() - make_interval(days => ?)
            and not exists (select 1 from webhook_deliveries d where d.event_id = e.id and d.status = 'pending')
          limit ${BATCH})`,
      [policy.webhookLogDays],
    );
    const count = Number(result.rowCount ?? 0);
    events += count;
    if (count < BATCH) break;
  }
  removed.webhook_events = events;
  await sweep('audit_log', 'at', policy.auditDays);
  await sweep('dead_letters', 'coalesce(redriven_at, discarded_at)', policy.deadLetterDays);
  // Dashboard sessions are worthless once ended or expired; a day's grace keeps them for a look after a sign-out.
  await sweep('admin_sessions', 'coalesce(revoked_at, expires_at)', 1);
  return removed;
}
