import type { DispatchIndexing } from '../src/domain/indexing/dispatch';
import type { EventSink } from '../src/domain/webhooks/events';
import type { Logger } from '../src/logger';
import { indexingQueue, webhookFanoutQueue, type QueueRegistry } from './index';

// The queue side of the ports the domain hands work through: the domain
// calls them after its transaction commits, and never imports a queue.

/** Enqueues indexing work, each item in its tenant's turn. */
export const indexingDispatch =
  (queues: QueueRegistry): DispatchIndexing =>
  async (work) => {
    await queues.enqueueMany(indexingQueue, work);
  };

/** Removes queued indexing work that is no longer wanted; a running job notices its item is canceled. */
export const indexingWithdrawal =
  (queues: QueueRegistry): DispatchIndexing =>
  async (work) => {
    await queues.removeWaiting(indexingQueue, work);
  };

/**
 * Enqueues the fan-out of committed events. A failure is logged, not thrown:
 * the events are stored, and the reconcile tick enqueues what was missed.
 */
export const eventFanout = (queues: QueueRegistry, logger: Logger): EventSink => ({
  announce: async (pending) => {
    await queues.enqueueMany(webhookFanoutQueue, [...pending]).catch((error) =>
      logger.warn({ err: error, event_ids: pending.map((event) => event.eventId) }, 'could not enqueue a webhook fan-out; the reconcile tick will'),
    );
  },
});
