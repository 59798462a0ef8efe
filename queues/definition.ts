import type { JobsOptions } from 'bullmq';
import type { Knex } from 'knex';
import type { z } from 'zod';

/** What every queue module declares: its name, payload, options and job ids. */
export interface QueueDefinition<Schema extends z.ZodType = z.ZodType> {
  readonly name: string;
  readonly payload: Schema;
  readonly jobOptions: JobsOptions;
  /** Deterministic job id, so enqueueing the same work twice is a no-op. */
  jobId(payload: z.output<Schema>): string;
  /** Work done for a tenant (payload `tenantId`) that waits, delayed, while the tenant is suspended. */
  readonly holdsWhileSuspended?: boolean;
  /**
   * `tenant`: jobs are served in turn per tenant (payload `tenantId`), so one
   * tenant's backlog cannot hold up another's work (queues/fairness.ts).
   */
  readonly fairness?: 'tenant';
  /** Jobs at once per worker process unless the settings say otherwise (see concurrencyOf). */
  readonly concurrency?: number;
  /**
   * Whether this run of a job starts a trace of its own, with a span link to
   * the span that added the job, rather than joining that span's trace: for
   * work that runs long after, or apart from, what asked for it
   * (docs/operations.md, "Tracing"). Unset: every run joins it.
   */
  readonly ownTrace?: (job: { data: unknown; attemptsStarted: number }) => boolean;
  /**
   * Called before a job that failed for good runs again (a dead-letter
   * redrive, or a retry from the jobs API): undoes what its final failure
   * closed in the database, so the work is redone rather than skipped.
   * Returns why the work must not run again, or null. Declared with the
   * queue, not its processor, so the web role can call it without loading
   * any processor.
   */
  reopen?(payload: z.output<Schema>, db: Knex): Promise<string | null>;
}

/** Jobs at once per worker process of a queue that names no concurrency of its own. */
const DEFAULT_CONCURRENCY = 4;

/** Jobs at once per worker process for `definition`: the queue's own setting, else everyone's, else its default. */
export function concurrencyOf(
  definition: Pick<QueueDefinition, 'name' | 'concurrency'>,
  settings: { WORKER_CONCURRENCY?: number; WORKER_CONCURRENCY_PER_QUEUE: Record<string, number> },
): number {
  return settings.WORKER_CONCURRENCY_PER_QUEUE[definition.name] ?? settings.WORKER_CONCURRENCY ?? definition.concurrency ?? DEFAULT_CONCURRENCY;
}

export type PayloadOf<D extends QueueDefinition> = z.output<D['payload']>;

export function defineQueue<Schema extends z.ZodType>(definition: QueueDefinition<Schema>): QueueDefinition<Schema> {
  return definition;
}

/**
 * The job data field counting a job's attempt-free re-delays while the
 * database was down (workers/runtime.ts); a fresh attempts budget
 * (retry, redrive) starts it again.
 */
export const DATABASE_RETRIES = 'databaseRetries';

const DAY_SECONDS = 24 * 60 * 60;

/** Completed jobs stay a day, failed ones a week, so operators can inspect them. */
export const RETENTION_DEFAULTS = {
  removeOnComplete: { age: DAY_SECONDS, count: 10_000 },
  removeOnFail: { age: 7 * DAY_SECONDS, count: 50_000 },
} satisfies JobsOptions;

/** A scheduler tick (ISO time) as part of a job id: BullMQ refuses `:` in custom ids. */
export function tickId(tick: string): string {
  return tick.replace(/:/g, '');
}

/**
 * Reopens what a failed job's work closed, through its queue's `reopen`;
 * null when the queue has none or the payload is not its own.
 */
export async function reopenWork(definition: QueueDefinition | undefined, db: Knex, payload: unknown): Promise<string | null> {
  const parsed = definition?.payload.safeParse(payload);
  if (!definition?.reopen || !parsed?.success) return null;
  return definition.reopen(parsed.data, db);
}

/** The tenant a job works for: by the payload convention of every tenant's queue, its `tenantId`; null for work of no tenant. */
export function jobTenant(data: unknown): string | null {
  const tenantId = (data as { tenantId?: unknown } | null | undefined)?.tenantId;
  return typeof tenantId === 'string' ? tenantId : null;
}
