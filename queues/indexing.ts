import { z } from 'zod';
import { defineQueue, RETENTION_DEFAULTS } from './definition';

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
    attempts: 5,
    backoff: { type: 'exponential', delay: 2_000 },
    ...RETENTION_DEFAULTS,
  },
  // The index job is part of the id: a forced re-index of the same version is new work.
  holdsWhileSuspended: true,
  jobId: (payload) => `doc-${payload.documentId}-v${payload.version}-${payload.indexJobId}`,
});
