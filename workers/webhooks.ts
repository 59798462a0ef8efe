import { DelayedError, UnrecoverableError } from 'bullmq';
import { WEBHOOK_BACKOFF, webhooksQueue } from '../queues';
import { attemptDelivery, failDelivery, reopenDelivery, scheduleNextAttempt } from '../src/domain/webhooks/deliveries';
import { nextAttemptDelayMs } from '../src/domain/webhooks/retry';
import { defineProcessor } from './processor';

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

/** How long a delivery waits for a slot at a busy endpoint before it looks again. */
const SLOT_WAIT_MS = { min: 200, spread: 800 };

export const webhooksProcessor = defineProcessor({
  definition: webhooksQueue,
  async process(payload, { platform, job, token }) {
    const { config, metrics } = platform;
    const slot = `${job.id}:${token ?? 'none'}`;
    // A slow receiver holds at most WEBHOOK_ENDPOINT_CONCURRENCY workers; the rest wait without spending an attempt.
    if (!(await platform.endpointSlots.acquire(payload.endpointId, slot, config.WEBHOOK_TIMEOUT_MS + 5_000))) {
      await job.moveToDelayed(Date.now() + SLOT_WAIT_MS.min + Math.random() * SLOT_WAIT_MS.spread, token);
      throw new DelayedError();
    }
    try {
      const final = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      const verdict = await attemptDelivery(platform.deliveryDeps(), payload.tenantId, payload.deliveryId, final);
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
          await scheduleNextAttempt(platform.db.knex, payload.tenantId, payload.deliveryId, new Date(Date.now() + delayMs));
          throw new RetryLater(summary, delayMs);
        }
      }
    } finally {
      await platform.endpointSlots.release(payload.endpointId, slot).catch(() => undefined);
    }
  },
  async onFinalFailure(payload, error, { platform }) {
    await failDelivery(platform.db.knex, payload.tenantId, payload.deliveryId, error.message);
  },
  beforeRedrive: (payload, platform) => reopenDelivery(platform.db.knex, payload.tenantId, payload.deliveryId),
  workerSettings: () => ({
    // The delay was worked out by the attempt that failed (schedule, jitter, Retry-After).
    backoffStrategy: (_attemptsMade: number, type?: string, error?: Error) =>
      type === WEBHOOK_BACKOFF && error instanceof RetryLater ? error.delayMs : 1_000,
  }),
});
