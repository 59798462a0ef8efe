import { z } from 'zod';
import { defineQueue, RETENTION_DEFAULTS, tickId } from './definition';

/** Re-enqueues documents stuck without a live indexing job. One job per scheduler tick. */
export const reconcileQueue = defineQueue({
  name: 'reconcile',
  payload: z.object({ tick: z.iso.datetime() }),
  jobOptions: {
    attempts: 3,
    backoff: { type: 'exponential', delay: 5_000 },
    ...RETENTION_DEFAULTS,
  },
  // The tick's time is the id: a second scheduler replica's enqueue is a no-op.
  // Colons go: BullMQ reserves them in job ids.
  jobId: (payload) => `reconcile-${tickId(payload.tick)}`,
});
