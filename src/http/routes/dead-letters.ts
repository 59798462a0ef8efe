import { z } from 'zod';
import { QUEUE_NAMES, queueDefinition, reopenWork } from '../../../queues';
import { queueRedriver } from '../../../queues/retries';
import {
  DEAD_LETTER_STATES,
  discardDeadLetter,
  discardMatching,
  getDeadLetter,
  listDeadLetters,
  toDeadLetterView,
} from '../../domain/dead-letters/dead-letters';
import { deadLetterMetrics } from '../../domain/dead-letters/metrics';
import { redriveDeadLetter, redriveMatching, REDRIVE_LIMIT, type RedriveDeps } from '../../domain/dead-letters/redrive';
import type { Platform } from '../../platform';
import { replied, type AuditCall } from '../audit-trail';
import type { Api } from '../route';
import { idParams, listQuery, safeString } from '../schemas';

const tag = 'Dead letters';
/** As the jobs API: the operator sees every tenant's (and tenantless) rows; a tenant's key only its own. */
const deadLettersAuth = { scope: 'jobs:manage', tenant: 'optional' } as const;

const filterFields = {
  queue: z.enum(QUEUE_NAMES as [string, ...string[]]).optional(),
  error_class: safeString({ min: 1, max: 200 }).optional().describe('Exact error class, e.g. `UnrecoverableError`, `EmbeddingError`, `Error`'),
  message_contains: safeString({ min: 1, max: 500 }).optional().describe('Case-insensitive text in the error message'),
  tenant: z.uuid().optional(),
};
const bulkBody = z.object({ ...filterFields, dry_run: z.boolean().describe('true counts the matching open dead letters and changes nothing') }).strict();

/** What a bulk call records in the audit trail: the filter, the dry run and the counts (never the payloads). */
const bulkDetails = (counted: string) => ({ body, reply }: AuditCall<z.output<typeof bulkBody>>) => ({
  dry_run: body?.dry_run, queue: body?.queue, error_class: body?.error_class, message_contains: body?.message_contains, tenant: body?.tenant,
  matched: replied(reply, 'matched'), [counted]: replied(reply, counted),
});

const deadLetterSchema = z.object({
  id: z.string(),
  queue: z.string(),
  job_id: z.string(),
  job_name: z.string(),
  tenant_id: z.string().nullable(),
  state: z.enum(DEAD_LETTER_STATES),
  payload: z.unknown().describe('The job data, secret-named keys redacted'),
  error_class: z.string(),
  error_message: z.string(),
  attempts: z.number().int(),
  max_attempts: z.number().int().nullable(),
  failed_at: z.string(),
  redriven_at: z.string().nullable(),
  redrive_count: z.number().int(),
  last_redrive_job_id: z.string().nullable(),
  discarded_at: z.string().nullable(),
  created_at: z.string(),
});

/** Reopens through the source queue's definition (queues/definition.ts `reopen`). */
function redriveDeps(services: DeadLettersServices): RedriveDeps {
  return {
    db: services.db.knex,
    jobs: queueRedriver(services.queues),
    reopen: (queue, payload) => reopenWork(queueDefinition(queue), services.db.knex, payload),
  };
}

/** What the dead letters routes use of the platform, wired in by the app (src/http/app.ts). */
export type DeadLettersServices = Pick<Platform, 'db' | 'logger' | 'metrics' | 'queues'>;

export function deadLetterRoutes(api: Api, services: DeadLettersServices): void {
  // The open gauge is read from the database at scrape time, so it is registered wherever /metrics is served.
  deadLetterMetrics(services.metrics.registry, services.db.knex, services.logger, QUEUE_NAMES);

  api.add({
    method: 'get', path: '/api/admin/dead-letters', operationId: 'listDeadLetters', summary: 'Dead letters (jobs that failed for good), newest first', tag, auth: deadLettersAuth,
    query: listQuery.extend({ ...filterFields, state: z.enum(DEAD_LETTER_STATES).default('open') }),
    responses: { 200: { description: 'A page of dead letters', schema: z.object({ items: z.array(deadLetterSchema), next_cursor: z.string().nullable() }) } },
    handler: async ({ query, ctx }) => {
      const { limit, cursor, ...filters } = query;
      return { status: 200, body: await listDeadLetters(services.db.knex, ctx.tenant?.id, filters, { limit, cursor }) };
    },
  });
  api.add({
    method: 'get', path: '/api/admin/dead-letters/:id', operationId: 'getDeadLetter', summary: "A dead letter with its stack trace and its job's current state", tag, auth: deadLettersAuth,
    params: idParams,
    responses: {
      200: {
        description: 'The dead letter',
        schema: deadLetterSchema.extend({
          stacktrace: z.string().nullable().describe('Operator only'),
          job_state: z.string().describe("The BullMQ job's state now; `unknown` once it is gone (a redrive then adds it again)"),
        }),
      },
      404: { description: 'No such dead letter' },
    },
    handler: async ({ params, ctx }) => {
      const row = await getDeadLetter(services.db.knex, ctx.tenant?.id, params.id);
      const jobState = await services.queues.queue(row.queue).getJobState(row.job_id);
      // Stack traces are for operators; a tenant's key sees the error message only.
      const stacktrace = ctx.principal?.kind === 'key' ? null : row.stacktrace;
      return { status: 200, body: { ...toDeadLetterView(row), stacktrace, job_state: jobState } };
    },
  });
  api.add({
    method: 'post', path: '/api/admin/dead-letters/:id/redrive', operationId: 'redriveDeadLetter', summary: 'Run the work of one dead letter again on its source queue', tag, auth: deadLettersAuth,
    params: idParams,
    responses: {
      200: { description: 'Redriven', schema: z.object({ dead_letter: deadLetterSchema, method: z.enum(['retried', 'requeued', 'already_queued']) }) },
      404: { description: 'No such dead letter' },
      409: { description: 'Not open, or its work cannot run again (e.g. its webhook endpoint is disabled)' },
    },
    audit: { action: 'dead_letter.redrive', details: ({ reply }) => ({ method: replied(reply, 'method') }) },
    handler: async ({ params, ctx }) => ({ status: 200, body: await redriveDeadLetter(redriveDeps(services), ctx.tenant?.id, params.id) }),
  });
  api.add({
    method: 'post', path: '/api/admin/dead-letters/redrive', operationId: 'redriveDeadLetters', summary: `Redrive the open dead letters matching a filter, oldest first, at most ${REDRIVE_LIMIT} per request; dry run counts only`, tag,
    auth: deadLettersAuth,
    body: bulkBody,
    responses: {
      200: {
        description: 'Counts',
        schema: z.object({
          matched: z.number().int(),
          redriven: z.number().int(),
          skipped: z.array(z.object({ id: z.string(), reason: z.string() })),
          limit: z.number().int().describe('The most one request redrives; repeat while `matched` exceeds it'),
        }),
      },
    },
    audit: { action: 'dead_letter.redrive_matching', details: bulkDetails('redriven') },
    handler: async ({ body, ctx }) => {
      const { dry_run: dryRun, ...filters } = body;
      return { status: 200, body: await redriveMatching(redriveDeps(services), ctx.tenant?.id, filters, { dryRun }) };
    },
  });
  api.add({
    method: 'delete', path: '/api/admin/dead-letters/:id', operationId: 'discardDeadLetter', summary: 'Discard one dead letter: it stays, as history, no longer open', tag, auth: deadLettersAuth,
    params: idParams,
    responses: { 200: { description: 'Discarded', schema: deadLetterSchema }, 404: { description: 'No such dead letter' }, 409: { description: 'Not open' } },
    audit: { action: 'dead_letter.discard' },
    handler: async ({ params, ctx }) => ({ status: 200, body: await discardDeadLetter(services.db.knex, ctx.tenant?.id, params.id) }),
  });
  api.add({
    method: 'post', path: '/api/admin/dead-letters/discard', operationId: 'discardDeadLetters', summary: 'Discard the open dead letters matching a filter; dry run counts only', tag, auth: deadLettersAuth,
    body: bulkBody,
    responses: { 200: { description: 'Counts', schema: z.object({ matched: z.number().int(), discarded: z.number().int() }) } },
    audit: { action: 'dead_letter.discard_matching', details: bulkDetails('discarded') },
    handler: async ({ body, ctx }) => {
      const { dry_run: dryRun, ...filters } = body;
      return { status: 200, body: await discardMatching(services.db.knex, ctx.tenant?.id, filters, dryRun) };
    },
  });
}
