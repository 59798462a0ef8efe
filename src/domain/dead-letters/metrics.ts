import type { Knex } from 'knex';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Logger } from '../../logger';
import { countOpenByQueue } from './dead-letters';

export interface DeadLetterMetrics {
  /** New dead letters recorded by this process, by source queue. */
  recorded: Counter<'queue'>;
}

/** One set per registry: the API and the workers of one process share it. */
const byRegistry = new WeakMap<Registry, DeadLetterMetrics>();

/**
 * `ragworks_dead_letters_total{queue}`, counted as workers record them, and
 * `ragworks_dead_letters_open{queue}`, counted in the database at scrape
 * time over every tenant (so every process reports the same open totals).
 */
export function deadLetterMetrics(registry: Registry, db: Knex, logger: Logger, queueNames: readonly string[]): DeadLetterMetrics {
  const existing = byRegistry.get(registry);
  if (existing) return existing;
  const recorded = new Counter({
    name: 'ragworks_dead_letters_total',
    help: 'Jobs recorded as dead letters (failed for good) by this process, by source queue',
    labelNames: ['queue'] as const,
    registers: [registry],
  });
  // Every queue's series exists from the start, so a rate over it sees the first dead letter.
  for (const queue of queueNames) recorded.inc({ queue }, 0);
  new Gauge({
    name: 'ragworks_dead_letters_open',
    help: 'Dead letters neither redriven nor discarded, by source queue',
    labelNames: ['queue'] as const,
    registers: [registry],
    async collect() {
      try {
        const open = await countOpenByQueue(db);
        for (const queue of new Set([...queueNames, ...open.keys()])) this.set({ queue }, open.get(queue) ?? 0);
      } catch (error) {
        // The rest of /metrics still answers; the gauge keeps its last values.
        logger.warn({ err: error }, 'could not count open dead letters');
      }
    },
  });
  const metrics = { recorded };
  byRegistry.set(registry, metrics);
  return metrics;
}
