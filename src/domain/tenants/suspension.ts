import type { Queue } from 'bullmq';
import { hashTag, type RedisClient } from '../../redis';
import type { Knex } from 'knex';

/** How long a suspended tenant's job first waits before it looks again, in case the promotion at resume was missed. */
const FIRST_RECHECK_MS = 60_000;
const LONGEST_RECHECK_MS = 3_600_000;

/**
 * The wait before a held job looks again: a minute, doubling with each look
 * up to an hour. Resuming promotes held jobs at once, so the recheck is only
 * a safety net, and a long suspension with a large backlog must not keep
 * taking worker slots from other tenants.
 */
export function recheckDelayMs(looks: number): number {
  return Math.min(FIRST_RECHECK_MS * 2 ** Math.min(Math.max(looks - 1, 0), 10), LONGEST_RECHECK_MS);
}

/**
 * Jobs of suspended tenants wait in their queue's delayed set instead of
 * running or failing. Each one is noted in a per-tenant Redis set, so that
 * resuming the tenant promotes exactly those (and not, say, a webhook retry
 * that is delayed for backoff).
 */
export class SuspensionHold {
  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
  ) {}

  private key(tenantId: string): string {
    return `${this.prefix}:suspended-jobs:${hashTag(tenantId)}`;
  }

  async isSuspended(db: Knex, tenantId: string): Promise<boolean> {
    const row = await db('tenants').first('status').where({ id: tenantId });
    return row?.status === 'suspended';
  }

  async note(tenantId: string, queue: string, jobId: string): Promise<void> {
    await this.redis.sadd(this.key(tenantId), `${queue}\u0000${jobId}`);
  }

  /** Drops the note of a deleted tenant's held jobs (the jobs themselves skip: their rows are gone). */
  async forget(tenantId: string): Promise<void> {
    await this.redis.del(this.key(tenantId));
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
