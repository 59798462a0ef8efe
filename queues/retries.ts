import type { Job } from 'bullmq';
import type { JobRedriver, RedriveOutcome } from '../src/domain/dead-letters/redrive';
import { lostToRedaction } from '../src/secrets';
import { DATABASE_RETRIES, jobTenant } from './definition';
import { LIVE_STATES } from './job-states';
import { queueDefinition, type QueueRegistry } from './index';

/**
 * Retries one failed job with a fresh attempts budget, as a redrive does.
 * `prepare` runs first, once the job is known to be failed, and may refuse
 * by throwing. Returns its state when it was not failed; null when missing
 * or another tenant's.
 */
export async function retryJob(
  queues: QueueRegistry,
  queueName: string,
  jobId: string,
  tenantId: string | undefined,
  prepare: (job: Job) => Promise<void>,
): Promise<{ retried: true } | { retried: false; state: string } | null> {
  const job = await queues.queue(queueName).getJob(jobId);
  if (!job || (tenantId && jobTenant(job.data) !== tenantId)) return null;
  const state = await job.getState();
  if (state !== 'failed') return { retried: false, state };
  await prepare(job);
  await retryWithFreshBudget(job);
  return { retried: true };
}

/**
 * Retries the failed jobs whose reason contains `reasonContains` (case
 * insensitive); with `dryRun`, only counts them. Matches are collected
 * first, page by page, since retrying removes jobs from the set being paged
 * through.
 */
export async function retryFailed(
  queues: QueueRegistry,
  queueName: string,
  options: { dryRun: boolean; reasonContains?: string; tenantId?: string },
  prepare: (job: Job) => Promise<void>,
): Promise<{ matched: number; retried: number }> {
  const queue = queues.queue(queueName);
  const needle = options.reasonContains?.toLowerCase();
  const matches: Job[] = [];
  const pageSize = 500;
  for (let start = 0; ; start += pageSize) {
    const jobs = await queue.getJobs(['failed'], start, start + pageSize - 1, true);
    for (const job of jobs) {
      if (!job) continue;
      if (options.tenantId && jobTenant(job.data) !== options.tenantId) continue;
      if (needle && !(job.failedReason ?? '').toLowerCase().includes(needle)) continue;
      matches.push(job);
    }
    if (jobs.length < pageSize) break;
  }
  if (options.dryRun) return { matched: matches.length, retried: 0 };
  let retried = 0;
  for (const job of matches) {
    // A job retried meanwhile by someone else is no longer failed: skip it; so is one whose work may not run again.
    if ((await job.getState()) !== 'failed') continue;
    try {
      await prepare(job);
    } catch {
      continue;
    }
    await retryWithFreshBudget(job);
    retried += 1;
  }
  return { matched: matches.length, retried };
}

/** Dead letters' redrive on the queues (the domain's JobRedriver). */
export function queueRedriver(queues: QueueRegistry): JobRedriver {
  return { redriveJob: (...args) => redriveJob(queues, ...args) };
}

/**
 * Runs a dead job's work again with a fresh attempts budget: retries the
 * job while BullMQ still holds it failed, or adds it anew from `payload`
 * (with `attempts`, the budget it had) once it is gone — removed after
 * its retention, or finished by a retry from elsewhere. A job already
 * waiting or running is left to run. `prepare` runs once it is known the
 * work can run, just before it is queued (it may refuse by throwing).
 */
async function redriveJob(
  queues: QueueRegistry,
  queueName: string,
  jobId: string,
  payload: unknown,
  attempts: number | null,
  prepare: () => Promise<void>,
): Promise<RedriveOutcome> {
  const queue = queues.queue(queueName);
  const job = await queue.getJob(jobId);
  const state = job ? await job.getState() : 'gone';
  if (job && state === 'failed') {
    await prepare();
    await retryWithFreshBudget(job);
    return { method: 'retried', jobId };
  }
  if (LIVE_STATES.has(state)) {
    await prepare();
    return { method: 'already_queued', jobId };
  }
  if (lostToRedaction(payload)) return { method: 'impossible', reason: 'The job is gone and its payload held secrets, which were not kept.' };
  const definition = queueDefinition(queueName)!;
  const parsed = definition.payload.safeParse(payload);
  if (!parsed.success) return { method: 'impossible', reason: `The job is gone and its payload is not one the ${queueName} queue accepts.` };
  await prepare();
  // Finished (a retry from elsewhere completed it): its id must be free to add the work again.
  if (job) await job.remove();
  const id = await queues.enqueue(definition, parsed.data, attempts ? { attempts } : {});
  return { method: 'requeued', jobId: id };
}

/** Retries a failed job as if new: no attempts made, no attempt-free re-delays used. */
async function retryWithFreshBudget(job: Job): Promise<void> {
  if (job.data && typeof job.data === 'object' && DATABASE_RETRIES in job.data) {
    const { [DATABASE_RETRIES]: _used, ...data } = job.data as Record<string, unknown>;
    await job.updateData(data);
  }
  await job.retry('failed', { resetAttemptsMade: true });
}
