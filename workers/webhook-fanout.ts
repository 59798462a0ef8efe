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
  (platform: Platform) =>
    new Batcher<string, number | 'suspended'>((tenantId, eventIds) =>
      settleAll<number | 'suspended'>(eventIds.length, async () => {
        const { tenantSuspended, work } = await fanOutEvents(platform.db.knex, tenantId, eventIds);
        if (tenantSuspended) return eventIds.map(() => 'suspended' as const);
        await platform.enqueueDeliveries(work.flat());
        return work.map((deliveries) => deliveries.length);
      }),
    ),
);

export const webhookFanoutProcessor = defineProcessor({
  definition: webhookFanoutQueue,
  // Its batched statement says whether the tenant is suspended: no lookup of its own per job.
  checksSuspension: true,
  async process(payload, { platform, job, token }) {
    const deliveries = await fanOutBatches(platform).submit(payload.tenantId, payload.eventId);
    if (deliveries === 'suspended') {
      if (!token) throw new Error('a fan-out of a suspended tenant cannot wait without its lock token');
      return holdWhileSuspended(platform, webhookFanoutQueue.name, job, token, payload.tenantId);
    }
    return { deliveries };
  },
});
