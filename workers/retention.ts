import { retentionQueue } from '../queues';
import type { Platform } from '../src/platform';
import { applyRetention } from '../src/domain/retention';
import { defineProcessor } from './processor';

/** What the retention processor uses of the platform. */
export type RetentionServices = Pick<Platform, 'config' | 'db' | 'metrics'>;

export const retentionProcessor = defineProcessor<typeof retentionQueue, RetentionServices>({
  definition: retentionQueue,
  async process(_payload, { services, logger }) {
    const { config } = services;
    const removed = await applyRetention(services.db.knex, {
      rollupDays: config.ANALYTICS_ROLLUP_RETENTION_DAYS,
      webhookLogDays: config.WEBHOOK_LOG_RETENTION_DAYS,
      auditDays: config.AUDIT_RETENTION_DAYS,
      deadLetterDays: config.DEAD_LETTER_RETENTION_DAYS,
    });
    for (const [table, rows] of Object.entries(removed)) services.metrics.retentionDeleted.inc({ table }, rows);
    logger.info({ removed }, 'retention applied');
    return removed;
  },
});
