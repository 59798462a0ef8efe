import type { Job, JobType, Queue } from 'bullmq';
import type { QueueSnapshot } from '../src/metrics';
import type { JobRedriver, RedriveOutcome } from '../src/domain/dead-letters/redrive';
import { lostToRedaction, redact } from '../src/secrets';
import { DATABASE_RETRIES } from './definition';
import { LIVE_STATES, type JobState } from './job-states';
import { QUEUE_NAMES, queueDefinition, type QueueRegistry } from './index';


export interface QueueOverview {
  name: string;
  counts: { waiting: number; active: number; delayed: number; completed: number; failed: number; paused: number; prioritized: number };
  oldest_waiting_age_seconds: number;
  is_paused: boolean;
  workers: number;
}

export interface JobView {
  id: string;
  queue: string;
  name: string;
  state: string;
  tenant_id: string | null;
  attempts_made: number;
  progress: unknown;
  failed_reason: string | null;
  created_at: string;
  processed_at: string | null;
  finished_at: string | null;
}

export interface JobDetail extends JobView {
  data: unknown;
  opts: unknown;
  return_value: unknown;
  stacktrace: string[];
  logs: string[];
}


/** Operator views and actions over the queues, for the admin API and metrics. */
export class QueueAdmin implements JobRedriver {
  constructor(private readonly queues: QueueRegistry) {}

  async overview(): Promise<QueueOverview[]> {
    return Promise.all(QUEUE_NAMES.map((name) => this.describe(this.queues.queue(name))));
  }

  /**
   * What the metrics export: depths and the oldest waiting age. It leaves
   * out the worker count, which costs a CLIENT LIST over every connection
   * of the Redis server.
   */
  async snapshots(): Promise<QueueSnapshot[]> {
    return Promise.all(
      QUEUE_NAMES.map(async (name) => {
        const { counts, oldestWaitingAgeSeconds } = await depths(this.queues.queue(name));
        return { name, counts, oldestWaitingAgeSeconds };
      }),
    );
  }

  private async describe(queue: Queue): Promise<QueueOverview> {
    const [{ counts, isPaused, oldestWaitingAgeSeconds }, workers] = await Promise.all([depths(queue), queue.getWorkersCount()]);
    return { name: queue.name, counts, oldest_waiting_age_seconds: oldestWaitingAgeSeconds, is_paused: isPaused, workers };
  }

  /**
   * Jobs of one or all queues in a state, newest first. With `tenantId`,
   * only that tenant's jobs; the scan is bounded so a big queue cannot make
   * the request unbounded.
   */
  async listJobs(options: { queue?: string; state: JobState; limit: number; tenantId?: string }): Promise<JobView[]> {
    const names = options.queue ? [options.queue] : QUEUE_NAMES;
    const scan = options.tenantId ? Math.max(options.limit * 20, 1000) : options.limit;
    const views: JobView[] = [];
    for (const name of names) {
      const jobs = await this.queues.queue(name).getJobs([options.state as JobType], 0, scan - 1, false);
      for (const job of jobs) {
        if (!job) continue;
        if (options.tenantId && tenantOf(job) !== options.tenantId) continue;
        views.push(toView(job, name, options.state));
      }
    }
    return views.sort((a, b) => b.created_at.localeCompare(a.created_at)).slice(0, options.limit);
  }

  async getJob(queueName: string, jobId: string, tenantId?: string): Promise<JobDetail | null> {
    const queue = this.queues.queue(queueName);
    const job = await queue.getJob(jobId);
    if (!job || (tenantId && tenantOf(job) !== tenantId)) return null;
    const [state, logs] = await Promise.all([job.getState(), queue.getJobLogs(jobId, 0, 99)]);
    return {
      ...toView(job, queueName, state),
      data: redact(job.data),
      opts: redact(job.opts),
      return_value: job.returnvalue ?? null,
      stacktrace: job.stacktrace ?? [],
      logs: logs.logs,
    };
  }

  /**
   * Retries one failed job with a fresh attempts budget, as a redrive does.
   * `prepare` runs first, once the job is known to be failed, and may refuse
   * by throwing. Returns its state when it was not failed.
   */
  async retryJob(
    queueName: string,
    jobId: string,
    tenantId: string | undefined,
    prepare: (job: Job) => Promise<void>,
  ): Promise<{ retried: true } | { retried: false; state: string } | null> {
    const job = await this.queues.queue(queueName).getJob(jobId);
    if (!job || (tenantId && tenantOf(job) !== tenantId)) return null;
    const state = await job.getState();
    if (state !== 'failed') return { retried: false, state };
    await prepare(job);
    await retryWithFreshBudget(job);
    return { retried: true };
  }

  /**
   * Retries the failed jobs whose reason contains `reasonContains` (case
   * insensitive); with `dryRun`, only counts them. Matches are collected
   * first, since retrying removes jobs from the set being paged through.
   */
  async retryFailed(
    queueName: string,
    options: { dryRun: boolean; reasonContains?: string; tenantId?: string },
    prepare: (job: Job) => Promise<void>,
  ): Promise<{ matched: number; retried: number }> {
    const queue = this.queues.queue(queueName);
    const needle = options.reasonContains?.toLowerCase();
    const matches: Job[] = [];
    const pageSize = 500;
    for (let start = 0; ; start += pageSize) {
      const jobs = await queue.getJobs(['failed'], start, start + pageSize - 1, true);
      for (const job of jobs) {
        if (!job) continue;
        if (options.tenantId && tenantOf(job) !== options.tenantId) continue;
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

  /**
   * Runs a dead job's work again with a fresh attempts budget: retries the
   * job while BullMQ still holds it failed, or adds it anew from `payload`
   * (with `attempts`, the budget it had) once it is gone — removed after
   * its retention, or finished by a retry from elsewhere. A job already
   * waiting or running is left to run. `prepare` runs once it is known the
   * work can run, just before it is queued (it may refuse by throwing).
   */
  async redriveJob(queueName: string, jobId: string, payload: unknown, attempts: number | null, prepare: () => Promise<void>): Promise<RedriveOutcome> {
    const queue = this.queues.queue(queueName);
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
    const id = await this.queues.enqueue(definition, parsed.data, attempts ? { attempts } : {});
    return { method: 'requeued', jobId: id };
  }

  async pause(queueName: string): Promise<void> {
    await this.queues.queue(queueName).pause();
  }

  async resume(queueName: string): Promise<void> {
    await this.queues.queue(queueName).resume();
  }
}

/** Retries a failed job as if new: no attempts made, no attempt-free re-delays used. */
async function retryWithFreshBudget(job: Job): Promise<void> {
  if (job.data && typeof job.data === 'object' && DATABASE_RETRIES in job.data) {
    const { [DATABASE_RETRIES]: _used, ...data } = job.data as Record<string, unknown>;
    await job.updateData(data);
  }
  await job.retry('failed', { resetAttemptsMade: true });
}

function tenantOf(job: Job): string | null {
  const tenantId = (job.data as { tenantId?: unknown } | undefined)?.tenantId;
  return typeof tenantId === 'string' ? tenantId : null;
}

function toView(job: Job, queue: string, state: string): JobView {
  return {
    id: job.id!,
    queue,
    name: job.name,
    state,
    tenant_id: tenantOf(job),
    attempts_made: job.attemptsMade,
    progress: job.progress,
    failed_reason: job.failedReason || null,
    created_at: new Date(job.timestamp).toISOString(),
    processed_at: job.processedOn ? new Date(job.processedOn).toISOString() : null,
    finished_at: job.finishedOn ? new Date(job.finishedOn).toISOString() : null,
  };
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
