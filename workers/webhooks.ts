import { DelayedError, UnrecoverableError, type Job } from 'bullmq';
import { onePer } from '../src/one-per';
import { promoteDeliveries, WEBHOOK_BACKOFF, webhooksQueue } from '../queues';
import { readAttempt, type AttemptRead } from '../src/domain/webhooks/attempts';
import { attemptDelivery, failDelivery, scheduleNextAttempt, type SendGate } from '../src/domain/webhooks/deliveries';
import type { SlotClaim, Woken } from '../src/domain/webhooks/fairness';
import { nextAttemptDelayMs } from '../src/domain/webhooks/retry';
import type { Logger } from '../src/logger';
import type { Platform } from '../src/platform';
import { defineProcessor } from './processor';
import { holdWhileSuspended } from './suspension-hold';

/** A failed attempt that will be retried after `delayMs`. */
class RetryLater extends Error {
  override name = 'RetryLater';
  constructor(
    message: string,
    readonly delayMs: number,
  ) {
    super(message);
  }
}

/** How often each worker process hands on slots whose holders' leases ran out (lost wake-ups). */
const SWEEP_INTERVAL_MS = 5_000;

/**
 * How long a delivery woken by this process may start after its wake-up
 * and still skip asking for the slot it was given and reading itself again:
 * far inside the slot's wait lease (less the run lease), and short enough
 * that what was read for it is as fresh as a read at its start.
 */
const HANDOFF_WINDOW_MS = 2_000;

interface HandOff {
  at: number;
  read: Promise<AttemptRead>;
}

/**
 * The deliveries this process woke by handing them a slot, by job id: most
 * often the next job this process runs. Each was read as it was woken, in
 * the same batch as others, while the delivery that woke it was still
 * recording its own attempt; when it starts here within HANDOFF_WINDOW_MS it
 * neither asks for its slot (it holds it) nor reads itself again. Started
 * elsewhere, or later, it does both as usual.
 */
class HandOffs {
  private readonly entries = new Map<string, HandOff>();

  give(services: WebhooksServices, tenantId: string, woken: readonly Woken[]): void {
    const now = Date.now();
    for (const [jobId, entry] of this.entries) {
      if (now - entry.at <= HANDOFF_WINDOW_MS) break;
      this.entries.delete(jobId);
    }
    for (const { jobId, deliveryId } of woken) {
      const read = readAttempt(services.db.knex, tenantId, deliveryId);
      read.catch(() => undefined);
      this.entries.set(jobId, { at: now, read });
    }
  }

  take(jobId: string): HandOff | undefined {
    const entry = this.entries.get(jobId);
    if (!entry) return undefined;
    this.entries.delete(jobId);
    return Date.now() - entry.at <= HANDOFF_WINDOW_MS ? entry : undefined;
  }
}

const handOffs = onePer((_services: WebhooksServices) => new HandOffs());

/**
 * The per-endpoint slot of one job (src/domain/webhooks/fairness.ts), as the
 * gate an attempt passes right before its request. Every slot it frees goes
 * to the longest-parked delivery of the endpoint, which is promoted at once.
 */
class EndpointGate implements SendGate {
  /** 'open': the job may hold a slot (kept for it at admission, or taken by enter) or a place among the parked. */
  private state: 'open' | 'parking' | 'left' = 'open';

  constructor(
    private readonly services: WebhooksServices,
    private readonly tenantId: string,
    private readonly claim: SlotClaim,
    private readonly logger: Logger,
    /** Handed the slot by this process a moment ago: it holds it for longer than an attempt lasts. */
    private readonly handedOver: boolean,
  ) {}

  async enter(): Promise<boolean> {
    if (this.handedOver) return true;
    const { held, woken } = await this.services.endpointSlots.acquire(this.claim);
    await this.wake(woken);
    return held;
  }

  /** The job waits parked for a slot: leave must not take its place among the parked away. */
  park(): void {
    this.state = 'parking';
  }

  async leave(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'left';
    try {
      await this.wake(await this.services.endpointSlots.release(this.claim));
    } catch (error) {
      // The slot's lease frees it; the sweeper then wakes the next delivery.
      this.logger.warn({ err: error, endpoint_id: this.claim.endpointId }, 'could not release an endpoint slot');
    }
  }

  private async wake(woken: Woken[]): Promise<void> {
    if (woken.length === 0) return;
    handOffs(this.services).give(this.services, this.tenantId, woken);
    await promoteDeliveries(
      this.services.queues.queue(webhooksQueue.name),
      woken.map((entry) => entry.jobId),
    );
  }
}

/**
 * Parks a job whose endpoint is full: delayed by the backstop, to be promoted
 * when a slot is handed to it. A slot handed over while the job was still
 * active could not promote it, so it looks once it is delayed.
 */
async function park(services: WebhooksServices, job: Job, token: string, claim: SlotClaim): Promise<never> {
  const { endpointSlots } = services;
  await job.moveToDelayed(Date.now() + endpointSlots.timings.parkBackstopMs, token);
  const granted = await endpointSlots.granted([claim]);
  if (granted.length > 0) await promoteDeliveries(services.queues.queue(webhooksQueue.name), [claim.jobId]);
  throw new DelayedError();
}

/** What the webhooks processor uses of the platform. */
export type WebhooksServices = Pick<Platform, 'config' | 'db' | 'deliveryDeps' | 'endpointSlots' | 'logger' | 'metrics' | 'queues' | 'suspension'>;

export const webhooksProcessor = defineProcessor<typeof webhooksQueue, WebhooksServices>({
  definition: webhooksQueue,
  // Its batched read of the delivery says whether the tenant is suspended: no lookup of its own per job.
  checksSuspension: true,
  async process(payload, { services, job, token, logger }) {
    const { config, metrics } = services;
    // A slow receiver holds at most WEBHOOK_ENDPOINT_CONCURRENCY requests in flight; the rest wait parked, without spending an attempt.
    const claim = { endpointId: payload.endpointId, jobId: String(job.id), deliveryId: payload.deliveryId };
    const handOff = handOffs(services).take(claim.jobId);
    const gate = new EndpointGate(services, payload.tenantId, claim, logger, handOff !== undefined);
    try {
      const final = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      const verdict = await attemptDelivery(services.deliveryDeps(), payload.tenantId, payload.deliveryId, final, gate, handOff?.read);
      if (verdict.kind === 'busy') {
        if (!token) throw new Error('a delivery cannot wait for a slot without its lock token');
        gate.park();
        return await park(services, job, token, claim);
      }
      if (verdict.kind === 'suspended') {
        if (!token) throw new Error('a delivery of a suspended tenant cannot wait without its lock token');
        // Its slot, if it was given one, goes to the next delivery first.
        await gate.leave();
        return await holdWhileSuspended(services, webhooksQueue.name, job, token, payload.tenantId);
      }
      if (verdict.kind === 'skipped') return { outcome: 'skipped', reason: verdict.reason };
      metrics.webhookAttempts.inc({ outcome: verdict.kind });
      metrics.webhookAttemptDuration.observe({ outcome: verdict.kind }, verdict.result.durationMs / 1000);
      if (verdict.endpointDisabled) metrics.webhookEndpointsDisabled.inc();
      const summary = `${verdict.result.error ?? 'failed'}`;
      switch (verdict.kind) {
        case 'delivered':
          return { outcome: 'delivered', status_code: verdict.result.statusCode, duration_ms: verdict.result.durationMs };
        case 'gone':
          throw new UnrecoverableError(`${summary}: the endpoint is disabled`);
        case 'given_up':
          throw new UnrecoverableError(`${summary}: no attempts left`);
        case 'retry': {
          const delayMs = nextAttemptDelayMs(
            config.WEBHOOK_RETRY_SCHEDULE,
            job.attemptsMade + 1,
            verdict.result.retryAfterMs,
            config.WEBHOOK_RETRY_AFTER_MAX_SECONDS * 1000,
          );
          await scheduleNextAttempt(services.db.knex, payload.tenantId, payload.deliveryId, new Date(Date.now() + delayMs));
          throw new RetryLater(summary, delayMs);
        }
      }
    } finally {
      // A delivery skipped before its request may still hold the slot it was admitted with, or a place among
      // the parked: both are given up (a no-op once the attempt has left the gate).
      await gate.leave();
    }
  },
  async onFinalFailure(payload, error, { services }) {
    await failDelivery(services.db.knex, payload.tenantId, payload.deliveryId, error.message);
  },
  workerSettings: () => ({
    // The delay was worked out by the attempt that failed (schedule, jitter, Retry-After).
    backoffStrategy: (_attemptsMade: number, type?: string, error?: Error) =>
      type === WEBHOOK_BACKOFF && error instanceof RetryLater ? error.delayMs : 1_000,
  }),
  background: (services) => sweepEndpointSlots(services),
});

/**
 * Every SWEEP_INTERVAL_MS, hands on the slots whose leases ran out at
 * endpoints with parked deliveries, and promotes the deliveries given them
 * and those whose slot lapsed unused: a wake-up lost with a killed worker
 * delays a delivery by at most a lease and an interval, not by the park
 * backstop. Returns the stop function.
 */
function sweepEndpointSlots(services: WebhooksServices): () => Promise<void> {
  let running: Promise<void> = Promise.resolve();
  const timer = setInterval(() => {
    running = (async () => {
      const woken = await services.endpointSlots.sweep();
      await promoteDeliveries(
        services.queues.queue(webhooksQueue.name),
        woken.flatMap((entry) => [...entry.woken.map((each) => each.jobId), ...entry.lapsed]),
      );
    })().catch((error) => services.logger.warn({ err: error }, 'could not sweep the endpoint slots'));
  }, SWEEP_INTERVAL_MS);
  timer.unref();
  return async () => {
    clearInterval(timer);
    await running;
  };
}
