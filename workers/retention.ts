import { retentionQueue } from '../queues';
import { applyRetention } from '../src/domain/retention';
import { defineProcessor } from './processor';

export const retentionProcessor = defineProcessor({
  definition: retentionQueue,
  async process(_payload, { platform, logger }) {
    const { config } = platform;
    const removed = await applyRetention(platform.db.knex, {
      rollupDays: config.ANALYTICS_ROLLUP_RETENTION_DAYS,
      webhookLogDays: config.WEBHOOK_LOG_RETENTION_DAYS,
      auditDays: config.AUDIT_RETENTION_DAYS,
      deadLetterDays: config.DEAD_LETTER_RETENTION_DAYS,
    });
    for (const [table, rows] of Object.entries(removed)) platform.metrics.retentionDeleted.inc({ table }, rows);
    logger.info({ removed }, 'retention applied');
    return removed;
  },
});
