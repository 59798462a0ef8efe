import { z } from 'zod';
import { defineQueue, RETENTION_DEFAULTS } from './definition';

/** The backoff type whose waits come from indexingRetryDelayMs. */
export const INDEXING_BACKOFF = 'indexing-schedule';

/**
 * Attempts of a job failing for any reason but an embeddings provider
 * outage (a bug, a constraint, a lost worker): the first 5 of the schedule,
 * about 30 s at the default base.
 */
export const INDEXING_ATTEMPTS_FOR_OTHER_ERRORS = 5;

/** No wait is longer than this many times the base: 10 min at the default 2 s. */
const RETRY_STEP_CAP = 300;
const RETRY_JITTER = 0.2;

/**
 * The wait after the n-th failed attempt (n ≥ 1): the base doubled each
 * time up to its cap, ±20% so that the documents of one outage do not all
 * return at once. The 15 waits of the 16 attempts add up to 2311 × the base,
 * at least 3698 s at the default 2 s even with every jitter at its lowest:
 * an embeddings provider may be away for an hour.
 */
export function indexingRetryDelayMs(attemptsMade: number, baseMs: number, random: () => number = Math.random): number {
  const step = Math.min(2 ** Math.max(attemptsMade - 1, 0), RETRY_STEP_CAP);
  return Math.round(baseMs * step * (1 - RETRY_JITTER + 2 * RETRY_JITTER * random()));
}

/** Indexes one version of one document on behalf of one index job. */
export const indexingQueue = defineQueue({
  name: 'indexing',
  payload: z.object({
    tenantId: z.uuid(),
    indexJobId: z.uuid(),
    documentId: z.uuid(),
    version: z.number().int().positive(),
  }),
  jobOptions: {
    attempts: 16,
    backoff: { type: INDEXING_BACKOFF },
    ...RETENTION_DEFAULTS,
  },
  holdsWhileSuspended: true,
  // One tenant's 2,000-document batch must not make another's single document wait for all of it.
  fairness: 'tenant',
  // Documents that finish preparing while others are being stored go to the database together, in one
  // transaction (group commit): more in flight makes those batches bigger and each document cheaper.
  concurrency: 16,
  // The index job is part of the id: a forced re-index of the same version is new work.
  jobId: (payload) => `doc-${payload.documentId}-v${payload.version}-${payload.indexJobId}`,
});
