import { z } from 'zod';
import { defineQueue, RETENTION_DEFAULTS, tickId } from './definition';

const tick = z.iso.datetime();

/**
 * Usage rollups and their reconciliation. A `rollup` tick fans out one
 * `tenant` job per tenant; a `reconcile` tick compares closed days with the
 * raw data. Every id carries the tick, so replicas and retries enqueue each
 * piece of work once.
 */
export const usageQueue = defineQueue({
  name: 'usage',
  payload: z.discriminatedUnion('kind', [
    z.object({ kind: z.literal('rollup'), tick }),
    z.object({ kind: z.literal('tenant'), tenantId: z.uuid(), tick }),
    z.object({ kind: z.literal('reconcile'), tick }),
  ]),
  jobOptions: { attempts: 5, backoff: { type: 'exponential', delay: 10_000 }, ...RETENTION_DEFAULTS },
  // Each tenant's rollup is a trace of its own linked to its tick's fan-out: one trace per tick would hold every tenant.
  ownTrace: (job) => (job.data as { kind?: unknown }).kind === 'tenant',
  jobId: (payload) =>
    payload.kind === 'tenant' ? `usage-${payload.tenantId}-${tickId(payload.tick)}` : `usage-${payload.kind}-${tickId(payload.tick)}`,
});
