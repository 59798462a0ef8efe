import os from 'node:os';
import type { Platform } from '../src/platform';
import { analyticsQueue } from '../queues';
import { aggregateSearchEvents } from '../src/domain/analytics/aggregate';
import { defineProcessor } from './processor';

/** This process's name in the stream's consumer group. */
const CONSUMER = `${os.hostname()}-${process.pid}`;

/** What the analytics processor uses of the platform. */
export type AnalyticsServices = Pick<Platform, 'config' | 'db' | 'metrics' | 'redis'>;

export const analyticsProcessor = defineProcessor<typeof analyticsQueue, AnalyticsServices>({
  definition: analyticsQueue,
  async process(_payload, { services }) {
    const report = await aggregateSearchEvents(services.db.knex, services.redis, services.config.QUEUE_PREFIX, CONSUMER);
    services.metrics.analyticsAggregated.inc(report.inserted);
    return report;
  },
});
