import { analyticsQueue } from '../../queues';
import { startStack, type TestStack } from '../helpers/harness';
import { waitFor } from '../helpers/wait';

describe('search analytics', () => {
  let stack: TestStack;
  let tenant: { id: string; slug: string; key: string };

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres' });
    tenant = await stack.createTenant();
  });
  afterAll(async () => {
    await stack?.close();
  });

  const aggregate = async () => {
    const jobId = await stack.platform.queues.enqueue(analyticsQueue, { tick: new Date(Date.now() + Math.random() * 1e6).toISOString() });
    const queue = stack.platform.queues.queue(analyticsQueue.name);
    return waitFor(async () => {
      const job = await queue.getJob(jobId);
      return (await job?.getState()) === 'completed' ? job!.returnvalue : null;
    }, { what: 'the aggregation job' });
  };

  it('moves searches from the stream into popular queries, counting a re-run batch once', async () => {
    const document = await stack.as(tenant.key, 'post', '/api/documents').send({ title: 'Owls', content: 'Barn owls hunt at night over open fields.' }).expect(202);
    await stack.waitForDocument(tenant.key, document.body.id);
    for (let i = 0; i < 3; i += 1) await stack.as(tenant.key, 'post', '/api/search').send({ query: 'barn owls', mode: 'keyword', user_id: 'u1' }).expect(200);
    await stack.as(tenant.key, 'post', '/api/search').send({ query: 'penguins', mode: 'keyword' }).expect(200);
    const report = await aggregate();
    expect(report.inserted).toBe(4);
    const popular = await stack.as(tenant.key, 'get', '/api/admin/analytics/popular?days=1').expect(200);
    expect(popular.body.items).toEqual([
      { query: 'barn owls', searches: 3, no_result_searches: 0 },
      { query: 'penguins', searches: 1, no_result_searches: 1 },
    ]);
    const again = await aggregate();
    expect(again.inserted).toBe(0);
  });
});
