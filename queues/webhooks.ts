import { z } from 'zod';
import { defineQueue, RETENTION_DEFAULTS } from './definition';

/** The backoff type whose delays come from WEBHOOK_RETRY_SCHEDULE and Retry-After. */
export const WEBHOOK_BACKOFF = 'webhook-schedule';

/**
 * One signed POST of one event to one endpoint, retried on the configured
 * schedule as BullMQ delayed jobs. `attempts` is set per job from the
 * schedule's length when it is enqueued; the default here is the length of
 * the default schedule.
 */
export const webhooksQueue = defineQueue({
  name: 'webhooks',
  payload: z.object({
    tenantId: z.uuid(),
    deliveryId: z.uuid(),
    eventId: z.uuid(),
    endpointId: z.uuid(),
    origin: z.enum(['event', 'redelivery', 'replay']),
  }),
  jobOptions: {
    attempts: 10,
    backoff: { type: WEBHOOK_BACKOFF },
    ...RETENTION_DEFAULTS,
  },
  // A fan-out that runs twice enqueues nothing twice; an asked-for redelivery is new work.
  holdsWhileSuspended: true,
  jobId: (payload) => (payload.origin === 'event' ? `${payload.eventId}-${payload.endpointId}` : `delivery-${payload.deliveryId}`),
});
