import type { Knex } from 'knex';
import { Gauge, type Registry } from 'prom-client';
import type { Logger } from '../../logger';
import { latestReconciliation } from './reconcile';

/**
 * The last nightly usage reconciliation, read from the stored report at
 * scrape time: every process exports the same figures, whichever worker
 * ran the job. Before the first run the series are absent.
 */
export function registerUsageMetrics(registry: Registry, db: Knex, logger: Logger): void {
  const collecting = (fill: (value: NonNullable<Awaited<ReturnType<typeof latestReconciliation>>>) => void) => async () => {
    try {
      const last = await latestReconciliation(db);
      if (last) fill(last);
    } catch (error) {
      // The rest of /metrics still answers; the gauges keep their last values.
      logger.warn({ err: error }, 'could not read the last usage reconciliation');
    }
  };
  const drift: Gauge<'metric'> = new Gauge({
    name: 'ragworks_usage_drift',
    help: 'Last usage reconciliation: sum over closed tenant-days of |raw count - rollup|, per counter',
    labelNames: ['metric'] as const,
    registers: [registry],
    collect: collecting((last) => {
      for (const [metric, value] of Object.entries(last.drift)) drift.set({ metric }, value);
    }),
  });
  const tenantDays: Gauge<'kind'> = new Gauge({
    name: 'ragworks_usage_drift_tenant_days',
    help: 'Last usage reconciliation: closed tenant-days whose counters drift (kind=drifting), and days past their close still open (kind=unclosed)',
    labelNames: ['kind'] as const,
    registers: [registry],
    collect: collecting((last) => {
      tenantDays.set({ kind: 'drifting' }, last.drifting_tenant_days);
      tenantDays.set({ kind: 'unclosed' }, last.unclosed_tenant_days);
    }),
  });
  const reconciledAt: Gauge = new Gauge({
    name: 'ragworks_usage_reconciliation_timestamp_seconds',
    help: 'When the last usage reconciliation ran (the tick it ran for), Unix seconds',
    registers: [registry],
    collect: collecting((last) => reconciledAt.set(Date.parse(last.ran_at) / 1000)),
  });
}
