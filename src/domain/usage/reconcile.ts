import type { Knex } from 'knex';
import { withTenant } from '../../db/tenant-scope';
import { newId } from '../ids';
import { COUNTERS, countersByDay, type CounterName } from './counters';
import { daysFrom, lastClosableDay } from './days';
import { firstRecountableDay, usageTenants, type RollupSettings } from './rollup';

/** A closed day whose counter differs from the raw rows, or a day that should be closed and is not. */
export type Finding =
  | { kind: 'drift'; tenant_id: string; day: string; metric: CounterName; rollup: number; raw: number }
  | { kind: 'unclosed'; tenant_id: string; day: string };

export interface ReconciliationReport {
  ran_at: string;
  tenants: number;
  /** Closed tenant-days compared with their raw rows. */
  tenant_days: number;
  drifting_tenant_days: number;
  /** Days past their close time (and still recountable) that are not closed. */
  unclosed_tenant_days: number;
  /** Per counter, the sum over tenant-days of |raw − rollup|. */
  drift: Record<CounterName, number>;
  findings: Finding[];
  findings_truncated: boolean;
}

/** Findings kept in a report; the totals count them all. */
const MAX_FINDINGS = 1_000;
/** Reports kept for operators. */
const KEEP_REPORTS = 30;

/**
 * Recounts, for every tenant, each closed day whose raw rows are still
 * whole (see firstRecountableDay) and compares the counters with the
 * stored rollup. Drift means the billed numbers differ from what the raw
 * data says now: an event that arrived after the close, a row changed by
 * hand, a bug, or raw rows removed early (a replayed delivery of an event
 * goes with its event when the event ages out). Gauges are points in time
 * and cannot be recounted; they are not compared. The report is stored
 * and returned; nothing in usage_daily is changed.
 */
export async function reconcileUsage(db: Knex, now: Date, settings: RollupSettings): Promise<ReconciliationReport> {
  const report: ReconciliationReport = {
    ran_at: now.toISOString(),
    tenants: 0,
    tenant_days: 0,
    drifting_tenant_days: 0,
    unclosed_tenant_days: 0,
    drift: Object.fromEntries(COUNTERS.map((counter) => [counter, 0])) as Record<CounterName, number>,
    findings: [],
    findings_truncated: false,
  };
  const note = (finding: Finding) => {
    if (report.findings.length < MAX_FINDINGS) report.findings.push(finding);
    else report.findings_truncated = true;
  };
  const lastClosable = lastClosableDay(now, settings.graceMinutes);

  for (const tenant of await usageTenants(db)) {
    report.tenants += 1;
    const first = firstRecountableDay(tenant, now, settings.webhookLogDays);
    if (first > lastClosable) continue;
    await withTenant(db, tenant.id, async (trx) => {
      const stored = await trx('usage_daily')
        .select(trx.raw(`to_char(day, 'YYYY-MM-DD') as day`), ...COUNTERS)
        .where({ tenant_id: tenant.id })
        .whereBetween('day', [first, lastClosable])
        .whereNotNull('closed_at')
        .orderBy('day');
      const raw = await countersByDay(trx, tenant.id, first, lastClosable);
      const closed = new Set<string>();
      for (const row of stored as Array<{ day: string } & Record<CounterName, number>>) {
        closed.add(row.day);
        report.tenant_days += 1;
        let drifting = false;
        for (const metric of COUNTERS) {
          const counted = raw.get(row.day)![metric];
          const rolledUp = Number(row[metric]);
          if (counted === rolledUp) continue;
          drifting = true;
          report.drift[metric] += Math.abs(counted - rolledUp);
          note({ kind: 'drift', tenant_id: tenant.id, day: row.day, metric, rollup: rolledUp, raw: counted });
        }
        if (drifting) report.drifting_tenant_days += 1;
      }
      for (const day of daysFrom(first, lastClosable)) {
        if (closed.has(day)) continue;
        report.unclosed_tenant_days += 1;
        note({ kind: 'unclosed', tenant_id: tenant.id, day });
      }
    });
  }

  await db.transaction(async (trx) => {
    await trx('usage_reconciliations').insert({
      id: newId(),
      ran_at: report.ran_at,
      tenants: report.tenants,
      tenant_days: report.tenant_days,
      drifting_tenant_days: report.drifting_tenant_days,
      unclosed_tenant_days: report.unclosed_tenant_days,
      drift: JSON.stringify(report.drift),
      findings: JSON.stringify(report.findings),
      findings_truncated: report.findings_truncated,
    });
    await trx('usage_reconciliations')
      .whereNotIn('id', trx('usage_reconciliations').select('id').orderBy('ran_at', 'desc').limit(KEEP_REPORTS))
      .delete();
  });
  return report;
}

/** The most recent report, or null before the first run. */
export async function latestReconciliation(db: Knex): Promise<ReconciliationReport | null> {
  const row = await db('usage_reconciliations').first('*').orderBy('ran_at', 'desc');
  if (!row) return null;
  return {
    ran_at: new Date(row.ran_at).toISOString(),
    tenants: row.tenants,
    tenant_days: row.tenant_days,
    drifting_tenant_days: row.drifting_tenant_days,
    unclosed_tenant_days: row.unclosed_tenant_days,
    drift: row.drift,
    findings: row.findings,
    findings_truncated: row.findings_truncated,
  };
}
