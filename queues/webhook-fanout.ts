import { z } from 'zod';
import { defineQueue, RETENTION_DEFAULTS } from './definition';

/** Turns one stored event into one delivery per subscribed endpoint. */
export const webhookFanoutQueue = defineQueue({
  name: 'webhook-fanout',
  payload: z.object({ tenantId: z.uuid(), eventId: z.uuid() }),
  jobOptions: {
    attempts: 8,
    backoff: { type: 'exponential', delay: 1_000 },
    ...RETENTION_DEFAULTS,
  },
  holdsWhileSuspended: true,
  jobId: (payload) => `fanout-${payload.eventId}`,
});
