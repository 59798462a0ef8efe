import { indexingQueue, reconcileQueue } from '../queues';
import { findStuckIndexing } from '../src/domain/indexing/jobs';
import { defineProcessor } from './processor';

const LIVE_STATES = new Set(['waiting', 'active', 'delayed', 'prioritized', 'waiting-children']);

/**
 * Finds documents stuck in `queued` or `processing` whose indexing job is
 * not alive in Redis (never enqueued, lost, or finished without updating
 * the document) and enqueues them again under the same job id.
 */
export const reconcileProcessor = defineProcessor({
  definition: reconcileQueue,
  async process(_payload, { platform, logger }) {
    const stuck = await findStuckIndexing(platform.db.knex, platform.config.RECONCILE_STUCK_AFTER_SECONDS);
    const queue = platform.queues.queue(indexingQueue.name);
    let requeued = 0;
    for (const work of stuck) {
      const existing = await queue.getJob(indexingQueue.jobId(work));
      if (existing) {
        const state = await existing.getState();
        if (LIVE_STATES.has(state)) continue;
        await existing.remove();
      }
      await platform.queues.enqueue(indexingQueue, work);
      requeued += 1;
    }
    if (requeued > 0) logger.info({ requeued, examined: stuck.length }, 'reconcile re-enqueued stuck documents');
    return { examined: stuck.length, requeued };
  },
});
