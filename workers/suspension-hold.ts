import { DelayedError, type Job } from 'bullmq';
import { recheckDelayMs } from '../src/domain/tenants/suspension';
import type { Platform } from '../src/platform';

/**
 * Holds a job of a suspended tenant: not failed, not run. It waits delayed
 * for the tenant's resumption, which promotes it (noted for that), and
 * looks again by itself after a while in case the promotion was missed.
 * Always throws DelayedError, for the worker to leave the job where it is.
 */
export async function holdWhileSuspended(platform: Pick<Platform, 'suspension'>, queue: string, job: Job, token: string, tenantId: string): Promise<never> {
  await platform.suspension.note(tenantId, queue, String(job.id));
  // attemptsStarted counts every time a worker picked the job up, each look included.
  await job.moveToDelayed(Date.now() + recheckDelayMs(job.attemptsStarted), token);
  throw new DelayedError();
}
