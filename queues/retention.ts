import { z } from 'zod';
import { defineQueue, RETENTION_DEFAULTS, tickId } from './definition';

/** Deletes data past its retention period, in small batches. One job per scheduler tick. */
export const retentionQueue = defineQueue({
  name: 'retention',
  payload: z.object({ tick: z.iso.datetime() }),
  jobOptions: { attempts: 3, backoff: { type: 'exponential', delay: 60_000 }, ...RETENTION_DEFAULTS },
  jobId: (payload) => `retention-${tickId(payload.tick)}`,
});
