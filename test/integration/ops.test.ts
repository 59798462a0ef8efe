import type { Express } from 'express';
import request from 'supertest';
import { QUEUE_NAMES } from '../../queues';
import { VERSION } from '../../src/platform';
import { ADMIN_TOKEN, startStack, type TestStack } from '../helpers/harness';
import { waitFor } from '../helpers/wait';

type Tenant = { id: string; slug: string; key: string };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const SOME_ID = '0190f5b2-0000-7000-8000-000000000000';
/** PGlite compiles and migrates in-process; on a loaded machine that alone can take most of a minute. */
const PGLITE_START_TIMEOUT_MS = 120_000;

/**
 * The routes of the contract's tables (docs/api.md), in Express syntax. Every one must answer
 * and be in the OpenAPI document.
 */
const CONTRACT_ROUTES = [
  'GET /healthz',
  'GET /readyz',
  'GET /api/health',
  'POST /api/admin/tenants',
  'GET /api/admin/tenants',
  'GET /api/admin/tenants/:id',
  'PATCH /api/admin/tenants/:id',
  'DELETE /api/admin/tenants/:id',
  'POST /api/admin/tenants/:id/suspend',
  'POST /api/admin/tenants/:id/resume',
  'POST /api/admin/api-keys',
  'GET /api/admin/api-keys',
  'DELETE /api/admin/api-keys/:id',
  'POST /api/documents',
  'POST /api/documents/batch',
  'GET /api/documents',
  'GET /api/documents/:id',
  'PATCH /api/documents/:id',
  'DELETE /api/documents/:id',
  'POST /api/index',
  'POST /api/index/batch',
  'GET /api/index/jobs',
  'GET /api/index/jobs/:id',
  'POST /api/index/jobs/:id/cancel',
  'POST /api/search',
  'GET /api/search',
  'GET /api/stats',
  'GET /api/admin/queues',
  'GET /api/admin/jobs',
  'GET /api/admin/jobs/:queue/:id',
  'POST /api/admin/jobs/:queue/:id/retry',
  'POST /api/admin/queues/:queue/retry-failed',
  'POST /api/admin/queues/:queue/pause',
  'POST /api/admin/queues/:queue/resume',
  'GET /api/admin/stats',
];

/** Served on purpose without an OpenAPI operation: the document itself, pages and the Prometheus endpoint. */
const UNDOCUMENTED_BY_DESIGN = new Set(['GET /api/openapi.json', 'GET /docs', 'GET /docs/init.js', 'GET /metrics']);

interface RouterLayer {
  route?: { path: string; methods: Record<string, boolean> };
  handle?: { stack?: RouterLayer[] };
  rawPath?: unknown;
  slash?: boolean;
}

/** Every `METHOD /path` the Express app has a route for, read from its router. */
function expressRoutes(app: Express): string[] {
  const found: string[] = [];
  const walk = (layers: RouterLayer[], prefix: string) => {
    for (const layer of layers) {
      if (layer.route) {
        for (const [method, on] of Object.entries(layer.route.methods)) {
          if (on && method !== '_all') found.push(`${method.toUpperCase()} ${prefix}${layer.route.path}`);
        }
      } else if (layer.handle?.stack) {
        walk(layer.handle.stack, layer.slash || typeof layer.rawPath !== 'string' ? prefix : `${prefix}${layer.rawPath}`);
      }
    }
  };
  walk((app as unknown as { router: { stack: RouterLayer[] } }).router.stack, '');
  return found;
}

const toOpenApiPath = (path: string) => path.replace(/:([A-Za-z_]+)/g, '{$1}');

/** A metric sample's value, or undefined when no line matches all the given label fragments. */
function sample(metrics: string, name: string, ...labels: string[]): number | undefined {
  for (const line of metrics.split('\n')) {
    if (line.startsWith('#') || !line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (labels.every((label) => line.includes(label))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

describe('operations surface (postgres)', () => {
  let stack: TestStack;
  let tenant: Tenant;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres' });
    tenant = await stack.createTenant();
  });
  afterAll(async () => {
    await stack?.close();
  });

  const metrics = async () => {
    const response = await request(stack.app).get('/metrics').expect(200);
    expect(response.headers['content-type']).toMatch(/^text\/plain/);
    return response.text;
  };

  describe('health', () => {
    it('answers /healthz without credentials', async () => {
      const response = await request(stack.app).get('/healthz').expect(200);
      expect(response.body).toEqual({ status: 'ok' });
    });

    it('answers /readyz with both dependencies up', async () => {
      const response = await request(stack.app).get('/readyz').expect(200);
      expect(response.body).toMatchObject({ status: 'ready', checks: { database: 'up', redis: 'up' } });
    });

    it('describes every service in /api/health to the operator, naming the missing vector extension', async () => {
      const response = await stack.operator('get', '/api/health').expect(200);
      expect(response.body).toMatchObject({
        status: 'healthy',
        version: VERSION,
        uptime_seconds: expect.any(Number),
        services: {
          database: { status: 'up' },
          redis: { status: 'up' },
          vector_search: { status: 'unavailable' },
          queues: { status: 'up' },
        },
      });
      expect(response.body.version).toMatch(/^\d+\.\d+\.\d+/);
      expect(response.body.uptime_seconds).toBeGreaterThanOrEqual(0);
      expect(response.body.services.vector_search.reason).toMatch(/"vector"/);
      expect(Object.keys(response.body.services.queues.queues).sort()).toEqual([...QUEUE_NAMES].sort());
    });
  });

  describe('metrics', () => {
    it('labels HTTP latency by route pattern, never by raw id', async () => {
      const created = await stack.as(tenant.key, 'post', '/api/documents').send({ title: 'Metered', content: 'Counted by route.' }).expect(202);
      await stack.as(tenant.key, 'get', `/api/documents/${created.body.id}`).expect(200);
      await stack.as(tenant.key, 'get', `/api/documents/${SOME_ID}`).expect(404);
      const text = await metrics();
      expect(sample(text, 'ragworks_http_request_duration_seconds_count', 'method="GET"', 'route="/api/documents/:id"', 'status="200"')).toBeGreaterThanOrEqual(1);
      expect(sample(text, 'ragworks_http_request_duration_seconds_count', 'route="/api/documents/:id"', 'status="404"')).toBeGreaterThanOrEqual(1);
      expect(sample(text, 'ragworks_http_request_duration_seconds_count', 'method="POST"', 'route="/api/documents"', 'status="202"')).toBeGreaterThanOrEqual(1);
      expect(text).toContain('ragworks_http_request_duration_seconds_bucket{');
      expect(text).not.toContain(created.body.id);
      expect(text).not.toContain(SOME_ID);
    });

    it('exports queue depth per state and the oldest waiting age', async () => {
      await stack.operator('post', '/api/admin/queues/indexing/pause').expect(200);
      try {
        await stack.as(tenant.key, 'post', '/api/documents').send({ title: 'Held', content: 'Waits while the queue is paused.' }).expect(202);
        const text = await waitFor(async () => {
          const current = await metrics();
          return (sample(current, 'ragworks_queue_oldest_waiting_age_seconds', 'queue="indexing"') ?? 0) > 0 ? current : null;
        }, { what: 'a waiting age above zero' });
        expect(sample(text, 'ragworks_queue_jobs', 'queue="indexing"', 'state="paused"')).toBe(1);
        for (const state of ['waiting', 'active', 'delayed', 'completed', 'failed']) {
          expect({ state, value: sample(text, 'ragworks_queue_jobs', 'queue="indexing"', `state="${state}"`) }).toEqual({ state, value: expect.any(Number) });
        }
        expect(sample(text, 'ragworks_queue_jobs', 'queue="reconcile"', 'state="waiting"')).toBe(0);
        expect(sample(text, 'ragworks_queue_oldest_waiting_age_seconds', 'queue="reconcile"')).toBe(0);
      } finally {
        await stack.operator('post', '/api/admin/queues/indexing/resume').expect(200);
      }
      await waitFor(async () => sample(await metrics(), 'ragworks_queue_oldest_waiting_age_seconds', 'queue="indexing"') === 0, {
        what: 'the held job to run after resume',
      });
    });

    it('exports job durations after a job ran and failures after a job failed', async () => {
      const created = await stack.as(tenant.key, 'post', '/api/documents').send({ title: 'Timed', content: 'Its indexing is timed.' }).expect(202);
      await stack.waitForDocument(tenant.key, created.body.id);
      const completed = sample(await metrics(), 'ragworks_job_duration_seconds_count', 'queue="indexing"', 'outcome="completed"');
      expect(completed).toBeGreaterThanOrEqual(1);
      expect(sample(await metrics(), 'ragworks_job_failures_total', 'queue="indexing"')).toBeUndefined();

      await stack.platform.queues.queue('indexing').add('indexing', { bad: 1 }, { jobId: 'metrics-bad-1', attempts: 1 });
      // The worker counts the failure before BullMQ has moved the job to failed: wait for both.
      const text = await waitFor(async () => {
        const current = await metrics();
        return sample(current, 'ragworks_queue_jobs', 'queue="indexing"', 'state="failed"') === 1 ? current : null;
      }, { what: 'the failed job to show in the queue counts' });
      expect(sample(text, 'ragworks_job_failures_total', 'queue="indexing"', 'final="true"')).toBe(1);
    });
  });

  describe('request ids', () => {
    it('echoes a given X-Request-Id and generates one otherwise', async () => {
      const given = await request(stack.app).get('/healthz').set('X-Request-Id', 'trace-abc.123_XYZ').expect(200);
      expect(given.headers['x-request-id']).toBe('trace-abc.123_XYZ');
      const generated = await request(stack.app).get('/healthz').expect(200);
      expect(generated.headers['x-request-id']).toMatch(UUID);
      const another = await request(stack.app).get('/healthz').expect(200);
      expect(another.headers['x-request-id']).not.toBe(generated.headers['x-request-id']);
      // A value unfit for logs is replaced, not echoed.
      const unfit = await request(stack.app).get('/healthz').set('X-Request-Id', 'has spaces and "quotes"').expect(200);
      expect(unfit.headers['x-request-id']).toMatch(UUID);
    });

    it('puts the request id in error bodies', async () => {
      const unauthenticated = await request(stack.app).get('/api/documents').set('X-Request-Id', 'err-req-1').expect(401);
      expect(unauthenticated.body.error).toMatchObject({ code: 'unauthenticated', request_id: 'err-req-1' });
      const invalid = await stack.as(tenant.key, 'post', '/api/documents').set('Content-Type', 'application/json').send('{"title":');
      expect(invalid.status).toBe(400);
      expect(invalid.body.error).toMatchObject({ code: 'invalid_json', request_id: invalid.headers['x-request-id'] });
      expect(invalid.body.error.request_id).toMatch(UUID);
      const missing = await request(stack.app).get('/nowhere').expect(404);
      expect(missing.body.error.request_id).toBe(missing.headers['x-request-id']);
    });
  });

  describe('OpenAPI and docs', () => {
    let document: {
      openapi: string;
      info: { title: string; version: string };
      paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: Record<string, unknown> }> } }>>;
      components?: { schemas?: Record<string, Record<string, unknown>> };
    };

    beforeAll(async () => {
      const response = await request(stack.app).get('/api/openapi.json').expect(200);
      expect(response.headers['content-type']).toMatch(/application\/json/);
      document = response.body;
    });

    const operations = () =>
      Object.entries(document.paths).flatMap(([path, item]) => Object.keys(item).filter((key) => ['get', 'post', 'patch', 'put', 'delete'].includes(key)).map((method) => `${method.toUpperCase()} ${path}`));

    it('is an OpenAPI 3.1 document with an operation for every route of the contract', async () => {
      expect(document.openapi).toMatch(/^3\.1\./);
      expect(document.info).toMatchObject({ title: expect.any(String), version: VERSION });
      for (const route of CONTRACT_ROUTES) {
        const [method, path] = route.split(' ');
        expect({ route, documented: operations().includes(`${method} ${toOpenApiPath(path)}`) }).toEqual({ route, documented: true });
      }
      for (const path of ['/api/documents', '/api/documents/{id}', '/api/search', '/api/index/jobs/{id}/cancel', '/api/admin/tenants', '/api/admin/api-keys', '/api/admin/queues/{queue}/retry-failed']) {
        expect(document.paths).toHaveProperty([path]);
      }
    });

    it('documents every route the app answers, and every documented route answers', async () => {
      // The operator's pages (/admin, its login and Bull Board) are pages, not API operations.
      const served = expressRoutes(stack.app).filter((route) => !/^\/admin(\/|$)/.test(route.split(' ')[1]));
      expect(served).toEqual(expect.arrayContaining(CONTRACT_ROUTES));
      const documented = new Set(operations());
      const undocumented = served.filter((route) => {
        const [method, path] = route.split(' ');
        return !documented.has(`${method} ${toOpenApiPath(path)}`) && !UNDOCUMENTED_BY_DESIGN.has(route);
      });
      expect(undocumented).toEqual([]);

      // Each documented operation reaches a handler: any answer but the catch-all "No route" 404. Path
      // parameters get values that fail validation or find nothing, so nothing changes.
      for (const operation of operations()) {
        const [method, path] = operation.split(' ');
        const url = path.replace('{queue}', 'no-such-queue').replace(/\{[^}]+\}/g, SOME_ID);
        const verb = method.toLowerCase() as 'get' | 'post' | 'patch' | 'delete';
        const pending = stack.operator(verb, url, tenant.id);
        const response = verb === 'post' || verb === 'patch' ? await pending.send({}) : await pending;
        expect({ operation, routed: !/^No route for/.test(response.body?.error?.message ?? '') }).toEqual({ operation, routed: true });
      }
      const tenants = await stack.operator('get', '/api/admin/tenants?limit=100').expect(200);
      expect(tenants.body.items).toHaveLength(1);
    });

    it('gives every operation a unique camelCase operationId, for client generators', async () => {
      const ids = Object.entries(document.paths).flatMap(([path, item]) =>
        Object.entries(item as Record<string, { operationId?: string }>)
          .filter(([method]) => ['get', 'post', 'patch', 'put', 'delete'].includes(method))
          .map(([method, operation]) => ({ operation: `${method.toUpperCase()} ${path}`, operationId: operation.operationId })),
      );
      expect(ids.length).toBeGreaterThanOrEqual(CONTRACT_ROUTES.length);
      for (const { operation, operationId } of ids) expect({ operation, operationId }).toEqual({ operation, operationId: expect.stringMatching(/^[a-z][a-zA-Z0-9]*$/) });
      const counts = new Map<string, string[]>();
      for (const { operation, operationId } of ids) counts.set(operationId!, [...(counts.get(operationId!) ?? []), operation]);
      expect([...counts.entries()].filter(([, operations]) => operations.length > 1)).toEqual([]);
      // Ids are part of the contract clients are generated from: these must not change.
      expect(document.paths['/api/documents'].post).toMatchObject({ operationId: 'createDocument' });
      expect(document.paths['/api/search'].post).toMatchObject({ operationId: 'search' });
      expect(document.paths['/api/admin/tenants/{id}/suspend'].post).toMatchObject({ operationId: 'suspendTenant' });
    });

    it('requires title and content in the body of POST /api/documents', async () => {
      const content = document.paths['/api/documents'].post.requestBody!.content['application/json'];
      let schema = content.schema;
      const ref = schema.$ref;
      if (typeof ref === 'string') schema = document.components!.schemas![ref.replace('#/components/schemas/', '')];
      expect(schema.required).toEqual(expect.arrayContaining(['title', 'content']));
      expect(schema.required).not.toContain('tags');
      expect(Object.keys(schema.properties as object)).toEqual(expect.arrayContaining(['title', 'content', 'content_type', 'tags', 'metadata', 'source_url', 'external_id']));
    });

    it('serves the docs page and its assets locally, with no CDN', async () => {
      const page = await request(stack.app).get('/docs').expect(200);
      expect(page.headers['content-type']).toMatch(/text\/html/);
      expect(page.text).toContain('/docs/assets/swagger-ui-bundle.js');
      expect(page.text).not.toMatch(/https?:\/\//);
      expect(page.text).not.toMatch(/src="\/\//);
      const assets = [...page.text.matchAll(/(?:src|href)="([^"]+)"/g)].map((match) => match[1]);
      expect(assets).toEqual(expect.arrayContaining(['/docs/assets/swagger-ui-bundle.js']));
      for (const asset of assets) {
        const response = await request(stack.app).get(asset);
        expect({ asset, status: response.status }).toEqual({ asset, status: 200 });
      }
      const bundle = await request(stack.app).get('/docs/assets/swagger-ui-bundle.js').expect(200);
      expect(bundle.headers['content-type']).toMatch(/javascript/);
      const init = await request(stack.app).get('/docs/init.js').expect(200);
      expect(init.text).toContain('/api/openapi.json');
    });
  });

  describe('Bull Board', () => {
    const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

    it('sends anyone without operator credentials to the login page, with no content', async () => {
      for (const attempt of [
        request(stack.app).get('/admin/queues'),
        request(stack.app).get('/admin/queues').set('Authorization', basic('ops', 'wrong-password')),
        request(stack.app).get('/admin/queues/api/queues'),
      ]) {
        const response = await attempt;
        expect(response.status).toBe(302);
        expect(response.headers.location).toMatch(/^\/admin\/login\?next=%2Fadmin%2Fqueues/);
        expect(response.text).not.toMatch(/<html|indexing/i);
      }
    });

    it('is read-only: no change passes, through its API or otherwise', async () => {
      const operator = basic('ops', ADMIN_TOKEN);
      const listed = await request(stack.app).get('/admin/queues/api/queues').set('Authorization', operator).expect(200);
      expect(listed.body.queues.every((queue: { readOnlyMode: boolean }) => queue.readOnlyMode)).toBe(true);
      for (const [method, path] of [
        ['put', '/admin/queues/api/queues/indexing/retry/failed'],
        ['put', '/admin/queues/api/queues/indexing/pause'],
        ['put', '/admin/queues/api/queues/indexing/clean/completed'],
        ['put', '/admin/queues/api/queues/pause'],
        ['post', '/admin/queues/api/queues/indexing/add'],
      ] as const) {
        const response = await request(stack.app)[method](path).set('Authorization', operator).send({});
        expect({ path, status: response.status }).toEqual({ path, status: 405 });
      }
      const queues = await stack.operator('get', '/api/admin/queues').expect(200);
      expect(queues.body.every((queue: { is_paused: boolean }) => !queue.is_paused)).toBe(true);
    });

    it('opens with HTTP Basic carrying the operator token, whatever the user name', async () => {
      for (const user of ['ops', '']) {
        const response = await request(stack.app).get('/admin/queues').set('Authorization', basic(user, ADMIN_TOKEN)).expect(200);
        expect(response.headers['content-type']).toMatch(/text\/html/);
        expect(response.text).toMatch(/<html/i);
      }
    });

    it("refuses a tenant's API key", async () => {
      await request(stack.app).get('/admin/queues').set('Authorization', `Bearer ${tenant.key}`).expect(302);
      await request(stack.app).get('/admin/queues').set('Authorization', basic('ops', tenant.key)).expect(302);
      await request(stack.app).get('/admin/queues/api/queues').set('X-API-Key', tenant.key).expect(302);
    });

    it('lists exactly the indexing and reconcile queues in its API', async () => {
      const response = await request(stack.app).get('/admin/queues/api/queues').set('Authorization', basic('ops', ADMIN_TOKEN)).expect(200);
      const names = (response.body.queues as Array<{ name: string }>).map((queue) => queue.name).sort();
      expect(names).toEqual([...QUEUE_NAMES].sort());
    });
  });

  it('answers an unknown route with 404 not_found JSON', async () => {
    for (const [method, url] of [['get', '/nope'], ['post', '/api/nope'], ['get', '/api/documents/x/y/z'], ['delete', '/api/search']] as const) {
      const response = await stack.operator(method, url, tenant.id);
      expect(response.status).toBe(404);
      expect(response.headers['content-type']).toMatch(/application\/json/);
      expect(response.body.error).toMatchObject({ code: 'not_found', message: expect.any(String) });
    }
    const anonymous = await request(stack.app).get('/definitely/not/here').expect(404);
    expect(anonymous.body.error.code).toBe('not_found');
  });
});

describe('operations surface (pglite)', () => {
  let stack: TestStack;

  beforeAll(async () => {
    stack = await startStack({ database: 'pglite', workers: false });
  }, PGLITE_START_TIMEOUT_MS);
  afterAll(async () => {
    await stack?.close();
  });

  it('reports vector search available', async () => {
    const response = await request(stack.app).get('/api/health').expect(200);
    expect(response.body).toMatchObject({
      status: 'healthy',
      services: { database: { status: 'up' }, redis: { status: 'up' }, vector_search: { status: 'available' } },
    });
    await request(stack.app).get('/readyz').expect(200);
  });
});
