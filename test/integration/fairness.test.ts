import { randomUUID } from 'node:crypto';
import type { Job } from 'bullmq';
import { indexingQueue } from '../../queues';
import { FAST_LANE, REBASE_ABOVE, TenantFairness } from '../../queues/fairness';
import type { IndexingWork } from '../../src/domain/indexing/dispatch';
import { WorkerRuntime } from '../../workers/runtime';
import { startStack, type TestStack } from '../helpers/harness';

/** Tenants take turns on the indexing queue: one tenant's backlog never makes another's work wait for all of it. */

const work = (tenantId: string): IndexingWork => ({ tenantId, indexJobId: randomUUID(), documentId: randomUUID(), version: 1 });

describe('turns between tenants on the indexing queue (no workers)', () => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', workers: false });
  });
  afterAll(async () => {
    await stack?.close();
  });
  afterEach(async () => {
    await stack.platform.queues.queue(indexingQueue.name).obliterate({ force: true });
    const fairness = new TenantFairness(stack.platform.redis, stack.config.QUEUE_PREFIX, indexingQueue.name);
    await stack.platform.redis.del(fairness.tenantsKey, fairness.lanesKey);
  });

  const queue = () => stack.platform.queues.queue(indexingQueue.name);
  const enqueue = (works: IndexingWork[]) => stack.platform.queues.enqueueMany(indexingQueue, works);
  /** The order BullMQ will start the queue's jobs in: the wait list (FIFO), then by priority. */
  const startOrder = async (): Promise<Job[]> => [...(await queue().getJobs(['waiting'], 0, -1, true)), ...(await queue().getJobs(['prioritized'], 0, -1, true))];
  const tenantsOf = (jobs: Job[], names: Map<string, string>) => jobs.map((job) => names.get(job.data.tenantId));

  it('puts the first jobs of a tenant without a backlog on the wait list and gives the rest turns, in order', async () => {
    const a = randomUUID();
    const works = Array.from({ length: 10 }, () => work(a));
    await enqueue(works);
    const order = await startOrder();
    expect(order.map((job) => job.data.documentId)).toEqual(works.map((item) => item.documentId));
    expect(await queue().getJobCounts('waiting', 'prioritized')).toEqual({ waiting: FAST_LANE, prioritized: 10 - FAST_LANE });
    const priorities = order.slice(FAST_LANE).map((job) => job.priority);
    expect(priorities).toEqual(priorities.map((_, index) => priorities[0] + index));
  });

  it("starts a newcomer's job behind the wait list, not behind another tenant's backlog", async () => {
    const [a, b] = [randomUUID(), randomUUID()];
    await enqueue(Array.from({ length: 50 }, () => work(a)));
    const [newcomer] = await enqueue([work(b)]);
    expect(await (await queue().getJob(newcomer))?.getState()).toBe('waiting');
    expect(tenantsOf(await startOrder(), new Map([[a, 'a'], [b, 'b']])).slice(0, FAST_LANE + 2)).toEqual([...Array(FAST_LANE).fill('a'), 'b', 'a']);
  });

  it('serves backlogs in turn, one job each, and a later batch of a tenant after its earlier one', async () => {
    const [a, c] = [randomUUID(), randomUUID()];
    const names = new Map([[a, 'a'], [c, 'c']]);
    const first = Array.from({ length: 8 }, () => work(a));
    await enqueue(first);
    await enqueue(Array.from({ length: 8 }, () => work(c)));
    const second = Array.from({ length: 3 }, () => work(a));
    await enqueue(second);
    const order = await startOrder();
    const turns = FAST_LANE * 2;
    expect(tenantsOf(order, names).slice(turns, turns + 8)).toEqual(['a', 'c', 'a', 'c', 'a', 'c', 'a', 'c']);
    // A tenant's own jobs keep the order it sent them in.
    const ofA = order.filter((job) => job.data.tenantId === a).map((job) => job.data.documentId);
    expect(ofA).toEqual([...first, ...second].map((item) => item.documentId));
  });

  it('keeps duplicates out: the same work enqueued again is the same job', async () => {
    const a = randomUUID();
    const once = work(a);
    const [id] = await enqueue([once]);
    expect(await enqueue([once])).toEqual([id]);
    expect(await stack.platform.queues.enqueue(indexingQueue, once)).toBe(id);
    expect(await queue().getJobCounts('waiting', 'prioritized')).toEqual({ waiting: 1, prioritized: 0 });
  });

  it('shifts every priority down before the limit, keeping the turns and the place of a job waiting to come back', async () => {
    const [a, c] = [randomUUID(), randomUUID()];
    const names = new Map([[a, 'a'], [c, 'c']]);
    const fairness = new TenantFairness(stack.platform.redis, stack.config.QUEUE_PREFIX, indexingQueue.name);
    // A queue that has served about a million jobs by turns since it last ran dry.
    await stack.platform.redis.hset(fairness.tenantsKey, '', REBASE_ABOVE - 10);
    await enqueue(Array.from({ length: FAST_LANE + 6 }, () => work(a)));
    const beforeShift = (await queue().getJobs(['prioritized'], 0, 0, true))[0].priority;
    expect(beforeShift).toBe(REBASE_ABOVE - 9);
    // A job of A's, retrying after a failure, that will come back with the priority it had.
    const retrying = await queue().add(indexingQueue.name, work(a), { jobId: 'retrying', priority: beforeShift + 1, delay: 60_000 });

    // Twelve turns for C would take it past REBASE_ABOVE.
    await enqueue(Array.from({ length: FAST_LANE + 12 }, () => work(c)));
    const turns = (await startOrder()).slice(FAST_LANE * 2);
    expect(tenantsOf(turns, names)).toEqual([...Array.from({ length: 6 }, () => ['a', 'c']).flat(), ...Array(6).fill('c')]);
    expect(turns.map((job) => job.priority)).toEqual([1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 8, 9, 10, 11, 12]);
    expect((await queue().getJob(retrying.id!))?.priority).toBe(2);
  });
});

describe("a tenant's single document while another tenant's large batch drains (postgres)", () => {
  let stack: TestStack;
  let workers: WorkerRuntime | undefined;
  beforeAll(async () => {
    // One job at a time, so the order jobs run in is the order they finish in.
    stack = await startStack({ database: 'postgres', workers: false, env: { WORKER_CONCURRENCY: '1' } });
  });
  afterAll(async () => {
    await workers?.drain(5_000);
    await stack?.close();
  });

  it("is indexed after at most the other tenant's first few documents, not after its whole batch", async () => {
    const a = await stack.createTenant();
    const b = await stack.createTenant();
    const documents = Array.from({ length: 40 }, (_, index) => ({ title: `Batch ${index}`, content: `Document ${index} of a large batch about tides.` }));
    await stack.as(a.key, 'post', '/api/documents/batch').send({ documents }).expect(202);
    const single = await stack.as(b.key, 'post', '/api/documents').send({ title: 'Single', content: 'One document about ferries.' }).expect(202);

    workers = new WorkerRuntime(stack.platform, [indexingQueue.name]);
    workers.start();
    const indexed = await stack.waitForDocument(b.key, single.body.id);
    // Counted from the database, not the clock: what of A's had been indexed when B's document was.
    const before = await stack.sql((db) =>
      db('documents').where({ tenant_id: a.id, status: 'indexed' }).where('indexed_at', '<', indexed.indexed_at as string).count<{ n: number }[]>('* as n'),
    );
    expect(Number(before[0].n)).toBeLessThanOrEqual(FAST_LANE);
  });
});
