import type { Job, JobType } from 'bullmq';
import { redact } from '../src/secrets';
import { jobTenant } from './definition';
import type { JobState } from './job-states';
import { QUEUE_NAMES, type QueueRegistry } from './index';

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
/**
 * Jobs of one or all queues in a state, newest first. With `tenantId`,
 * only that tenant's jobs; the scan is bounded so a big queue cannot make
 * the request unbounded.
 */
export async function listJobs(queues: QueueRegistry, options: { queue?: string; state: JobState; limit: number; tenantId?: string }): Promise<JobView[]> {
  const names = options.queue ? [options.queue] : QUEUE_NAMES;
  const scan = options.tenantId ? Math.max(options.limit * 20, 1000) : options.limit;
  const views: JobView[] = [];
  for (const name of names) {
    const jobs = await queues.queue(name).getJobs([options.state as JobType], 0, scan - 1, false);
    for (const job of jobs) {
      if (!job) continue;
      if (options.tenantId && jobTenant(job.data) !== options.tenantId) continue;
      views.push(toView(job, name, options.state));
    }
  }
  return views.sort((a, b) => b.created_at.localeCompare(a.created_at)).slice(0, options.limit);
}

/** One job with its data and options (secrets redacted), result, stack traces and logs; null when missing or another tenant's. */
export async function jobDetail(queues: QueueRegistry, queueName: string, jobId: string, tenantId?: string): Promise<JobDetail | null> {
  const queue = queues.queue(queueName);
  const job = await queue.getJob(jobId);
  if (!job || (tenantId && jobTenant(job.data) !== tenantId)) return null;
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

function toView(job: Job, queue: string, state: string): JobView {
  return {
    id: job.id!,
    queue,
    name: job.name,
    state,
    tenant_id: jobTenant(job.data),
    attempts_made: job.attemptsMade,
    progress: job.progress,
    failed_reason: job.failedReason || null,
    created_at: new Date(job.timestamp).toISOString(),
    processed_at: job.processedOn ? new Date(job.processedOn).toISOString() : null,
    finished_at: job.finishedOn ? new Date(job.finishedOn).toISOString() : null,
  };
}
