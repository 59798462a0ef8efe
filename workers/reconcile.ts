import type { Queue } from 'bullmq';
import type { Platform } from '../src/platform';
import { indexingQueue, reconcileQueue, webhookFanoutQueue, webhooksQueue } from '../queues';
import { LIVE_STATES } from '../queues/job-states';
import { failIndexing } from '../src/domain/indexing/indexer';
import { findStuckIndexing } from '../src/domain/indexing/jobs';
import { failDelivery, findStuckWebhookWork } from '../src/domain/webhooks/deliveries';
import { defineProcessor } from './processor';

/**
 * What to do about work the database says is unfinished: nothing while its
 * job is alive; record the failure when its job failed for good (re-running
 * a job that keeps killing workers would loop for ever); otherwise — never
 * enqueued, lost, or completed without its work done — enqueue it again.
 */
async function verdictFor(queue: Queue, jobId: string): Promise<'alive' | { failed: string } | 'requeue'> {
  const existing = await queue.getJob(jobId);
  if (!existing) return 'requeue';
  const state = await existing.getState();
  if (LIVE_STATES.has(state)) return 'alive';
  if (state === 'failed') return { failed: existing.failedReason || 'The job failed.' };
  await existing.remove();
  return 'requeue';
}

/** What the reconcile processor uses of the platform. */
export type ReconcileServices = Pick<Platform, 'config' | 'db' | 'enqueueDeliveries' | 'indexerDeps' | 'queues'>;

/**
 * Finds work the database says is unfinished but Redis holds no live job
 * for — documents stuck `queued` or `processing`, events never fanned out,
 * webhook deliveries still pending — and enqueues it again under the same
 * job id.
 */
export const reconcileProcessor = defineProcessor<typeof reconcileQueue, ReconcileServices>({
  definition: reconcileQueue,
  async process(_payload, { services, logger }) {
    const { db, queues, config } = services;
    const stuckAfter = config.RECONCILE_STUCK_AFTER_SECONDS;
    const requeued = { documents: 0, events: 0, deliveries: 0 };

    const indexing = queues.queue(indexingQueue.name);
    const documents = await findStuckIndexing(db.knex, stuckAfter);
    for (const work of documents) {
      const verdict = await verdictFor(indexing, indexingQueue.jobId(work));
      if (verdict === 'alive') continue;
      if (verdict === 'requeue') {
        await queues.enqueue(indexingQueue, work);
        requeued.documents += 1;
      } else await failIndexing(services.indexerDeps(), work, new Error(verdict.failed));
    }

    const webhookWork = await findStuckWebhookWork(db.knex, stuckAfter);
    const fanout = queues.queue(webhookFanoutQueue.name);
    for (const event of webhookWork.events) {
      const verdict = await verdictFor(fanout, webhookFanoutQueue.jobId(event));
      if (verdict === 'alive') continue;
      // A fan-out only reads and inserts idempotently: running a failed one again is safe.
      if (verdict !== 'requeue') await fanout.remove(webhookFanoutQueue.jobId(event));
      await queues.enqueue(webhookFanoutQueue, event);
      requeued.events += 1;
    }
    const webhooks = queues.queue(webhooksQueue.name);
    const lostDeliveries = [];
    for (const delivery of webhookWork.deliveries) {
      const verdict = await verdictFor(webhooks, webhooksQueue.jobId(delivery));
      if (verdict === 'requeue') lostDeliveries.push(delivery);
      else if (verdict !== 'alive') await failDelivery(db.knex, delivery.tenantId, delivery.deliveryId, verdict.failed);
    }
    await services.enqueueDeliveries(lostDeliveries);
    requeued.deliveries = lostDeliveries.length;

    const examined = { documents: documents.length, events: webhookWork.events.length, deliveries: webhookWork.deliveries.length };
    if (requeued.documents + requeued.events + requeued.deliveries > 0) logger.info({ requeued, examined }, 'reconcile re-enqueued stuck work');
    return { examined, requeued };
  },
});
