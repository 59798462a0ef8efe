import { usageQueue } from '../queues';
import { reconcileUsage } from '../src/domain/usage/reconcile';
import { rollUpTenantUsage, usageTenant, usageTenants, type RollupSettings } from '../src/domain/usage/rollup';
import type { Platform } from '../src/platform';
import { defineProcessor } from './processor';

/** Tenant jobs enqueued per Redis round trip by a rollup tick. */
const FAN_OUT_BATCH = 500;

const settingsOf = (services: UsageServices): RollupSettings => ({
  graceMinutes: services.config.USAGE_DAY_CLOSE_GRACE_MINUTES,
  webhookLogDays: services.config.WEBHOOK_LOG_RETENTION_DAYS,
});

/** What the usage processor uses of the platform. */
export type UsageServices = Pick<Platform, 'config' | 'db' | 'queues'>;

/**
 * Every job works as of its tick, not the moment it runs: a retried or late
 * job closes the same days and writes the same counters.
 */
export const usageProcessor = defineProcessor<typeof usageQueue, UsageServices>({
  definition: usageQueue,
  async process(payload, { services, logger }) {
    const db = services.db.knex;
    const now = new Date(payload.tick);
    switch (payload.kind) {
      case 'rollup': {
        const tenants = await usageTenants(db);
        for (let start = 0; start < tenants.length; start += FAN_OUT_BATCH) {
          const batch = tenants.slice(start, start + FAN_OUT_BATCH);
          await services.queues.enqueueMany(usageQueue, batch.map((tenant) => ({ kind: 'tenant' as const, tenantId: tenant.id, tick: payload.tick })));
        }
        return { tenants: tenants.length };
      }
      case 'tenant': {
        const tenant = await usageTenant(db, payload.tenantId);
        if (!tenant) return { skipped: 'the tenant no longer exists' };
        return rollUpTenantUsage(db, tenant, now, settingsOf(services));
      }
      case 'reconcile': {
        const report = await reconcileUsage(db, now, settingsOf(services));
        for (const finding of report.findings) {
          logger.warn(finding, finding.kind === 'drift' ? 'usage rollup drifts from the raw data' : 'usage day past its close is still open');
        }
        const { findings, ...summary } = report;
        logger.info(summary, 'usage reconciled');
        return { ...summary, findings: findings.length };
      }
    }
  },
});
