import type { Queue } from 'bullmq';
import type { QueueSnapshot } from '../src/metrics';
import { QUEUE_NAMES, type QueueRegistry } from './index';

export interface QueueOverview {
  name: string;
  counts: { waiting: number; active: number; delayed: number; completed: number; failed: number; paused: number; prioritized: number };
  oldest_waiting_age_seconds: number;
  is_paused: boolean;
  workers: number;
}

/** Every queue's depths, pause state, oldest waiting age and worker count, for the admin API and the dashboard. */
export async function queueOverview(queues: QueueRegistry): Promise<QueueOverview[]> {
  return Promise.all(
    QUEUE_NAMES.map(async (name) => {
      const queue = queues.queue(name);
      const [{ counts, isPaused, oldestWaitingAgeSeconds }, workers] = await Promise.all([depths(queue), queue.getWorkersCount()]);
      return { name: queue.name, counts, oldest_waiting_age_seconds: oldestWaitingAgeSeconds, is_paused: isPaused, workers };
    }),
  );
}

/**
 * What the metrics export: depths and the oldest waiting age. It leaves
 * out the worker count, which costs a CLIENT LIST over every connection
 * of the Redis server.
 */
export async function queueSnapshots(queues: QueueRegistry): Promise<QueueSnapshot[]> {
  return Promise.all(
    QUEUE_NAMES.map(async (name) => {
      const { counts, oldestWaitingAgeSeconds } = await depths(queues.queue(name));
      return { name, counts, oldestWaitingAgeSeconds };
    }),
  );
}

async function depths(queue: Queue): Promise<{ counts: QueueOverview['counts']; isPaused: boolean; oldestWaitingAgeSeconds: number }> {
  const [counts, isPaused, [oldest]] = await Promise.all([
    queue.getJobCounts('waiting', 'active', 'delayed', 'completed', 'failed', 'prioritized'),
    queue.isPaused(),
    queue.getJobs(['waiting', 'prioritized'], 0, 0, true),
  ]);
  return {
    counts: {
      waiting: counts.waiting ?? 0,
      active: counts.active ?? 0,
      delayed: counts.delayed ?? 0,
      completed: counts.completed ?? 0,
      failed: counts.failed ?? 0,
      // A paused queue's waiting jobs are its paused ones.
      paused: isPaused ? (counts.waiting ?? 0) + (counts.prioritized ?? 0) : 0,
      prioritized: counts.prioritized ?? 0,
    },
    isPaused,
    oldestWaitingAgeSeconds: oldest ? Math.max(0, (Date.now() - oldest.timestamp) / 1000) : 0,
  };
}
