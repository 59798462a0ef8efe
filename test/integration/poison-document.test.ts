import { QueueEvents, type ConnectionOptions } from 'bullmq';
import { indexingQueue, queuePrefix } from '../../queues';
import { DOCUMENT_LIMITS } from '../../src/domain/documents/documents';
import { redisOptions } from '../../src/redis';
import { startStack, type TestStack } from '../helpers/harness';
import { killLeftoverProcesses, startRagworks } from '../helpers/processes';
import { waitFor } from '../helpers/wait';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver';

/**
 * A crafted document sent to a worker process with ordinary ones: its
 * chunking runs in a worker thread, is stopped at INDEX_DOCUMENT_TIMEOUT_MS
 * and fails it for good, while the event loop keeps renewing the locks of
 * the other jobs, which finish without stalling.
 */

jest.setTimeout(180_000);

/** Markdown of a few hundred words, different per document: a few milliseconds of work. */
function ordinaryDocument(n: number): { title: string; content: string } {
  const paragraph = (section: number) => Array.from({ length: 110 }, (_, word) => `word${(n * 7 + section * 13 + word) % 97} heron${section}`).join(' ');
  const sections = [1, 2, 3].map((section) => `## Part ${section}\n\n${paragraph(section)}`);
  return { title: `Ordinary ${n}`, content: `# Notes ${n}\n\n${sections.join('\n\n')}` };
}

/**
 * As large as a document may be, made of the smallest sections markdown
 * has: hundreds of thousands of headings, each one work for the chunker.
 * Far more than a 200 ms deadline (seconds on the event loop).
 */
function poisonDocument(): { title: string; content: string } {
  const unit = '# h\n\nword word word\n\n';
  return { title: 'Poison', content: unit.repeat(Math.floor((DOCUMENT_LIMITS.contentBytes - 1024) / unit.length)) };
}

describe('a poison document among ordinary ones, in a worker process', () => {
  let stack: TestStack;
  let receiver: WebhookReceiver;
  let queueEvents: QueueEvents;
  const stalled: string[] = [];

  beforeAll(async () => {
    receiver = await startWebhookReceiver();
    // No workers here: the child process does all the work.
    stack = await startStack({ database: 'postgres', workers: false, env: { WEBHOOK_ALLOW_PRIVATE: 'true' } });
    queueEvents = new QueueEvents(indexingQueue.name, { connection: redisOptions(stack.config, 'worker') as ConnectionOptions, prefix: queuePrefix(stack.config.QUEUE_PREFIX, indexingQueue.name) });
    queueEvents.on('stalled', ({ jobId }) => stalled.push(jobId));
    await queueEvents.waitUntilReady();
  });
  afterAll(async () => {
    await killLeftoverProcesses();
    await queueEvents?.close();
    await stack?.close();
    await receiver?.close();
  });

  it('fails the poison one with document_too_complex and indexes the 20 others, none of them stalled', async () => {
    const tenant = await stack.createTenant();
    const endpoint = await stack.as(tenant.key, 'post', '/api/admin/webhooks').send({ url: receiver.url('/hook'), event_types: ['document.failed'] }).expect(201);
    receiver.secrets = [endpoint.body.secret];
    const worker = startRagworks('worker', {
      ...stack.env,
      LOG_LEVEL: 'info',
      WORKER_QUEUES: 'indexing,webhook-fanout,webhooks',
      WEBHOOK_ALLOW_PRIVATE: 'true',
      INDEX_THREADS: '2',
      INDEX_DOCUMENT_TIMEOUT_MS: '200',
      // Locks that expire after 1.5 s without renewal, looked for every second: a blocked event loop would show at once.
      WORKER_LOCK_DURATION_MS: '1500',
      WORKER_STALLED_INTERVAL_MS: '1000',
    });
    await worker.waitForMessage('workers started');

    const documents = [poisonDocument(), ...Array.from({ length: 20 }, (_, n) => ordinaryDocument(n))];
    const batch = await stack.as(tenant.key, 'post', '/api/documents/batch').send({ documents }).expect(202);
    const [poison, ...ordinary] = batch.body.items.map((item: { id: string }) => item.id) as string[];

    const indexJob = await waitFor(
      async () => {
        const response = await stack.as(tenant.key, 'get', `/api/index/jobs/${batch.body.job_id}`).expect(200);
        return response.body.status === 'completed' || response.body.status === 'failed' ? response.body : null;
      },
      { timeoutMs: 120_000, what: 'the index job to finish' },
    );
    expect(indexJob).toMatchObject({ status: 'failed', documents_total: 21, documents_completed: 20, documents_failed: 1 });

    const rows = await stack.sql((db) => db('documents').whereIn('id', ordinary).select('status', 'error_code', 'chunk_count'));
    expect(rows.map((row) => [row.status, row.error_code])).toEqual(ordinary.map(() => ['indexed', null]));
    for (const row of rows) expect(row.chunk_count).toBeGreaterThan(0);

    const failed = (await stack.as(tenant.key, 'get', `/api/documents/${poison}`).expect(200)).body;
    expect(failed).toMatchObject({ status: 'failed', error_code: 'document_too_complex', chunk_count: 0 });
    expect(failed.error).toMatch(/^document_too_complex: .*200 ms/);

    // Failed at its first attempt, for good, and dead-lettered saying why.
    const jobId = indexingQueue.jobId({ tenantId: tenant.id, indexJobId: batch.body.job_id, documentId: poison, version: 1 });
    const poisonJob = await stack.platform.queues.queue(indexingQueue.name).getJob(jobId);
    expect(await poisonJob!.getState()).toBe('failed');
    expect(poisonJob!.attemptsMade).toBe(1);
    expect(poisonJob!.failedReason).toMatch(/^document_too_complex/);
    const deadLetter = await waitFor(() => stack.sql((db) => db('dead_letters').first('*').where({ queue: 'indexing', job_id: jobId })));
    expect(deadLetter).toMatchObject({ error_class: 'DocumentTooComplexError', attempts: 1 });

    // The tenant hears of it, with the code.
    const [delivery] = await receiver.waitForRequests(1, { timeoutMs: 30_000 });
    expect(delivery.verified).toBe(true);
    expect(delivery.json).toMatchObject({ type: 'document.failed', data: { id: poison, status: 'failed', error_code: 'document_too_complex' } });

    // No job lost its lock: BullMQ reported none stalled, and every job ran once.
    const jobs = await stack.platform.queues.queue(indexingQueue.name).getJobs(['completed', 'failed']);
    expect(jobs).toHaveLength(21);
    expect(jobs.filter((job) => job.stalledCounter > 0).map((job) => job.id)).toEqual([]);
    expect(jobs.filter((job) => job.id !== jobId).map((job) => job.attemptsMade)).toEqual(ordinary.map(() => 1));
    expect(stalled).toEqual([]);
    expect(worker.messages('job attempt failed').map((line) => line.job_id)).toEqual([jobId]);

    // The pool's threads close with the process.
    expect(await worker.stop('SIGTERM')).toEqual({ code: 0, signal: null });
  });
});
