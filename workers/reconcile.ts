import type { Queue } from 'bullmq';
import { indexingQueue, reconcileQueue, webhookFanoutQueue, webhooksQueue } from '../queues';
import { findStuckIndexing } from '../src/domain/indexing/jobs';
import { findStuckWebhookWork } from '../src/domain/webhooks/deliveries';
import { defineProcessor } from './processor';

const LIVE_STATES = new Set(['waiting', 'active', 'delayed', 'prioritized', 'waiting-children']);

/** True when the job id has no live job: it was never enqueued, was lost, or ended without its work being done. */
async function needsRequeue(queue: Queue, jobId: string): Promise<boolean> {
  const existing = await queue.getJob(jobId);
  if (!existing) return true;
  if (LIVE_STATES.has(await existing.getState())) return false;
  await existing.remove();
  return true;
}

/**
 * Finds work the database says is unfinished but Redis holds no live job
 * for — documents stuck `queued` or `processing`, events never fanned out,
 * webhook deliveries still pending — and enqueues it again under the same
 * job id.
 */
export const reconcileProcessor = defineProcessor({
  definition: reconcileQueue,
  async process(_payload, { platform, logger }) {
    const { db, queues, config } = platform;
    const stuckAfter = config.RECONCILE_STUCK_AFTER_SECONDS;
    const requeued = { documents: 0, events: 0, deliveries: 0 };

    const indexing = queues.queue(indexingQueue.name);
    const documents = await findStuckIndexing(db.knex, stuckAfter);
    for (const work of documents) {
      if (!(await needsRequeue(indexing, indexingQueue.jobId(work)))) continue;
      await queues.enqueue(indexingQueue, work);
      requeued.documents += 1;
    }

    const webhookWork = await findStuckWebhookWork(db.knex, stuckAfter);
    const fanout = queues.queue(webhookFanoutQueue.name);
    for (const event of webhookWork.events) {
      if (!(await needsRequeue(fanout, webhookFanoutQueue.jobId(event)))) continue;
      await queues.enqueue(webhookFanoutQueue, event);
      requeued.events += 1;
    }
    const webhooks = queues.queue(webhooksQueue.name);
    const lostDeliveries = [];
    for (const delivery of webhookWork.deliveries) {
      if (await needsRequeue(webhooks, webhooksQueue.jobId(delivery))) lostDeliveries.push(delivery);
    }
    await platform.enqueueDeliveries(lostDeliveries);
    requeued.deliveries = lostDeliveries.length;

    const examined = { documents: documents.length, events: webhookWork.events.length, deliveries: webhookWork.deliveries.length };
    if (requeued.documents + requeued.events + requeued.deliveries > 0) logger.info({ requeued, examined }, 'reconcile re-enqueued stuck work');
    return { examined, requeued };
  },
});
