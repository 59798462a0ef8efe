import { concurrencyOf, indexingQueue, QUEUE_DEFINITIONS, reconcileQueue, WEBHOOK_BACKOFF, webhooksQueue } from '../../queues';
import { loadConfig } from '../../src/config';
import { INDEXING_ATTEMPTS_FOR_OTHER_ERRORS, INDEXING_BACKOFF, indexingRetryDelayMs } from '../../queues/indexing';
import { redact } from '../../src/secrets';
import { tickOf } from '../../workers/scheduler';

const work = {
  tenantId: '01a217a4-d918-76c9-9a98-25f27ceae931',
  indexJobId: '01a217a4-d9a7-703a-ba2a-1acf003e2306',
  documentId: '01a217a4-d9a7-703a-ba2a-1d766b38c182',
  version: 2,
};

describe('queue definitions', () => {
  it('give every queue retries with backoff and bounded retention', () => {
    for (const definition of QUEUE_DEFINITIONS) {
      expect(definition.jobOptions.attempts).toBeGreaterThan(1);
      // Webhook retries follow WEBHOOK_RETRY_SCHEDULE, indexing its own capped schedule; every other queue backs off exponentially.
      const backoff = definition === webhooksQueue ? WEBHOOK_BACKOFF : definition === indexingQueue ? INDEXING_BACKOFF : 'exponential';
      expect(definition.jobOptions.backoff).toMatchObject({ type: backoff });
      expect(definition.jobOptions.removeOnComplete).toMatchObject({ age: expect.any(Number), count: expect.any(Number) });
      expect(definition.jobOptions.removeOnFail).toMatchObject({ age: expect.any(Number), count: expect.any(Number) });
    }
  });

  it('run indexing 16 at a time per process and the others 4, unless the settings say otherwise', () => {
    const unset = loadConfig({});
    expect(concurrencyOf(indexingQueue, unset)).toBe(16);
    expect(concurrencyOf(webhooksQueue, unset)).toBe(4);
    expect(concurrencyOf(reconcileQueue, unset)).toBe(4);
    // WORKER_CONCURRENCY is everyone's, the indexing queue's too; a queue's own setting wins over it.
    const everyone = loadConfig({ WORKER_CONCURRENCY: '2', WORKER_CONCURRENCY_PER_QUEUE: 'reconcile=1' });
    expect(concurrencyOf(indexingQueue, everyone)).toBe(2);
    expect(concurrencyOf(webhooksQueue, everyone)).toBe(2);
    expect(concurrencyOf(reconcileQueue, everyone)).toBe(1);
    expect(concurrencyOf(indexingQueue, loadConfig({ WORKER_CONCURRENCY_PER_QUEUE: 'indexing=32' }))).toBe(32);
  });

  it('derive indexing job ids from the document, its version and the index job', () => {
    expect(indexingQueue.jobId(work)).toBe(`doc-${work.documentId}-v2-${work.indexJobId}`);
    expect(indexingQueue.jobId({ ...work, version: 3 })).not.toBe(indexingQueue.jobId(work));
    // BullMQ refuses custom ids containing ":".
    expect(indexingQueue.jobId(work)).not.toContain(':');
  });

  it('refuse payloads that do not match the schema', () => {
    expect(indexingQueue.payload.safeParse({ ...work, version: 0 }).success).toBe(false);
    expect(indexingQueue.payload.safeParse({ ...work, tenantId: 'acme' }).success).toBe(false);
    expect(reconcileQueue.payload.safeParse({ tick: 'yesterday' }).success).toBe(false);
  });

  it('give two scheduler replicas the same reconcile job id for one tick', () => {
    const fired = new Date('2026-11-26T12:00:30.004Z');
    const firedLater = new Date('2026-11-26T12:00:30.913Z');
    expect(tickOf(fired)).toBe('2026-11-26T12:00:30.000Z');
    expect(reconcileQueue.jobId({ tick: tickOf(fired) })).toBe('reconcile-2026-11-26T120030.000Z');
    expect(reconcileQueue.jobId({ tick: tickOf(fired) })).toBe(reconcileQueue.jobId({ tick: tickOf(firedLater) }));
    expect(reconcileQueue.jobId({ tick: tickOf(fired) })).not.toContain(':');
  });
});

describe('indexing retry schedule', () => {
  const BASE_MS = 2_000; // INDEX_RETRY_BASE_MS's default
  /** The waits between the attempts of one job (BullMQ asks after each failed attempt but the last). */
  const waits = (attempts: number, random: () => number) => Array.from({ length: attempts - 1 }, (_, index) => indexingRetryDelayMs(index + 1, BASE_MS, random));
  const sum = (values: number[]) => values.reduce((total, value) => total + value, 0);

  it('keeps a job retrying through an embeddings provider outage of an hour, even with every jitter at its lowest', () => {
    const attempts = indexingQueue.jobOptions.attempts!;
    expect(sum(waits(attempts, () => 0))).toBeGreaterThanOrEqual(3_600_000);
    // And not for days: the longest it can take is bounded too.
    expect(sum(waits(attempts, () => 1))).toBeLessThan(2 * 3_600_000);
  });

  it('doubles from the base up to a cap of 10 minutes, with ±20% jitter', () => {
    const nominal = waits(16, () => 0.5);
    expect(nominal.slice(0, 5)).toEqual([2_000, 4_000, 8_000, 16_000, 32_000]);
    expect(Math.max(...nominal)).toBe(600_000);
    for (let attempt = 1; attempt <= 15; attempt++) {
      const middle = indexingRetryDelayMs(attempt, BASE_MS, () => 0.5);
      expect(indexingRetryDelayMs(attempt, BASE_MS, () => 0)).toBe(Math.round(middle * 0.8));
      expect(indexingRetryDelayMs(attempt, BASE_MS, () => 1)).toBe(Math.round(middle * 1.2));
      for (let draw = 0; draw < 20; draw++) {
        const delay = indexingRetryDelayMs(attempt, BASE_MS);
        expect(delay).toBeGreaterThanOrEqual(Math.round(middle * 0.8));
        expect(delay).toBeLessThanOrEqual(Math.round(middle * 1.2));
      }
    }
    // Two documents failing together come back at different times.
    expect(new Set(Array.from({ length: 20 }, () => indexingRetryDelayMs(3, BASE_MS))).size).toBeGreaterThan(1);
  });

  it('gives failures other than a provider outage the first attempts only, about half a minute', () => {
    expect(INDEXING_ATTEMPTS_FOR_OTHER_ERRORS).toBe(5);
    const short = waits(INDEXING_ATTEMPTS_FOR_OTHER_ERRORS, () => 0.5);
    expect(sum(short)).toBe(30_000);
  });

  it('scales with the base, so tests and impatient deployments can shorten it', () => {
    expect(indexingRetryDelayMs(1, 10, () => 0.5)).toBe(10);
    expect(indexingRetryDelayMs(15, 10, () => 0.5)).toBe(3_000);
  });
});

describe('job data shown to operators', () => {
  it('hides secrets at any depth', () => {
    expect(redact({ tenantId: 't', apiKey: 'k', nested: { secret: 's', list: [{ token: 'x', keep: 1 }] } })).toEqual({
      tenantId: 't',
      apiKey: '[redacted]',
      nested: { secret: '[redacted]', list: [{ token: '[redacted]', keep: 1 }] },
    });
  });
});
