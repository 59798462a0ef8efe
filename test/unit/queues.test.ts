import { indexingQueue, QUEUE_DEFINITIONS, reconcileQueue, WEBHOOK_BACKOFF, webhooksQueue } from '../../queues';
import { redact } from '../../queues/admin';
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
      // Webhook retries follow WEBHOOK_RETRY_SCHEDULE; every other queue backs off exponentially.
      expect(definition.jobOptions.backoff).toMatchObject({ type: definition === webhooksQueue ? WEBHOOK_BACKOFF : 'exponential' });
      expect(definition.jobOptions.removeOnComplete).toMatchObject({ age: expect.any(Number), count: expect.any(Number) });
      expect(definition.jobOptions.removeOnFail).toMatchObject({ age: expect.any(Number), count: expect.any(Number) });
    }
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

describe('job data shown to operators', () => {
  it('hides secrets at any depth', () => {
    expect(redact({ tenantId: 't', apiKey: 'k', nested: { secret: 's', list: [{ token: 'x', keep: 1 }] } })).toEqual({
      tenantId: 't',
      apiKey: '[redacted]',
      nested: { secret: '[redacted]', list: [{ token: '[redacted]', keep: 1 }] },
    });
  });
});
