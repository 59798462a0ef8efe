import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Knex } from 'knex';

/** How long a suspended tenant's job waits before it looks again, in case the promotion at resume was missed. */
export const SUSPENDED_RECHECK_MS = 60_000;

/**
 * Jobs of suspended tenants wait in their queue's delayed set instead of
 * running or failing. Each one is noted in a per-tenant Redis set, so that
 * resuming the tenant promotes exactly those (and not, say, a webhook retry
 * that is delayed for backoff).
 */
export class SuspensionHold {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private key(tenantId: string): string {
    return `${this.prefix}:suspended-jobs:${tenantId}`;
  }

  async isSuspended(db: Knex, tenantId: string): Promise<boolean> {
    const row = await db('tenants').first('status').where({ id: tenantId });
    return row?.status === 'suspended';
  }

  async note(tenantId: string, queue: string, jobId: string): Promise<void> {
    await this.redis.sadd(this.key(tenantId), `${queue}\u0000${jobId}`);
  }

  /** Moves the tenant's held jobs back to waiting; returns how many were promoted. */
  async release(tenantId: string, queueNamed: (name: string) => Queue): Promise<number> {
    const members = await this.redis.smembers(this.key(tenantId));
    let promoted = 0;
    for (const member of members) {
      const [queueName, jobId] = member.split('\u0000');
      const job = await queueNamed(queueName).getJob(jobId);
      if (job && (await job.isDelayed())) {
        await job.promote();
        promoted += 1;
      }
      await this.redis.srem(this.key(tenantId), member);
    }
    return promoted;
  }
}
