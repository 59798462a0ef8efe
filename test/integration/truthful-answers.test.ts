import { randomUUID } from 'node:crypto';
import type request from 'supertest';
import { recordDeadLetter } from '../../src/domain/dead-letters/dead-letters';
import { DOCUMENT_LIMITS } from '../../src/domain/documents/documents';
import { startStack, type TestStack } from '../helpers/harness';
import { waitFor } from '../helpers/wait';

// Answers that tell the truth: a deletion that deleted nothing says 404 (on
// both databases), and input that could not be stored as sent is refused
// with a reason instead of being stored changed.

/** PGlite compiles and migrates in-process; on a loaded machine that alone can take most of a minute. */
jest.setTimeout(180_000);

type Tenant = { id: string; slug: string; key: string };

/** Paths of `/api/openapi.json` whose operations include a DELETE, with whether they take X-Tenant-Id. */
async function deleteRoutes(stack: TestStack): Promise<Array<{ path: string; tenantScoped: boolean }>> {
  const document = (await stack.operator('get', '/api/openapi.json').expect(200)).body as {
    paths: Record<string, Record<string, { parameters?: Array<{ in: string; name: string }> }>>;
  };
  return Object.entries(document.paths)
    .filter(([, operations]) => operations.delete)
    .map(([path, operations]) => ({
      path,
      tenantScoped: (operations.delete.parameters ?? []).some((parameter) => parameter.in === 'header' && parameter.name === 'x-tenant-id'),
    }));
}

describe.each(['postgres', 'pglite'] as const)('DELETE of what is not there (%s)', (database) => {
  let stack: TestStack;
  let a: Tenant;
  let b: Tenant;

  beforeAll(async () => {
    stack = await startStack({ database, workers: false });
    a = await stack.createTenant();
    b = await stack.createTenant();
  });
  afterAll(async () => {
    await stack?.close();
  });

  /** The audit rows a request left; they are written after the answer, so the first one is waited for. */
  async function auditRowsOf(requestId: string): Promise<Array<{ action: string; status: number }>> {
    return waitFor(async () => {
      const rows = await stack.sql((db) => db('audit_log').where({ request_id: requestId }).select('action', 'status'));
      return rows.length > 0 ? rows : null;
    }, { what: `the audit row of ${requestId}` });
  }

  /** Tenant B's instance of what each DELETE route removes, made through the API (or, for a dead letter, the worker's own recorder). */
  const creators: Record<string, () => Promise<string>> = {
    '/api/documents/{id}': async () => (await stack.as(b.key, 'post', '/api/documents').send({ title: 'B only', content: 'Words of tenant B.' }).expect(202)).body.id,
    '/api/admin/api-keys/{id}': async () => (await stack.as(b.key, 'post', '/api/admin/api-keys').send({ name: 'b key' }).expect(201)).body.id,
    '/api/admin/webhooks/{id}': async () =>
      (await stack.as(b.key, 'post', '/api/admin/webhooks').send({ url: 'https://example.com/hook', event_types: ['document.indexed'] }).expect(201)).body.id,
    '/api/admin/dead-letters/{id}': async () => {
      const jobId = `truthful-${randomUUID()}`;
      await recordDeadLetter(stack.platform.db.knex, {
        queue: 'indexing', jobId, jobName: 'index', data: { tenantId: b.id }, error: new Error('failed for the test'), attempts: 1, maxAttempts: 1,
      });
      return stack.sql(async (db) => (await db('dead_letters').first('id').where({ job_id: jobId })).id);
    },
  };
  /** Operator-only routes name no tenant, so there is no "other tenant's" id to try. */
  const acrossTenantsOnly = new Set(['/api/admin/tenants/{id}']);

  it('knows every DELETE route, so a new one cannot escape this test', async () => {
    const paths = (await deleteRoutes(stack)).map((route) => route.path).sort();
    expect(paths).toEqual([...Object.keys(creators), ...acrossTenantsOnly].sort());
  });

  it('answers 404 for a missing id and for another tenant’s, changes nothing, and audits no success', async () => {
    const outcomes: Array<{ path: string; case: string; status: number; audited: number[] }> = [];
    const expected: typeof outcomes = [];
    for (const route of await deleteRoutes(stack)) {
      const cases: Array<[string, string]> = [['missing', randomUUID()]];
      if (!acrossTenantsOnly.has(route.path)) cases.push(["another tenant's", await creators[route.path]()]);
      for (const [name, id] of cases) {
        const requestId = `truthful-${randomUUID()}`;
        const response = await stack
          .operator('delete', route.path.replace('{id}', id), route.tenantScoped ? a.id : undefined)
          .set('X-Request-Id', requestId);
        const rows = await auditRowsOf(requestId);
        outcomes.push({ path: route.path, case: name, status: response.status, audited: rows.map((row) => row.status) });
        expected.push({ path: route.path, case: name, status: 404, audited: [404] });
      }
    }
    // One comparison: a failure shows every route and case at once.
    expect(outcomes).toEqual(expected);

    // B's things are all still there.
    await stack.as(b.key, 'get', '/api/admin/webhooks').expect(200).expect((response: request.Response) => expect(response.body.items).toHaveLength(1));
    expect((await stack.as(b.key, 'get', '/api/admin/api-keys').expect(200)).body.items).toHaveLength(2);
    expect((await stack.as(b.key, 'get', '/api/documents').expect(200)).body.items).toHaveLength(1);
    expect((await stack.operator('get', '/api/admin/dead-letters?state=open', b.id).expect(200)).body.items).toHaveLength(1);
  });

  it('counts what a delete and an update touched as a number', async () => {
    const { id } = (await stack.as(a.key, 'post', '/api/admin/webhooks').send({ url: 'https://example.com/a', event_types: ['document.indexed'] }).expect(201)).body;
    await stack.sql(async (trx) => {
      expect(await trx('webhook_endpoints').where({ id: randomUUID() }).update({ description: 'x' })).toBe(0);
      expect(await trx('webhook_endpoints').where({ id }).update({ description: 'x' })).toBe(1);
      expect(await trx('webhook_endpoints').where({ id: randomUUID() }).delete()).toBe(0);
      expect(await trx('webhook_endpoints').where({ id: randomUUID() }).del()).toBe(0);
    });
    await stack.operator('delete', `/api/admin/webhooks/${id}`, a.id).expect(204);
    await stack.operator('delete', `/api/admin/webhooks/${id}`, a.id).expect(404);
  });
});

describe('input that could not be stored as sent is refused (postgres)', () => {
  let stack: TestStack;
  let tenant: Tenant;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', workers: false });
    tenant = await stack.createTenant();
  });
  afterAll(async () => {
    await stack?.close();
  });

  const documentCount = () => stack.sql(async (db) => Number((await db('documents').where({ tenant_id: tenant.id }).count('* as n').first())?.n));
  /** Sends the bytes as they are (superagent would otherwise serialise a Buffer as JSON). */
  const rawPost = (path: string, body: Buffer | string, contentType = 'application/json') =>
    stack.as(tenant.key, 'post', path).set('Content-Type', contentType).serialize((bytes) => bytes).send(body);

  it('answers 400 invalid_encoding for bytes that are not UTF-8, and stores nothing', async () => {
    const before = await documentCount();
    const around = (bytes: number[]) => Buffer.concat([Buffer.from('{"title":"t'), Buffer.from(bytes), Buffer.from('","content":"words"}')]);
    const malformed = {
      'a lone 0xFF byte': [0xff],
      'an overlong "/" (C0 AF)': [0xc0, 0xaf],
      'a UTF-16 surrogate encoded in UTF-8 (ED A0 80)': [0xed, 0xa0, 0x80],
      'a sequence cut short (E2 82)': [0xe2, 0x82],
      'a continuation byte alone (80)': [0x80],
    };
    const answers: Record<string, unknown> = {};
    for (const [name, bytes] of Object.entries(malformed)) {
      const response = await rawPost('/api/documents', around(bytes));
      answers[name] = { status: response.status, code: response.body.error?.code };
    }
    expect(answers).toEqual(Object.fromEntries(Object.keys(malformed).map((name) => [name, { status: 400, code: 'invalid_encoding' }])));
    const one = await rawPost('/api/documents', around([0xff]));
    expect(one.body.error.message).toBe('The body is not valid UTF-8: it holds byte sequences that encode no character.');

    // A declared UTF-16 body is held to UTF-16: an unpaired surrogate is refused the same way.
    const utf16 = Buffer.concat([Buffer.from('{"title":"t', 'utf16le'), Buffer.from([0x00, 0xdc]), Buffer.from('","content":"words"}', 'utf16le')]);
    const refused16 = await rawPost('/api/documents', utf16, 'application/json; charset=utf-16le');
    expect({ status: refused16.status, code: refused16.body.error?.code }).toEqual({ status: 400, code: 'invalid_encoding' });
    expect(await documentCount()).toBe(before);

    // Well-formed multi-byte text goes through untouched.
    const text = 'Ünïcödé — 日本語 🦉';
    const accepted = await rawPost('/api/documents', Buffer.from(JSON.stringify({ title: text, content: `${text} words` }), 'utf8')).expect(202);
    expect((await stack.as(tenant.key, 'get', `/api/documents/${accepted.body.id}`).expect(200)).body.title).toBe(text);
  });

  it('says what a body that is valid JSON but no object is', async () => {
    const cases: Array<[string, string]> = [
      ['"hello"', 'a string'],
      ['null', 'null'],
      ['42', 'a number'],
      ['true', 'a boolean'],
      ['[{"title":"t","content":"c"}]', 'an array'],
    ];
    const answers = [];
    for (const [body] of cases) {
      const response = await rawPost('/api/documents', body);
      answers.push({ body, status: response.status, code: response.body.error?.code, message: response.body.error?.message });
    }
    expect(answers).toEqual(cases.map(([body, got]) => ({ body, status: 400, code: 'validation_failed', message: `The body must be a JSON object; got ${got}.` })));
    // Broken JSON is still called that.
    const broken = await rawPost('/api/documents', '{"title": ');
    expect({ status: broken.status, code: broken.body.error.code }).toEqual({ status: 400, code: 'invalid_json' });
  });

  it('refuses the key "__proto__" wherever it appears in a body, naming where, and keeps other keys as sent', async () => {
    const before = await documentCount();
    const refused: Array<[string, string, string]> = [
      ['/api/documents', '{"title":"t","content":"c","metadata":{"__proto__":{"admin":true}}}', 'body.metadata.__proto__'],
      ['/api/documents', '{"title":"t","content":"c","metadata":{"team":{"owner":{"__proto__":{}}}}}', 'body.metadata.team.owner.__proto__'],
      ['/api/documents', '{"__proto__":{"x":1},"title":"t","content":"c"}', 'body.__proto__'],
      ['/api/documents/batch', '{"documents":[{"title":"t","content":"c"},{"title":"u","content":"d","metadata":{"list":[{"__proto__":1}]}}]}', 'body.documents.1.metadata.list.0.__proto__'],
    ];
    const answers = [];
    for (const [path, body] of refused) {
      const response = await rawPost(path, body);
      answers.push({ status: response.status, code: response.body.error?.code, field: response.body.error?.details?.issues?.[0]?.field });
    }
    expect(answers).toEqual(refused.map(([, , field]) => ({ status: 400, code: 'validation_failed', field })));
    expect(await documentCount()).toBe(before);

    const kept = await rawPost('/api/documents', '{"title":"t","content":"c","metadata":{"constructor":"Acme","prototype":{"a":1},"proto":2}}').expect(202);
    const stored = await stack.as(tenant.key, 'get', `/api/documents/${kept.body.id}`).expect(200);
    expect(stored.body.metadata).toEqual({ constructor: 'Acme', prototype: { a: 1 }, proto: 2 });
    const patched = await stack.as(tenant.key, 'patch', `/api/documents/${kept.body.id}`).set('Content-Type', 'application/json').send('{"metadata":{"__proto__":{}}}');
    expect({ status: patched.status, code: patched.body.error?.code }).toEqual({ status: 400, code: 'validation_failed' });
  });

  it('holds GET /api/search tags to the rules POST /api/search holds them to', async () => {
    const long = 'x'.repeat(DOCUMENT_LIMITS.tagChars + 1);
    const many = Array.from({ length: DOCUMENT_LIMITS.tags + 1 }, (_, i) => `t${i}`);
    const bad: Array<[string, string[]]> = [
      ['a NUL', ['ok', 'nul\u0000here']],
      [`${DOCUMENT_LIMITS.tags + 1} tags`, many],
      [`a ${DOCUMENT_LIMITS.tagChars + 1}-character tag`, [long]],
    ];
    const answers = [];
    for (const [name, tags] of bad) {
      const post = await stack.as(tenant.key, 'post', '/api/search').send({ query: 'owls', mode: 'keyword', filters: { tags } });
      const get = await stack.as(tenant.key, 'get', `/api/search?q=owls&mode=keyword&tags=${encodeURIComponent(tags.join(','))}`);
      answers.push({ name, post: [post.status, post.body.error?.code], get: [get.status, get.body.error?.code] });
    }
    expect(answers).toEqual(bad.map(([name]) => ({ name, post: [400, 'validation_failed'], get: [400, 'validation_failed'] })));
    const fine = await stack.as(tenant.key, 'get', `/api/search?q=owls&mode=keyword&tags=${encodeURIComponent(` a , ${'y'.repeat(DOCUMENT_LIMITS.tagChars)} `)}`);
    expect(fine.status).toBe(200);
  });
});
