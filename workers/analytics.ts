import os from 'node:os';
import { analyticsQueue } from '../queues';
import { aggregateSearchEvents } from '../src/domain/analytics/aggregate';
import { defineProcessor } from './processor';

/** This process's name in the stream's consumer group. */
const CONSUMER = `${os.hostname()}-${process.pid}`;

export const analyticsProcessor = defineProcessor({
  definition: analyticsQueue,
  async process(_payload, { platform }) {
    const report = await aggregateSearchEvents(platform.db.knex, platform.redis, platform.config.QUEUE_PREFIX, CONSUMER);
    platform.metrics.analyticsAggregated.inc(report.inserted);
    return report;
  },
});
