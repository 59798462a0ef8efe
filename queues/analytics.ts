import { z } from 'zod';
import { defineQueue, RETENTION_DEFAULTS, tickId } from './definition';

/** Moves search events from the Redis stream into PostgreSQL. One job per scheduler tick. */
export const analyticsQueue = defineQueue({
  name: 'analytics',
  payload: z.object({ tick: z.iso.datetime() }),
  jobOptions: { attempts: 3, backoff: { type: 'exponential', delay: 5_000 }, ...RETENTION_DEFAULTS },
  jobId: (payload) => `analytics-${tickId(payload.tick)}`,
});
