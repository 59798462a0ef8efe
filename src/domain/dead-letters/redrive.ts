import type { Knex } from 'knex';
import { AppError, conflict } from '../../errors';
import {
  claimRedrive,
  matchOpen,
  noteRedriveJob,
  releaseRedrive,
  toDeadLetterView,
  type DeadLetterFilters,
  type DeadLetterView,
} from './dead-letters';

/** How a redrive got a job's work running again, or why it could not. */
export type RedriveOutcome =
  | { method: 'retried' | 'requeued' | 'already_queued'; jobId: string }
  | { method: 'impossible'; reason: string };

/** What a redrive asks of the queues (queueRedriver in queues/retries.ts): the job run again, `prepare` just before it is queued. */
export interface JobRedriver {
  redriveJob(queueName: string, jobId: string, payload: unknown, attempts: number | null, prepare: () => Promise<void>): Promise<RedriveOutcome>;
}

export interface RedriveDeps {
  db: Knex;
  jobs: JobRedriver;
  /**
   * Reopens what the job's final failure closed in the database (a webhook
   * delivery marked failed), so that its work really runs again rather than
   * being skipped; returns why it must not run again, or null.
   */
  reopen(queue: string, payload: unknown): Promise<string | null>;
}

/** At most this many dead letters per bulk redrive request; `matched` tells how many more there are. */
export const REDRIVE_LIMIT = 500;

export interface RedriveResult {
  dead_letter: DeadLetterView;
  /** `retried`: BullMQ still held the failed job; `requeued`: it was gone and was added again; `already_queued`: it was waiting or running. */
  method: 'retried' | 'requeued' | 'already_queued';
}

/**
 * Runs an open dead letter's work again on its source queue, with a fresh
 * attempts budget, and marks it redriven. 404 for a row the caller cannot
 * see; 409 for one no longer open, or whose work cannot run again.
 */
export async function redriveDeadLetter(deps: RedriveDeps, tenantId: string | undefined, id: string): Promise<RedriveResult> {
  const claimed = await claimRedrive(deps.db, tenantId, id);
  try {
    const outcome = await deps.jobs.redriveJob(claimed.queue, claimed.job_id, claimed.payload, claimed.max_attempts, async () => {
      const refusal = await deps.reopen(claimed.queue, claimed.payload);
      if (refusal) throw conflict(refusal);
    });
    if (outcome.method === 'impossible') throw conflict(outcome.reason);
    const row = await noteRedriveJob(deps.db, tenantId, claimed.id, outcome.jobId);
    return { dead_letter: toDeadLetterView(row), method: outcome.method };
  } catch (error) {
    await releaseRedrive(deps.db, tenantId, claimed);
    throw error;
  }
}

/**
 * Redrives the open dead letters matching `filters`, oldest first, at most
 * `limit` of them; with `dryRun`, only counts them. A row that cannot be
 * redriven (its work refused, or taken by someone else meanwhile) is
 * listed in `skipped` and stays as it was.
 */
export async function redriveMatching(
  deps: RedriveDeps,
  tenantId: string | undefined,
  filters: DeadLetterFilters,
  options: { dryRun: boolean; limit?: number },
): Promise<{ matched: number; redriven: number; skipped: Array<{ id: string; reason: string }>; limit: number }> {
  const limit = options.limit ?? REDRIVE_LIMIT;
  const { matched, ids } = await matchOpen(deps.db, tenantId, filters, options.dryRun ? 0 : limit);
  let redriven = 0;
  const skipped: Array<{ id: string; reason: string }> = [];
  for (const id of ids) {
    try {
      await redriveDeadLetter(deps, tenantId, id);
      redriven += 1;
    } catch (error) {
      if (!(error instanceof AppError) || (error.status !== 404 && error.status !== 409)) throw error;
      skipped.push({ id, reason: error.message });
    }
  }
  return { matched, redriven, skipped, limit };
}
