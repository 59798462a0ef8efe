import { Job, type JobsOptions, type Queue } from 'bullmq';
import { z } from 'zod';
import { reopenDelivery, type DeliveryWork } from '../src/domain/webhooks/deliveries';
import type { SlotClaim } from '../src/domain/webhooks/fairness';
import { defineQueue, RETENTION_DEFAULTS } from './definition';

/** What enqueueing deliveries needs of the queue registry (QueueRegistry in queues/index.ts). */
export interface DeliveryQueues {
  enqueueMany(definition: typeof webhooksQueue, payloads: Array<z.input<typeof webhooksQueue.payload>>, options: (index: number) => JobsOptions): Promise<string[]>;
  queue(name: string): Queue;
}

/** The backoff type whose delays come from WEBHOOK_RETRY_SCHEDULE and Retry-After. */
export const WEBHOOK_BACKOFF = 'webhook-schedule';

/**
 * One signed POST of one event to one endpoint, retried on the configured
 * schedule as BullMQ delayed jobs. `attempts` is set per job from the
 * schedule's length when it is enqueued; the default here is the length of
 * the default schedule.
 */
export const webhooksQueue = defineQueue({
  name: 'webhooks',
  payload: z.object({
    tenantId: z.uuid(),
    deliveryId: z.uuid(),
    eventId: z.uuid(),
    endpointId: z.uuid(),
    origin: z.enum(['event', 'redelivery', 'replay']),
  }),
  jobOptions: {
    attempts: 10,
    backoff: { type: WEBHOOK_BACKOFF },
    ...RETENTION_DEFAULTS,
  },
  // The first run belongs to the story of what caused the event; any later one (a retry after its backoff, a run
  // after waiting for an endpoint slot or a suspension) may come days later, and is a trace linked to it.
  ownTrace: (job) => job.attemptsStarted > 1,
  // A fan-out that runs twice enqueues nothing twice; an asked-for redelivery is new work.
  holdsWhileSuspended: true,
  jobId: (payload) => (payload.origin === 'event' ? `${payload.eventId}-${payload.endpointId}` : `delivery-${payload.deliveryId}`),
  // A delivery marked failed goes back to pending, or says why it cannot (its endpoint is gone).
  reopen: (payload, db) => reopenDelivery(db, payload.tenantId, payload.deliveryId),
});

/** What enqueueDeliveries needs to know of the per-endpoint slots (src/domain/webhooks/fairness.ts). */
export interface DeliveryAdmission {
  readonly timings: { parkBackstopMs: number };
  admit(claims: readonly SlotClaim[]): Promise<{ admitted: SlotClaim[]; parked: SlotClaim[] }>;
  granted(claims: readonly SlotClaim[]): Promise<SlotClaim[]>;
}

/**
 * Enqueues deliveries in one bulk add. Those due now are admitted first
 * (fairness.ts): a delivery whose endpoint has a free slot is added to run
 * at once; the others are added parked — delayed by the long backstop —
 * and promoted when a slot is handed to them. So the waiting list holds at
 * most `limit` deliveries per endpoint, and one endpoint's backlog never
 * stands in front of another's fresh delivery. `spacingMs` paces the rest
 * (work[i] is due i × spacingMs from now); a paced delivery takes a slot
 * when it runs.
 */
export async function enqueueDeliveries(
  queues: DeliveryQueues,
  slots: DeliveryAdmission,
  work: readonly DeliveryWork[],
  { attempts, spacingMs = 0 }: { attempts: number; spacingMs?: number },
): Promise<void> {
  if (work.length === 0) return;
  const dueNow = spacingMs > 0 ? work.slice(0, 1) : work;
  const { parked } = await slots.admit(dueNow.map((item) => ({ endpointId: item.endpointId, jobId: webhooksQueue.jobId(item), deliveryId: item.deliveryId })));
  const parkedIds = new Set(parked.map((claim) => claim.jobId));
  await queues.enqueueMany(webhooksQueue, [...work], (index) => ({
    attempts,
    delay: parkedIds.has(webhooksQueue.jobId(work[index])) ? slots.timings.parkBackstopMs : index * spacingMs,
  }));
  // A slot handed to one of these before its job existed could not promote it: it is promoted now.
  const granted = await slots.granted(parked);
  await promoteDeliveries(queues.queue(webhooksQueue.name), granted.map((claim) => claim.jobId));
}

/**
 * Moves parked deliveries that were given a slot from delayed to waiting.
 * One that is not delayed (not added yet, or still running on its way to
 * being parked) is left alone: whoever adds or parks it looks for its slot
 * afterwards and promotes it then.
 */
export async function promoteDeliveries(queue: Queue, jobIds: readonly string[]): Promise<void> {
  await Promise.all(jobIds.map((jobId) => new Job(queue, webhooksQueue.name, {}, {}, jobId).promote().catch(() => undefined)));
}
