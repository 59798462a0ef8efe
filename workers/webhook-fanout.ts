import { webhookFanoutQueue } from '../queues';
import { onePer } from '../src/one-per';
import { Batcher, settleAll } from '../src/batcher';
import { fanOutEvents } from '../src/domain/webhooks/deliveries';
import type { Platform } from '../src/platform';
import { defineProcessor } from './processor';
import { holdWhileSuspended } from './suspension-hold';

/**
 * The fan-outs a process runs at the same time, gathered per tenant: one
 * statement creates the deliveries of a batch of events, and one bulk add
 * enqueues them all. Each job completes only once its deliveries are
 * enqueued. 'suspended': the tenant is, and nothing was done.
 */
const fanOutBatches = onePer(
  (services: WebhookFanoutServices) =>
    new Batcher<string, number | 'suspended'>((tenantId, eventIds) =>
      settleAll<number | 'suspended'>(eventIds.length, async () => {
        const { tenantSuspended, work } = await fanOutEvents(services.db.knex, tenantId, eventIds);
        if (tenantSuspended) return eventIds.map(() => 'suspended' as const);
        await services.enqueueDeliveries(work.flat());
        return work.map((deliveries) => deliveries.length);
      }),
    ),
);

/** What the webhook fanout processor uses of the platform. */
export type WebhookFanoutServices = Pick<Platform, 'db' | 'enqueueDeliveries' | 'suspension'>;

export const webhookFanoutProcessor = defineProcessor<typeof webhookFanoutQueue, WebhookFanoutServices>({
  definition: webhookFanoutQueue,
  // Its batched statement says whether the tenant is suspended: no lookup of its own per job.
  checksSuspension: true,
  async process(payload, { services, job, token }) {
    const deliveries = await fanOutBatches(services).submit(payload.tenantId, payload.eventId);
    if (deliveries === 'suspended') {
      if (!token) throw new Error('a fan-out of a suspended tenant cannot wait without its lock token');
      return holdWhileSuspended(services, webhookFanoutQueue.name, job, token, payload.tenantId);
    }
    return { deliveries };
  },
});
