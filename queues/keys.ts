import { hashTag } from '../src/redis';

/**
 * The BullMQ prefix of one queue: QUEUE_PREFIX, then the queue's name as a
 * hash tag. BullMQ names every key of a queue `<prefix>:<queue>:…` and its
 * scripts touch many of them at once, so on a Redis Cluster they must share
 * a slot; a tag per queue (rather than one for all) lets the queues spread
 * over the cluster's masters. The same on a single server, so the keys do
 * not depend on where they are kept (docs/operations.md, "Redis Cluster").
 * Everything that opens a queue, a worker or queue events, or names a
 * queue's keys, takes its prefix from here.
 */
export function queuePrefix(prefix: string, queueName: string): string {
  return `${prefix}:${hashTag(queueName)}`;
}
