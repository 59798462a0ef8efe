import type { Knex } from 'knex';
import { redact } from '../../secrets';
import { acrossTenants, withTenant } from '../../db/tenant-scope';
import { conflict, isUniqueViolation, notFound } from '../../errors';
import { isUuid, newId } from '../ids';
import { paginate, type Page, type PageRequest } from '../pagination';

export const DEAD_LETTER_STATES = ['open', 'redriven', 'discarded'] as const;
export type DeadLetterState = (typeof DEAD_LETTER_STATES)[number];

export interface DeadLetterRow {
  id: string;
  queue: string;
  job_id: string;
  job_name: string;
  tenant_id: string | null;
  payload: unknown;
  error_class: string;
  error_message: string;
  stacktrace: string | null;
  attempts: number;
  max_attempts: number | null;
  failed_at: Date;
  redriven_at: Date | null;
  redrive_count: number;
  last_redrive_job_id: string | null;
  discarded_at: Date | null;
  created_at: Date;
}

export interface DeadLetterFilters {
  queue?: string;
  /** Exact: `UnrecoverableError`, `EmbeddingError`, `Error`… */
  error_class?: string;
  /** Case-insensitive substring of the error message. */
  message_contains?: string;
  tenant?: string;
}

/** A job that failed for good, as the worker saw it. */
export interface FinalFailure {
  queue: string;
  jobId: string;
  jobName: string;
  /** The job's data as given; secret-named keys are redacted before it is stored. */
  data: unknown;
  error: Error;
  /** Attempts made, this last one included: the number Bull Board shows. */
  attempts: number;
  maxAttempts: number | null;
}

/** Long enough for any real message or trace; a runaway one is cut rather than stored whole. */
const MESSAGE_MAX_CHARS = 10_000;
const STACKTRACE_MAX_CHARS = 20_000;

const iso = (value: Date | null) => (value ? value.toISOString() : null);

export function stateOf(row: Pick<DeadLetterRow, 'redriven_at' | 'discarded_at'>): DeadLetterState {
  if (row.discarded_at) return 'discarded';
  return row.redriven_at ? 'redriven' : 'open';
}

export function toDeadLetterView(row: DeadLetterRow) {
  return {
    id: row.id,
    queue: row.queue,
    job_id: row.job_id,
    job_name: row.job_name,
    tenant_id: row.tenant_id,
    state: stateOf(row),
    payload: row.payload,
    error_class: row.error_class,
    error_message: row.error_message,
    attempts: row.attempts,
    max_attempts: row.max_attempts,
    failed_at: row.failed_at.toISOString(),
    redriven_at: iso(row.redriven_at),
    redrive_count: row.redrive_count,
    last_redrive_job_id: row.last_redrive_job_id,
    discarded_at: iso(row.discarded_at),
    created_at: row.created_at.toISOString(),
  };
}
export type DeadLetterView = ReturnType<typeof toDeadLetterView>;

/** One tenant's rows, or every row (the operator, `tenantId` undefined). */
function inScope<T>(db: Knex, tenantId: string | undefined, work: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
  return tenantId ? withTenant(db, tenantId, work) : acrossTenants(db, work);
}

function whereOpen(query: Knex.QueryBuilder): Knex.QueryBuilder {
  return query.whereNull('redriven_at').whereNull('discarded_at');
}

function applyFilters(query: Knex.QueryBuilder, filters: DeadLetterFilters): Knex.QueryBuilder {
  if (filters.queue) query.where('queue', filters.queue);
  if (filters.error_class) query.where('error_class', filters.error_class);
  // strpos, not LIKE: the operator's text is matched as given, `%` and `_` included.
  if (filters.message_contains) query.whereRaw('strpos(lower(error_message), lower(?)) > 0', [filters.message_contains]);
  if (filters.tenant) query.where('tenant_id', filters.tenant);
  return query;
}

function applyState(query: Knex.QueryBuilder, state: DeadLetterState): Knex.QueryBuilder {
  if (state === 'open') return whereOpen(query);
  return state === 'redriven' ? query.whereNotNull('redriven_at') : query.whereNotNull('discarded_at');
}

const withoutNul = (text: string) => text.replaceAll('\u0000', '');

/**
 * Records a job that failed for good. Idempotent: while the job's row is
 * open, recording it again (the same failure seen twice, or a job retried
 * outside a redrive that fails again) updates that row. Returns whether a
 * new row was made. Across tenants because the worker records for every
 * tenant, for none (ticks), and for tenants deleted meanwhile (whose rows
 * then belong to no tenant).
 */
export async function recordDeadLetter(db: Knex, failure: FinalFailure): Promise<'recorded' | 'updated'> {
  const tenantId = (failure.data as { tenantId?: unknown } | null)?.tenantId;
  const stack = failure.error.stack ? withoutNul(failure.error.stack).slice(0, STACKTRACE_MAX_CHARS) : null;
  return acrossTenants(db, async (trx) => {
    const result = await trx.raw(
      `insert into dead_letters (id, queue, job_id, job_name, tenant_id, payload, error_class, error_message, stacktrace, attempts, max_attempts, failed_at)
       values (?, ?, ?, ?, (select id from tenants where id = ?), ?::jsonb, ?, ?, ?, ?, ?, now())
       on conflict (queue, job_id) where redriven_at is null and discarded_at is null do update set
         job_name = excluded.job_name, payload = excluded.payload, error_class = excluded.error_class, error_message = excluded.error_message,
         stacktrace = excluded.stacktrace, attempts = excluded.attempts, max_attempts = excluded.max_attempts, failed_at = excluded.failed_at
       returning (xmax = 0) as inserted`,
      [
        newId(),
        failure.queue,
        failure.jobId,
        failure.jobName,
        typeof tenantId === 'string' && isUuid(tenantId) ? tenantId : null,
        JSON.stringify(redact(failure.data) ?? null),
        failure.error.name || 'Error',
        withoutNul(failure.error.message).slice(0, MESSAGE_MAX_CHARS),
        stack,
        failure.attempts,
        failure.maxAttempts,
      ],
    );
    return result.rows[0].inserted ? 'recorded' : 'updated';
  });
}

export async function listDeadLetters(
  db: Knex,
  tenantId: string | undefined,
  filters: DeadLetterFilters & { state: DeadLetterState },
  page: PageRequest,
): Promise<Page<DeadLetterView>> {
  return inScope(db, tenantId, (trx) => {
    const query = applyState(applyFilters(trx('dead_letters').select('*'), filters), filters.state);
    return paginate(query, page, toDeadLetterView);
  });
}

export async function getDeadLetter(db: Knex, tenantId: string | undefined, id: string): Promise<DeadLetterRow> {
  const row = await inScope(db, tenantId, (trx) => trx<DeadLetterRow>('dead_letters').first('*').where({ id }));
  if (!row) throw notFound('Dead letter');
  return row;
}

/** 404 when the caller cannot see the row, 409 when it is no longer open. */
async function refuseClosed(db: Knex, tenantId: string | undefined, id: string, action: string): Promise<never> {
  const row = await getDeadLetter(db, tenantId, id);
  const state = stateOf(row);
  throw conflict(`Only open dead letters can be ${action}; this one is ${state}.`, { state });
}

/**
 * Marks an open row redriven before its work is queued again, so two
 * redrives (or a redrive and a worker noticing the job run again) cannot
 * both take it. `releaseRedrive` undoes this when the work could not be queued.
 */
export async function claimRedrive(db: Knex, tenantId: string | undefined, id: string): Promise<DeadLetterRow> {
  const [row] = await inScope(db, tenantId, (trx) =>
    whereOpen(trx('dead_letters').where({ id }))
      .update({ redriven_at: trx.fn.now(), redrive_count: trx.raw('redrive_count + 1') })
      .returning('*'),
  );
  return (row as DeadLetterRow | undefined) ?? refuseClosed(db, tenantId, id, 'redriven');
}

export async function releaseRedrive(db: Knex, tenantId: string | undefined, claimed: DeadLetterRow): Promise<void> {
  try {
    await inScope(db, tenantId, (trx) =>
      trx('dead_letters')
        .where({ id: claimed.id })
        .update({ redriven_at: null, redrive_count: trx.raw('redrive_count - 1') }),
    );
  } catch (error) {
    // The job failed for good again meanwhile and has a new open row: this one stays closed.
    if (!isUniqueViolation(error, 'dead_letters_open_job')) throw error;
  }
}

/** The job that runs the redriven work: the same id when BullMQ retried it, possibly another when it was added anew. */
export async function noteRedriveJob(db: Knex, tenantId: string | undefined, id: string, jobId: string): Promise<DeadLetterRow> {
  const [row] = await inScope(db, tenantId, (trx) => trx('dead_letters').where({ id }).update({ last_redrive_job_id: jobId }).returning('*'));
  return row as DeadLetterRow;
}

/**
 * The worker saw a job run again that has an open row: it was retried
 * outside a redrive (the jobs API, Bull Board). Marks the row redriven and
 * says whether there was one, so the caller reopens what the failure closed.
 */
export async function closeOnRerun(db: Knex, queue: string, jobId: string): Promise<boolean> {
  const updated = await acrossTenants(db, (trx) =>
    whereOpen(trx('dead_letters').where({ queue, job_id: jobId })).update({
      redriven_at: trx.fn.now(),
      redrive_count: trx.raw('redrive_count + 1'),
      last_redrive_job_id: jobId,
    }),
  );
  return updated > 0;
}

export async function discardDeadLetter(db: Knex, tenantId: string | undefined, id: string): Promise<DeadLetterView> {
  const [row] = await inScope(db, tenantId, (trx) =>
    whereOpen(trx('dead_letters').where({ id })).update({ discarded_at: trx.fn.now() }).returning('*'),
  );
  return toDeadLetterView((row as DeadLetterRow | undefined) ?? (await refuseClosed(db, tenantId, id, 'discarded')));
}

/** How many open rows match, and the ids of the oldest `take` of them. */
export async function matchOpen(db: Knex, tenantId: string | undefined, filters: DeadLetterFilters, take: number): Promise<{ matched: number; ids: string[] }> {
  return inScope(db, tenantId, async (trx) => {
    const matching = () => whereOpen(applyFilters(trx('dead_letters'), filters));
    const counted = await matching().count<{ n: string }[]>('* as n');
    const ids = take > 0 ? ((await matching().select('id').orderBy('id').limit(take)) as Array<{ id: string }>) : [];
    return { matched: Number(counted[0].n), ids: ids.map((row) => row.id) };
  });
}

export async function discardMatching(db: Knex, tenantId: string | undefined, filters: DeadLetterFilters, dryRun: boolean): Promise<{ matched: number; discarded: number }> {
  if (dryRun) return { matched: (await matchOpen(db, tenantId, filters, 0)).matched, discarded: 0 };
  const discarded = await inScope(db, tenantId, (trx) => whereOpen(applyFilters(trx('dead_letters'), filters)).update({ discarded_at: trx.fn.now() }));
  return { matched: discarded, discarded };
}

/** Open rows per queue, over every tenant: the `ragworks_dead_letters_open` gauge. */
export async function countOpenByQueue(db: Knex): Promise<Map<string, number>> {
  const rows: Array<{ queue: string; n: string }> = await acrossTenants(db, (trx) =>
    whereOpen(trx('dead_letters')).select('queue').count('* as n').groupBy('queue'),
  );
  return new Map(rows.map((row) => [row.queue, Number(row.n)]));
}
