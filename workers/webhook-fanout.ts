import { webhookFanoutQueue } from '../queues';
import { fanOut } from '../src/domain/webhooks/deliveries';
import { defineProcessor } from './processor';

export const webhookFanoutProcessor = defineProcessor({
  definition: webhookFanoutQueue,
  async process(payload, { platform }) {
    const work = await fanOut(platform.db.knex, payload.tenantId, payload.eventId);
    await platform.enqueueDeliveries(work);
    return { deliveries: work.length };
  },
});
