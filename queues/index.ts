import { Queue, type JobsOptions, type Telemetry } from 'bullmq';
import type { RedisClient } from '../src/redis';
import { carriedContext } from '../src/telemetry';
import type { z } from 'zod';
import { jobTenant, type QueueDefinition } from './definition';
import { TenantFairness } from './fairness';
import { queuePrefix } from './keys';
import { analyticsQueue } from './analytics';
import { indexingQueue } from './indexing';
import { reconcileQueue } from './reconcile';
import { retentionQueue } from './retention';
import { usageQueue } from './usage';
import { webhookFanoutQueue } from './webhook-fanout';
import { webhooksQueue } from './webhooks';

export { analyticsQueue, indexingQueue, reconcileQueue, retentionQueue, usageQueue, webhookFanoutQueue, webhooksQueue };
export { WEBHOOK_BACKOFF, enqueueDeliveries, promoteDeliveries } from './webhooks';
export type { QueueDefinition, PayloadOf } from './definition';
export { concurrencyOf, DATABASE_RETRIES, reopenWork } from './definition';
export { queuePrefix } from './keys';

/** Every queue ragworks runs. */
export const QUEUE_DEFINITIONS: readonly QueueDefinition[] = [
  indexingQueue,
  reconcileQueue,
  webhookFanoutQueue,
  webhooksQueue,
  analyticsQueue,
  retentionQueue,
  usageQueue,
];
export const QUEUE_NAMES = QUEUE_DEFINITIONS.map((definition) => definition.name);

export function queueDefinition(name: string): QueueDefinition | undefined {
  return QUEUE_DEFINITIONS.find((definition) => definition.name === name);
}

/**
 * The producer side of every queue, on one shared connection. Payloads are
 * validated here, before they reach Redis.
 */
export class QueueRegistry {
  private readonly queues = new Map<string, Queue>();
  private readonly fairness = new Map<string, TenantFairness>();

  constructor(
    private readonly connection: RedisClient,
    readonly prefix: string,
    /** BullMQ's OpenTelemetry: a job carries the trace of what enqueued it to the worker that runs it. */
    readonly telemetry?: Telemetry,
  ) {}

  queue(name: string): Queue {
    const definition = queueDefinition(name);
    if (!definition) throw new Error(`Unknown queue "${name}"`);
    let queue = this.queues.get(name);
    if (!queue) {
      queue = new Queue(name, { connection: this.connection, prefix: queuePrefix(this.prefix, name), defaultJobOptions: definition.jobOptions, telemetry: this.telemetry });
      queue.on('error', () => undefined); // surfaced through the calls that fail
      this.queues.set(name, queue);
    }
    return queue;
  }

  all(): Queue[] {
    return QUEUE_NAMES.map((name) => this.queue(name));
  }

  async enqueue<S extends z.ZodType>(definition: QueueDefinition<S>, payload: z.input<S>, options: JobsOptions = {}): Promise<string> {
    if (definition.fairness) return (await this.enqueueMany(definition, [payload], () => options))[0];
    const data = definition.payload.parse(payload);
    const job = await this.queue(definition.name).add(definition.name, data, { ...options, ...this.tracing(definition), jobId: definition.jobId(data) });
    return job.id!;
  }

  async enqueueMany<S extends z.ZodType>(definition: QueueDefinition<S>, payloads: z.input<S>[], options: (index: number) => JobsOptions = () => ({})): Promise<string[]> {
    if (payloads.length === 0) return [];
    const tracing = this.tracing(definition);
    const jobs = payloads.map((payload, index) => {
      const data = definition.payload.parse(payload);
      return { name: definition.name, data, opts: { ...options(index), ...tracing, jobId: definition.jobId(data) } };
    });
    if (definition.fairness) await this.takeTurns(definition.name, jobs);
    const added = await this.queue(definition.name).addBulk(jobs);
    return added.map((job) => job.id!);
  }

  /** The trace context the jobs carry: BullMQ's default, or for a queue whose runs may start traces of their own, see carriedContext. */
  private tracing(definition: QueueDefinition): JobsOptions {
    const telemetry = definition.ownTrace && carriedContext(this.telemetry);
    return telemetry ? { telemetry } : {};
  }

  /** Gives each tenant's jobs their place: the wait list or a priority (queues/fairness.ts); one round trip for all the tenants of a call. */
  private async takeTurns(queueName: string, jobs: Array<{ data: unknown; opts: JobsOptions & { jobId: string } }>): Promise<void> {
    const byTenant = new Map<string, typeof jobs>();
    for (const job of jobs) {
      const tenantId = jobTenant(job.data);
      if (tenantId === null || job.opts.priority !== undefined) continue;
      const own = byTenant.get(tenantId);
      if (own) own.push(job);
      else byTenant.set(tenantId, [job]);
    }
    let fairness = this.fairness.get(queueName);
    if (!fairness) {
      fairness = new TenantFairness(this.connection, this.prefix, queueName);
      this.fairness.set(queueName, fairness);
    }
    await Promise.all(
      [...byTenant].map(async ([tenantId, own]) => {
        const priorities = await fairness.priorities(tenantId, own.map((job) => job.opts.jobId));
        own.forEach((job, index) => {
          if (priorities[index] > 0) job.opts.priority = priorities[index];
        });
      }),
    );
  }

  /** Removes the jobs for these payloads unless a worker holds them; returns how many went. */
  async removeWaiting<S extends z.ZodType>(definition: QueueDefinition<S>, payloads: z.input<S>[]): Promise<number> {
    const queue = this.queue(definition.name);
    let removed = 0;
    for (const payload of payloads) {
      const jobId = definition.jobId(definition.payload.parse(payload));
      // remove() refuses a locked (active) job with an error; that job finishes or skips on its own.
      removed += await queue.remove(jobId).catch(() => 0);
    }
    return removed;
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((queue) => queue.close()));
    this.queues.clear();
  }
}
