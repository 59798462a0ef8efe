import { startStack, type TestStack } from '../helpers/harness';

describe.each(['postgres', 'pglite'] as const)('a document goes in and is found (%s)', (database) => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await startStack({ database });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('indexes a posted document and finds it by keyword', async () => {
    const tenant = await stack.createTenant();
    const created = await stack
      .as(tenant.key, 'post', '/api/documents')
      .send({ title: 'Lighthouse keeping', content: '# Lamps\n\nThe keeper trims the wick of the lamp every evening before dusk.' })
      .expect(202);
    expect(created.body).toMatchObject({ status: 'queued', version: 1 });
    const indexed = await stack.waitForDocument(tenant.key, created.body.id);
    expect(indexed.chunk_count).toBeGreaterThan(0);
    const found = await stack.as(tenant.key, 'post', '/api/search').send({ query: 'wick', mode: 'keyword' }).expect(200);
    expect(found.body.results.map((result: { document_id: string }) => result.document_id)).toEqual([created.body.id]);
    expect(found.body.results[0].snippet).toContain('<mark>wick</mark>');
  });
});
