import type { RedisClient } from '../../redis';

/** One search as the analytics stream carries it. */
export interface SearchEvent {
  tenantId: string;
  queryId: string;
  query: string;
  mode: string;
  filters: unknown;
  resultCount: number;
  tookMs: number;
  cached: boolean;
  userId: string | null;
  at: string;
}

/** The stream holds at most about this many entries; older ones go when aggregation falls this far behind. */
export const STREAM_MAX_LENGTH = 1_000_000;
export const CONSUMER_GROUP = 'aggregator';

export const streamKey = (prefix: string) => `${prefix}:analytics:searches`;

/** Lower case, single spaces: "Redis  Persistence" and "redis persistence" are one query. */
export function normaliseQuery(query: string): string {
  return query.normalize('NFKC').toLowerCase().trim().replace(/\s+/g, ' ');
}

/** Creates the consumer group (from the start of the stream) if it does not exist yet. */
export async function ensureConsumerGroup(redis: RedisClient, prefix: string): Promise<void> {
  try {
    await redis.xgroup('CREATE', streamKey(prefix), CONSUMER_GROUP, '0', 'MKSTREAM');
  } catch (error) {
    if (!/BUSYGROUP/.test((error as Error).message)) throw error;
  }
}
