import type { Job } from 'bullmq';
import { z } from 'zod';
import { JOB_STATES } from '../../../queues/job-states';
import { jobDetail, listJobs } from '../../../queues/job-views';
import { queueOverview } from '../../../queues/queue-health';
import { retryFailed, retryJob } from '../../../queues/retries';
import { QUEUE_NAMES } from '../../../queues';
import { platformStats } from '../../domain/documents/stats';
import { conflict, notFound } from '../../errors';
import { replied } from '../audit-trail';
import type { Api } from '../route';
import { safeString } from '../schemas';
import { closeOnRerun } from '../../domain/dead-letters/dead-letters';
import type { Platform } from '../../platform';
import { queueDefinition, reopenWork } from '../../../queues';

const tag = 'Jobs and queues';
const jobsAuth = { scope: 'jobs:manage', tenant: 'optional' } as const;

const queueName = z.enum(QUEUE_NAMES as [string, ...string[]]);
const queueParams = z.object({ queue: queueName });
/** Names BullMQ uses for a queue's own keys: as a job id they would read those keys. */
const RESERVED_IDS = new Set(['wait', 'paused', 'active', 'delayed', 'prioritized', 'completed', 'failed', 'waiting-children', 'stalled',
  'stalled-check', 'limiter', 'events', 'meta', 'id', 'marker', 'pc', 'de', 'repeat', 'metrics']);
const jobId = safeString({ min: 1, max: 300 })
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'must be a job id')
  .refine((value) => !RESERVED_IDS.has(value), 'must be a job id');
const jobParams = z.object({ queue: queueName, id: jobId });

const queueSchema = z.object({
  name: z.string(),
  counts: z.object({
    waiting: z.number(), active: z.number(), delayed: z.number(), completed: z.number(), failed: z.number(), paused: z.number(), prioritized: z.number(),
  }),
  oldest_waiting_age_seconds: z.number(),
  is_paused: z.boolean(),
  workers: z.number().int(),
});
const jobSchema = z.object({
  id: z.string(), queue: z.string(), name: z.string(), state: z.string(), tenant_id: z.string().nullable(), attempts_made: z.number().int(),
  progress: z.unknown(), failed_reason: z.string().nullable(), created_at: z.string(), processed_at: z.string().nullable(), finished_at: z.string().nullable(),
});

/**
 * A retried job runs like a redriven dead letter: what its final failure
 * closed is reopened first (409 when it must not run again), and its dead
 * letter, if one is open, is marked redriven.
 */
function rerunAsRedrive(services: JobsServices, queue: string) {
  return async (job: Job) => {
    const refusal = await reopenWork(queueDefinition(queue), services.db.knex, job.data);
    if (refusal) throw conflict(refusal);
    await closeOnRerun(services.db.knex, queue, String(job.id));
  };
}

/** What the jobs routes use of the platform, wired in by the app (src/http/app.ts). */
export type JobsServices = Pick<Platform, 'db' | 'queues' | 'startedAt'>;

export function jobRoutes(api: Api, services: JobsServices): void {
  api.add({
    method: 'get', path: '/api/admin/queues', operationId: 'listQueues', summary: 'Every queue with its counts, oldest waiting age and workers', tag, auth: 'operator',
    responses: { 200: { description: 'Queues', schema: z.array(queueSchema) } },
    handler: async () => ({ status: 200, body: await queueOverview(services.queues) }),
  });
  api.add({
    method: 'get', path: '/api/admin/jobs', operationId: 'listJobs', summary: 'Jobs in a state, newest first', tag, auth: jobsAuth,
    query: z.object({
      queue: queueName.optional(),
      state: z.enum(JOB_STATES).default('failed'),
      limit: z.coerce.number().int().min(1).max(100).default(20),
    }),
    responses: { 200: { description: 'Jobs', schema: z.object({ items: z.array(jobSchema) }) } },
    handler: async ({ query, ctx }) => ({
      status: 200,
      body: { items: await listJobs(services.queues, { ...query, tenantId: ctx.tenant?.id }) },
    }),
  });
  api.add({
    method: 'get', path: '/api/admin/jobs/:queue/:id', operationId: 'getJob', summary: 'A job with its data (secrets redacted), stack trace and logs', tag, auth: jobsAuth,
    params: jobParams,
    responses: { 200: { description: 'The job' }, 404: { description: 'No such job' } },
    handler: async ({ params, ctx }) => {
      const job = await jobDetail(services.queues, params.queue, params.id, ctx.tenant?.id);
      if (!job) throw notFound('Job');
      // Stack traces are for operators; a tenant's key sees the failure reason only.
      if (ctx.principal?.kind === 'key') return { status: 200, body: { ...job, stacktrace: [] } };
      return { status: 200, body: job };
    },
  });
  api.add({
    method: 'post', path: '/api/admin/jobs/:queue/:id/retry', operationId: 'retryJob', summary: 'Retry one failed job', tag, auth: jobsAuth,
    params: jobParams,
    responses: { 200: { description: 'Retried' }, 404: { description: 'No such job' }, 409: { description: 'The job is not failed' } },
    audit: { action: 'job.retry', target: ({ params }) => params && `${params.queue}/${params.id}` },
    handler: async ({ params, ctx }) => {
      const outcome = await retryJob(services.queues, params.queue, params.id, ctx.tenant?.id, rerunAsRedrive(services, params.queue));
      if (!outcome) throw notFound('Job');
      if (!outcome.retried) throw conflict(`Only failed jobs can be retried; this one is ${outcome.state}.`, { state: outcome.state });
      return { status: 200, body: { id: params.id, queue: params.queue, retried: true } };
    },
  });
  api.add({
    method: 'post', path: '/api/admin/queues/:queue/retry-failed', operationId: 'retryFailedJobs', summary: 'Retry failed jobs, optionally filtered by reason; dry run counts only', tag, auth: jobsAuth,
    params: queueParams,
    body: z.object({ dry_run: z.boolean().default(false), failed_reason_contains: safeString({ min: 1, max: 500 }).optional() }).strict(),
    responses: { 200: { description: 'Counts', schema: z.object({ matched: z.number().int(), retried: z.number().int() }) } },
    audit: {
      action: 'queue.retry_failed',
      target: ({ params }) => params?.queue,
      details: ({ body, reply }) => ({
        dry_run: body?.dry_run, failed_reason_contains: body?.failed_reason_contains,
        matched: replied(reply, 'matched'), retried: replied(reply, 'retried'),
      }),
    },
    handler: async ({ params, body, ctx }) => ({
      status: 200,
      body: await retryFailed(
        services.queues,
        params.queue,
        { dryRun: body.dry_run, reasonContains: body.failed_reason_contains, tenantId: ctx.tenant?.id },
        rerunAsRedrive(services, params.queue),
      ),
    }),
  });
  for (const action of ['pause', 'resume'] as const) {
    api.add({
      method: 'post', path: `/api/admin/queues/:queue/${action}`, operationId: `${action}Queue`, summary: `${action === 'pause' ? 'Pause' : 'Resume'} a queue for every worker`, tag, auth: 'operator',
      params: queueParams,
      responses: { 200: { description: 'The queue', schema: queueSchema } },
      audit: { action: `queue.${action}`, target: ({ params }) => params?.queue },
      handler: async ({ params }) => {
        await services.queues.queue(params.queue)[action]();
        const overview = await queueOverview(services.queues);
        return { status: 200, body: overview.find((queue) => queue.name === params.queue) };
      },
    });
  }
  api.add({
    method: 'get', path: '/api/admin/stats', operationId: 'getPlatformStats', summary: 'Platform-wide counts', tag, auth: 'operator',
    responses: {
      200: {
        description: 'Counts',
        schema: z.object({
          total_documents: z.number().int(), indexed_documents: z.number().int(), total_chunks: z.number().int(), tenants: z.number().int(),
          searches_today: z.number().int().describe('searches since UTC midnight, as recorded by analytics (up to a minute behind)'),
          active_jobs: z.number().int(), pending_jobs: z.number().int(), failed_jobs: z.number().int(), queue_depth: z.number().int(), uptime_secs: z.number(),
        }),
      },
    },
    handler: async () => {
      const [stats, queues] = await Promise.all([platformStats(services.db.knex), queueOverview(services.queues)]);
      const sum = (pick: (queue: (typeof queues)[number]) => number) => queues.reduce((total, queue) => total + pick(queue), 0);
      // A paused queue's `paused` count is its waiting jobs again: counted once, as waiting.
      const pending = sum((queue) => queue.counts.waiting + queue.counts.delayed + queue.counts.prioritized);
      return {
        status: 200,
        body: {
          ...stats,
          active_jobs: sum((queue) => queue.counts.active),
          pending_jobs: pending,
          failed_jobs: sum((queue) => queue.counts.failed),
          queue_depth: pending + sum((queue) => queue.counts.active),
          uptime_secs: Math.round((Date.now() - services.startedAt.getTime()) / 1000),
        },
      };
    },
  });
}
