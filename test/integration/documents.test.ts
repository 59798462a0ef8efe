import type { Response } from 'supertest';
import { startStack, type TestStack } from '../helpers/harness';

/** The Documents API on the machine's PostgreSQL, through the real app and real workers. */

type Tenant = { id: string; slug: string; key: string };

interface DocumentBody {
  id: string;
  title: string;
  content?: string;
  content_type: string;
  tags: string[];
  metadata: Record<string, unknown>;
  status: string;
  version: number;
  chunk_count: number;
  job_id: string | null;
  indexed_at: string | null;
  error: string | null;
}

/** Body limit of the quiet stack: small, yet a batch of 1000 short documents fits. */
const QUIET_MAX_BODY_BYTES = 256 * 1024;

let stack: TestStack;
/**
 * Without workers and with a small body limit. Large batches go here, where
 * nothing indexes them, so they do not hold up the documents other tests
 * wait for.
 */
let quiet: TestStack;

beforeAll(async () => {
  stack = await startStack({ database: 'postgres' });
  quiet = await startStack({ database: 'postgres', workers: false, env: { MAX_BODY_BYTES: String(QUIET_MAX_BODY_BYTES) } });
});

afterAll(async () => {
  await stack?.close();
  await quiet?.close();
});

const post = (tenant: Tenant, body: unknown) => stack.as(tenant.key, 'post', '/api/documents').send(body as object);

async function createDocument(tenant: Tenant, body: Record<string, unknown>): Promise<DocumentBody> {
  const response = await post(tenant, body).expect(202);
  return response.body as DocumentBody;
}

async function listAll(tenant: Tenant, query = ''): Promise<DocumentBody[]> {
  const response = await stack.as(tenant.key, 'get', `/api/documents${query}`).expect(200);
  return response.body.items as DocumentBody[];
}

async function keywordHits(tenant: Tenant, query: string): Promise<string[]> {
  const response = await stack.as(tenant.key, 'post', '/api/search').send({ query, mode: 'keyword' }).expect(200);
  return (response.body.results as Array<{ document_id: string }>).map((result) => result.document_id);
}

/** Every error is the JSON envelope with a snake_case code and a message. */
function expectError(response: Response, status: number, code: string): void {
  expect(response.status).toBe(status);
  expect(response.headers['content-type']).toMatch(/application\/json/);
  expect(response.body.error).toMatchObject({ code, message: expect.any(String) });
}

async function expectNothingStored(tenant: Tenant): Promise<void> {
  expect(await listAll(tenant)).toEqual([]);
  const jobs = await stack.as(tenant.key, 'get', '/api/index/jobs').expect(200);
  expect(jobs.body.items).toEqual([]);
}

describe('POST /api/documents', () => {
  it('accepts a document with defaults and indexes it', async () => {
    const tenant = await stack.createTenant();
    const response = await post(tenant, { title: 'Tide tables', content: '# Tides\n\nHigh water at the harbour mouth comes twice a day.' }).expect(202);
    expect(response.body).toMatchObject({
      id: expect.any(String),
      status: 'queued',
      version: 1,
      job_id: expect.any(String),
      content_type: 'markdown',
      tags: [],
      metadata: {},
    });
    expect(response.headers.location).toBe(`/api/documents/${response.body.id}`);

    const indexed = await stack.waitForDocument(tenant.key, response.body.id);
    expect(indexed).toMatchObject({ status: 'indexed', version: 1, error: null, indexed_at: expect.any(String) });
    expect(indexed.chunk_count).toBeGreaterThan(0);
  });
});

describe('POST /api/documents/batch', () => {
  it('accepts 1000 documents as one index job', async () => {
    const tenant = await quiet.createTenant();
    const documents = Array.from({ length: 1000 }, (_, index) => ({ title: `Note ${index}`, content: `short note number ${index}` }));
    const response = await quiet.as(tenant.key, 'post', '/api/documents/batch').send({ documents }).expect(202);
    expect(response.body.items).toHaveLength(1000);
    expect(response.body.job_id).toEqual(expect.any(String));
    expect(new Set(response.body.items.map((item: DocumentBody) => item.id)).size).toBe(1000);
    for (const item of response.body.items as DocumentBody[]) {
      expect(item).toMatchObject({ status: 'queued', version: 1, job_id: response.body.job_id });
    }
    const job = await quiet.as(tenant.key, 'get', `/api/index/jobs/${response.body.job_id}`).expect(200);
    expect(job.body).toMatchObject({ status: 'queued', documents_total: 1000 });
    const stats = await quiet.as(tenant.key, 'get', '/api/stats').expect(200);
    expect(stats.body.documents).toMatchObject({ total: 1000, queued: 1000 });
  });

  it('accepts a batch of one', async () => {
    const tenant = await stack.createTenant();
    const response = await stack.as(tenant.key, 'post', '/api/documents/batch').send({ documents: [{ title: 'One', content: 'only one' }] }).expect(202);
    expect(response.body.items).toHaveLength(1);
    expect(response.body.items[0].job_id).toBe(response.body.job_id);
  });

  it('refuses an empty batch and one over 1000', async () => {
    const tenant = await quiet.createTenant();
    expectError(await quiet.as(tenant.key, 'post', '/api/documents/batch').send({ documents: [] }), 400, 'validation_failed');
    const documents = Array.from({ length: 1001 }, (_, index) => ({ title: `Note ${index}`, content: 'x' }));
    expectError(await quiet.as(tenant.key, 'post', '/api/documents/batch').send({ documents }), 400, 'validation_failed');
    expect((await quiet.as(tenant.key, 'get', '/api/documents').expect(200)).body.items).toEqual([]);
  });

  it('stores nothing when one document of the batch is invalid', async () => {
    const tenant = await stack.createTenant();
    const response = await stack
      .as(tenant.key, 'post', '/api/documents/batch')
      .send({ documents: [{ title: 'Good', content: 'fine' }, { title: 'Bad', content: '' }, { title: 'Also good', content: 'fine too' }] });
    expectError(response, 400, 'validation_failed');
    expect(JSON.stringify(response.body.error.details)).toContain('documents.1.content');
    await expectNothingStored(tenant);
  });

  it('refuses two documents sharing an external_id', async () => {
    const tenant = await stack.createTenant();
    const response = await stack.as(tenant.key, 'post', '/api/documents/batch').send({
      documents: [
        { title: 'A', content: 'first', external_id: 'same' },
        { title: 'B', content: 'second', external_id: 'same' },
      ],
    });
    expectError(response, 400, 'validation_failed');
    await expectNothingStored(tenant);
  });

  it('answers 409 when an external_id is already used, and adds nothing', async () => {
    const tenant = await stack.createTenant();
    const first = await createDocument(tenant, { title: 'Original', content: 'the original', external_id: 'ext-1' });
    expectError(await post(tenant, { title: 'Copy', content: 'a copy', external_id: 'ext-1' }), 409, 'conflict');
    const batch = await stack.as(tenant.key, 'post', '/api/documents/batch').send({
      documents: [
        { title: 'New', content: 'new one', external_id: 'ext-2' },
        { title: 'Clash', content: 'clashes', external_id: 'ext-1' },
      ],
    });
    expectError(batch, 409, 'conflict');
    expect((await listAll(tenant)).map((document) => document.id)).toEqual([first.id]);
  });
});

describe('limits', () => {
  it('refuses a 501-character title and 51 tags', async () => {
    const tenant = await stack.createTenant();
    const title = await post(tenant, { title: 't'.repeat(501), content: 'body' });
    expectError(title, 400, 'validation_failed');
    expect(title.body.error.details.issues[0].field).toBe('body.title');
    const tags = await post(tenant, { title: 'Tagged', content: 'body', tags: Array.from({ length: 51 }, (_, index) => `tag${index}`) });
    expectError(tags, 400, 'validation_failed');
    expect(tags.body.error.details.issues[0].field).toBe('body.tags');
    await expectNothingStored(tenant);
  });

  it('accepts exactly 500 characters of title and 50 tags', async () => {
    const tenant = await stack.createTenant();
    const tags = Array.from({ length: 50 }, (_, index) => `tag${index}`);
    const created = await createDocument(tenant, { title: 't'.repeat(500), content: 'body', tags });
    expect(created.tags).toEqual(tags);
    expect(created.title).toHaveLength(500);
  });

  it('answers 413 for content over 5 MB and stores nothing', async () => {
    const tenant = await stack.createTenant();
    const response = await post(tenant, { title: 'Huge', content: 'a'.repeat(5 * 1024 * 1024 + 1) });
    expectError(response, 413, 'payload_too_large');
    const batch = await stack
      .as(tenant.key, 'post', '/api/documents/batch')
      .send({ documents: [{ title: 'Small', content: 'small' }, { title: 'Huge', content: 'a'.repeat(5 * 1024 * 1024 + 1) }] });
    expectError(batch, 413, 'payload_too_large');
    await expectNothingStored(tenant);
  });

  it('answers 413 in JSON for a body over MAX_BODY_BYTES', async () => {
    const tenant = await quiet.createTenant();
    const over = await quiet.as(tenant.key, 'post', '/api/documents').send({ title: 'Big body', content: 'w'.repeat(QUIET_MAX_BODY_BYTES) });
    expectError(over, 413, 'payload_too_large');
    // Just under the limit is still accepted, so the limit is the configured one.
    await quiet.as(tenant.key, 'post', '/api/documents').send({ title: 'Fits', content: 'w'.repeat(QUIET_MAX_BODY_BYTES - 1024) }).expect(202);
    const list = await quiet.as(tenant.key, 'get', '/api/documents').expect(200);
    expect(list.body.items.map((document: DocumentBody) => document.title)).toEqual(['Fits']);
  });
});

describe('bad input answers 4xx JSON and stores nothing', () => {
  let tenant: Tenant;
  beforeAll(async () => {
    tenant = await stack.createTenant();
  });

  it('malformed JSON → 400 invalid_json', async () => {
    const response = await stack.as(tenant.key, 'post', '/api/documents').set('Content-Type', 'application/json').send('{"title": "x", "content": ');
    expectError(response, 400, 'invalid_json');
  });

  it('a text/plain body → 415 unsupported_media_type', async () => {
    const response = await stack
      .as(tenant.key, 'post', '/api/documents')
      .set('Content-Type', 'text/plain')
      .send(JSON.stringify({ title: 'x', content: 'y' }));
    expectError(response, 415, 'unsupported_media_type');
  });

  it('wrong types → 400 validation_failed naming each field', async () => {
    const response = await post(tenant, { title: 5, content: 'ok', tags: 'x', metadata: [] });
    expectError(response, 400, 'validation_failed');
    const fields = (response.body.error.details.issues as Array<{ field: string }>).map((issue) => issue.field);
    expect(fields).toEqual(expect.arrayContaining(['body.title', 'body.tags', 'body.metadata']));
  });

  it.each([
    ['an unknown content_type', { title: 'x', content: 'y', content_type: 'pdf' }],
    ['an unknown field', { title: 'x', content: 'y', author: 'someone' }],
    ['a NUL character in content', { title: 'x', content: 'before\u0000after' }],
    ['blank content', { title: 'x', content: ' \n\t ' }],
    ['a 100 KB title', { title: 'T'.repeat(100 * 1024), content: 'y' }],
    ['no content at all', { title: 'x' }],
    ['SQL metacharacters in a bad field', { title: "x'); drop table documents; --", content: 'y', content_type: "markdown' or '1'='1" }],
  ])('%s → 400 validation_failed', async (_label, body) => {
    const response = await post(tenant, body);
    expectError(response, 400, 'validation_failed');
    expect(response.body.error.details.issues.length).toBeGreaterThan(0);
  });

  it('stored nothing for any of the requests above', async () => {
    await expectNothingStored(tenant);
  });
});

describe('GET /api/documents', () => {
  let tenant: Tenant;
  const created: DocumentBody[] = [];
  beforeAll(async () => {
    tenant = await stack.createTenant();
    // One at a time, so creation order is the order ids were issued.
    created.push(await createDocument(tenant, { title: 'Doc 0', content: 'zero', content_type: 'text', tags: ['red'] }));
    created.push(await createDocument(tenant, { title: 'Doc 1', content: 'one', content_type: 'markdown', tags: ['blue'] }));
    created.push(await createDocument(tenant, { title: 'Doc 2', content: 'two', content_type: 'code', tags: ['red', 'blue'] }));
    created.push(await createDocument(tenant, { title: 'Doc 3', content: '<p>three</p>', content_type: 'html' }));
    created.push(await createDocument(tenant, { title: 'Doc 4', content: 'four', content_type: 'text', tags: ['red'] }));
    for (const document of created) await stack.waitForDocument(tenant.key, document.id);
  });

  it('walks every document once, newest first, with limit 2', async () => {
    const seen: string[] = [];
    const pageSizes: number[] = [];
    let cursor: string | null = null;
    do {
      const url: string = `/api/documents?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
      const page = await stack.as(tenant.key, 'get', url).expect(200);
      pageSizes.push(page.body.items.length);
      seen.push(...page.body.items.map((item: DocumentBody) => item.id));
      expect(page.body.items[0]).not.toHaveProperty('content');
      cursor = page.body.next_cursor;
    } while (cursor);
    expect(pageSizes).toEqual([2, 2, 1]);
    expect(seen).toEqual(created.map((document) => document.id).reverse());
  });

  it('filters by content_type, tag and status', async () => {
    const ids = (items: DocumentBody[]) => items.map((item) => item.id).sort();
    const byIndex = (...indexes: number[]) => indexes.map((index) => created[index].id).sort();
    expect(ids(await listAll(tenant, '?content_type=text'))).toEqual(byIndex(0, 4));
    expect(ids(await listAll(tenant, '?content_type=html'))).toEqual(byIndex(3));
    expect(ids(await listAll(tenant, '?tag=red'))).toEqual(byIndex(0, 2, 4));
    expect(ids(await listAll(tenant, '?tag=blue&content_type=code'))).toEqual(byIndex(2));
    expect(ids(await listAll(tenant, '?tag=green'))).toEqual([]);
    expect(ids(await listAll(tenant, '?status=indexed'))).toEqual(byIndex(0, 1, 2, 3, 4));
    expect(ids(await listAll(tenant, '?status=queued'))).toEqual([]);
  });

  it('refuses a cursor it did not issue, limits out of range and unknown filter values', async () => {
    expectError(await stack.as(tenant.key, 'get', '/api/documents?cursor=not-a-cursor'), 400, 'validation_failed');
    expectError(await stack.as(tenant.key, 'get', `/api/documents?cursor=${Buffer.from("' or 1=1 --").toString('base64url')}`), 400, 'validation_failed');
    expectError(await stack.as(tenant.key, 'get', '/api/documents?limit=0'), 400, 'validation_failed');
    expectError(await stack.as(tenant.key, 'get', '/api/documents?limit=101'), 400, 'validation_failed');
    expectError(await stack.as(tenant.key, 'get', '/api/documents?status=done'), 400, 'validation_failed');
    expectError(await stack.as(tenant.key, 'get', '/api/documents?content_type=spreadsheet'), 400, 'validation_failed');
    await stack.as(tenant.key, 'get', '/api/documents?limit=100').expect(200);
  });
});

describe('GET /api/documents/:id', () => {
  it('returns the document with its content', async () => {
    const tenant = await stack.createTenant();
    const created = await createDocument(tenant, {
      title: 'Knots',
      content: 'A bowline makes a fixed loop.',
      content_type: 'text',
      tags: ['sailing', 'sailing', 'rope'],
      metadata: { author: 'ship', pages: 3 },
      source_url: 'https://example.com/knots',
      external_id: 'knots-1',
    });
    const response = await stack.as(tenant.key, 'get', `/api/documents/${created.id}`).expect(200);
    expect(response.body).toMatchObject({
      id: created.id,
      title: 'Knots',
      content: 'A bowline makes a fixed loop.',
      content_type: 'text',
      tags: ['sailing', 'rope'],
      metadata: { author: 'ship', pages: 3 },
      source_url: 'https://example.com/knots',
      external_id: 'knots-1',
      version: 1,
    });
  });

  it('answers 400 for a malformed id and 404 for an unknown one', async () => {
    const tenant = await stack.createTenant();
    expectError(await stack.as(tenant.key, 'get', '/api/documents/not-a-uuid'), 400, 'validation_failed');
    expectError(await stack.as(tenant.key, 'get', "/api/documents/1'%20or%20'1'='1"), 400, 'validation_failed');
    expectError(await stack.as(tenant.key, 'get', '/api/documents/0190b3a0-0000-7000-8000-000000000000'), 404, 'not_found');
  });
});

describe('PATCH /api/documents/:id', () => {
  it('re-indexes changed content as version 2', async () => {
    const tenant = await stack.createTenant();
    const created = await createDocument(tenant, { title: 'Garden', content: 'The tomatoes ripen slowly in the greenhouse.' });
    await stack.waitForDocument(tenant.key, created.id);
    expect(await keywordHits(tenant, 'tomatoes')).toEqual([created.id]);

    const patched = await stack
      .as(tenant.key, 'patch', `/api/documents/${created.id}`)
      .send({ content: 'The cucumbers climb the trellis by the shed.' })
      .expect(202);
    expect(patched.body).toMatchObject({ id: created.id, version: 2, status: 'queued' });
    expect(patched.body.job_id).not.toBe(created.job_id);

    const indexed = await stack.waitForDocument(tenant.key, created.id);
    expect(indexed).toMatchObject({ version: 2, content: 'The cucumbers climb the trellis by the shed.' });
    expect(await keywordHits(tenant, 'cucumbers')).toEqual([created.id]);
    expect(await keywordHits(tenant, 'tomatoes')).toEqual([]);
    // Every stored chunk belongs to the new version.
    const versions = await stack.sql((db) => db('chunks').where({ document_id: created.id }).distinct('document_version'));
    expect(versions.map((row: { document_version: number }) => row.document_version)).toEqual([2]);
  });

  it('changes tags alone at once: 200, same version, no re-index', async () => {
    const tenant = await stack.createTenant();
    const created = await createDocument(tenant, { title: 'Bees', content: 'Hives need a calm spot.', tags: ['old'] });
    const before = await stack.waitForDocument(tenant.key, created.id);
    const patched = await stack.as(tenant.key, 'patch', `/api/documents/${created.id}`).send({ tags: ['new', 'fresh'], metadata: { k: 1 } }).expect(200);
    expect(patched.body).toMatchObject({ version: 1, status: 'indexed', tags: ['new', 'fresh'], metadata: { k: 1 }, job_id: created.job_id });
    const after = await stack.as(tenant.key, 'get', `/api/documents/${created.id}`).expect(200);
    expect(after.body).toMatchObject({ version: 1, tags: ['new', 'fresh'], indexed_at: before.indexed_at });
  });

  it('keeps tags and metadata that a PATCH leaves out', async () => {
    const tenant = await stack.createTenant();
    const created = await createDocument(tenant, { title: 'Maps', content: 'Contour lines show height.', tags: ['geo'], metadata: { scale: 25 } });
    await stack.waitForDocument(tenant.key, created.id);
    const patched = await stack.as(tenant.key, 'patch', `/api/documents/${created.id}`).send({ title: 'Topographic maps' }).expect(202);
    expect(patched.body).toMatchObject({ title: 'Topographic maps', version: 2, tags: ['geo'], metadata: { scale: 25 } });
    const indexed = await stack.waitForDocument(tenant.key, created.id);
    expect(indexed).toMatchObject({ version: 2, tags: ['geo'], metadata: { scale: 25 }, content: 'Contour lines show height.' });
  });

  it('refuses an empty change, bad values and unknown documents', async () => {
    const tenant = await stack.createTenant();
    const created = await createDocument(tenant, { title: 'Fixed', content: 'unchanging text' });
    await stack.waitForDocument(tenant.key, created.id);
    expectError(await stack.as(tenant.key, 'patch', `/api/documents/${created.id}`).send({}), 400, 'validation_failed');
    expectError(await stack.as(tenant.key, 'patch', `/api/documents/${created.id}`).send({ content: '   ' }), 400, 'validation_failed');
    expectError(await stack.as(tenant.key, 'patch', `/api/documents/${created.id}`).send({ content_type: 'text' }), 400, 'validation_failed');
    expectError(await stack.as(tenant.key, 'patch', `/api/documents/${created.id}`).send({ title: 'x'.repeat(501) }), 400, 'validation_failed');
    expectError(
      await stack.as(tenant.key, 'patch', '/api/documents/0190b3a0-0000-7000-8000-000000000000').send({ tags: ['x'] }),
      404,
      'not_found',
    );
    expectError(await stack.as(tenant.key, 'patch', '/api/documents/nope').send({ tags: ['x'] }), 400, 'validation_failed');
    const after = await stack.as(tenant.key, 'get', `/api/documents/${created.id}`).expect(200);
    expect(after.body).toMatchObject({ title: 'Fixed', content: 'unchanging text', version: 1, tags: [] });
  });
});

describe('DELETE /api/documents/:id', () => {
  it('deletes the document and its chunks', async () => {
    const tenant = await stack.createTenant();
    const created = await createDocument(tenant, { title: 'Lanterns', content: 'Paper lanterns float down the river at night.' });
    await stack.waitForDocument(tenant.key, created.id);
    expect(await keywordHits(tenant, 'lanterns')).toEqual([created.id]);
    const chunks = () => stack.sql((db) => db('chunks').where({ document_id: created.id }).count<Array<{ n: string }>>('* as n'));
    expect(Number((await chunks())[0].n)).toBeGreaterThan(0);

    await stack.as(tenant.key, 'delete', `/api/documents/${created.id}`).expect(204);
    expectError(await stack.as(tenant.key, 'get', `/api/documents/${created.id}`), 404, 'not_found');
    expect(await keywordHits(tenant, 'lanterns')).toEqual([]);
    expect(Number((await chunks())[0].n)).toBe(0);
    expectError(await stack.as(tenant.key, 'delete', `/api/documents/${created.id}`), 404, 'not_found');
  });
});

describe('GET /api/stats', () => {
  it('counts documents by status and chunks', async () => {
    const tenant = await stack.createTenant();
    const empty = await stack.as(tenant.key, 'get', '/api/stats').expect(200);
    expect(empty.body).toMatchObject({ documents: { total: 0, indexed: 0, queued: 0 }, chunks: 0 });

    const a = await createDocument(tenant, { title: 'Stat A', content: 'alpha text' });
    const b = await createDocument(tenant, { title: 'Stat B', content: 'beta text' });
    const indexed = [await stack.waitForDocument(tenant.key, a.id), await stack.waitForDocument(tenant.key, b.id)];
    const chunkTotal = indexed.reduce((sum, document) => sum + Number(document.chunk_count), 0);
    const stats = await stack.as(tenant.key, 'get', '/api/stats').expect(200);
    expect(stats.body).toMatchObject({
      documents: { total: 2, indexed: 2, queued: 0, processing: 0, failed: 0, canceled: 0 },
      chunks: chunkTotal,
    });
    expect(chunkTotal).toBeGreaterThan(0);
  });

  it("reports today's searches as the daily quota counts them: answered ones, not refused ones", async () => {
    const tenant = await stack.createTenant();
    expect((await stack.as(tenant.key, 'get', '/api/stats').expect(200)).body.searches).toBe(0);
    await stack.as(tenant.key, 'post', '/api/search').send({ query: 'alpha', mode: 'keyword' }).expect(200);
    await stack.as(tenant.key, 'get', '/api/search?q=beta&mode=keyword').expect(200);
    await stack.as(tenant.key, 'post', '/api/search').send({ query: '', mode: 'keyword' }).expect(400);
    const stats = await stack.as(tenant.key, 'get', '/api/stats').expect(200);
    expect(stats.body.searches).toBe(2);
    const usage = await stack.as(tenant.key, 'get', '/api/admin/usage').expect(200);
    expect(usage.body.quotas.searches_per_day.used).toBe(stats.body.searches);
  });
});

describe('tenant isolation', () => {
  it("keeps one tenant's documents out of another's reach", async () => {
    const a = await stack.createTenant();
    const b = await stack.createTenant();
    const secret = await createDocument(a, { title: 'Private', content: 'The quartermaster hides the marmalade.' });
    await stack.waitForDocument(a.key, secret.id);
    const own = await createDocument(b, { title: 'Public', content: 'Nothing about preserves here.' });
    await stack.waitForDocument(b.key, own.id);

    expectError(await stack.as(b.key, 'get', `/api/documents/${secret.id}`), 404, 'not_found');
    expectError(await stack.as(b.key, 'patch', `/api/documents/${secret.id}`).send({ content: 'overwritten' }), 404, 'not_found');
    expectError(await stack.as(b.key, 'delete', `/api/documents/${secret.id}`), 404, 'not_found');
    expect((await listAll(b)).map((document) => document.id)).toEqual([own.id]);
    expect(await keywordHits(b, 'marmalade')).toEqual([]);
    expectError(await stack.operator('get', `/api/documents/${secret.id}`, b.id), 404, 'not_found');
    expectError(await stack.operator('get', `/api/documents/${secret.id}`, b.slug), 404, 'not_found');

    // A's document is untouched by B's attempts, and the operator sees it as A.
    const untouched = await stack.operator('get', `/api/documents/${secret.id}`, a.slug).expect(200);
    expect(untouched.body).toMatchObject({ content: 'The quartermaster hides the marmalade.', version: 1, status: 'indexed' });
    expect(await keywordHits(a, 'marmalade')).toEqual([secret.id]);
  });
});
