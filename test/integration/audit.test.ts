import { randomUUID } from 'node:crypto';
import type request from 'supertest';
import { recordAudit, type AuditEntry, type AuditRecord } from '../../src/domain/audit/audit';
import { uniqueName } from '../helpers/databases';
import { startStack, type TestStack } from '../helpers/harness';
import { startWebhookReceiver } from '../helpers/webhook-receiver';
import { waitFor } from '../helpers/wait';

type AuditRow = AuditRecord;

type Tenant = { id: string; slug: string; key: string };

/** The address a trusted proxy on loopback reports for the client. */
const CLIENT_IP = '203.0.113.7';

describe('audit trail (postgres)', () => {
  let stack: TestStack;
  let a: Tenant;
  let b: Tenant;
  let aKeyId: string;

  /** Sends with a request id of its own, so the row it leaves can be found, and through a "proxy" that names the client. */
  function traced(test: request.Test): { test: request.Test; requestId: string } {
    const requestId = `audit-${randomUUID()}`;
    return { test: test.set('X-Request-Id', requestId).set('X-Forwarded-For', CLIENT_IP), requestId };
  }

  async function rowsOf(requestId: string): Promise<AuditRow[]> {
    return stack.sql(async (db) => {
      const rows = await db('audit_log').where({ request_id: requestId }).orderBy('id');
      return rows.map((row) => ({ ...row, at: row.at.toISOString() }) as AuditRow);
    });
  }

  /** Rows are written after the answer has gone out, so they are waited for. */
  async function auditOf(requestId: string): Promise<AuditRow> {
    const [row] = await waitFor(async () => {
      const rows = await rowsOf(requestId);
      return rows.length > 0 ? rows : null;
    }, { what: `the audit row of ${requestId}` });
    return row;
  }

  /** Sends, expects the status, and returns the answer with the audit row it left. */
  async function audited(test: request.Test, status: number): Promise<{ response: request.Response; row: AuditRow }> {
    const { test: sent, requestId } = traced(test);
    const response = await sent.expect(status);
    return { response, row: await auditOf(requestId) };
  }

  /** A request that must leave no row: a later audited request's row is there first, so this one's would be too. */
  async function expectUnaudited(tests: request.Test[]): Promise<void> {
    const ids: string[] = [];
    for (const test of tests) {
      const { test: sent, requestId } = traced(test);
      await sent;
      ids.push(requestId);
    }
    await audited(stack.operator('post', '/api/admin/queues/indexing/resume'), 200);
    for (const id of ids) expect(await rowsOf(id)).toEqual([]);
  }

  async function allRows(): Promise<AuditRow[]> {
    return stack.sql((db) => db('audit_log').select('*'));
  }

  beforeAll(async () => {
    // The test "proxy" is this process, on loopback.
    stack = await startStack({ database: 'postgres', workers: false, env: { WEBHOOK_ALLOW_PRIVATE: 'true', TRUST_PROXY: 'loopback' } });
    a = await stack.createTenant();
    b = await stack.createTenant();
    const keys = await stack.as(a.key, 'get', '/api/admin/api-keys').expect(200);
    aKeyId = keys.body.items.find((key: { name: string }) => key.name === 'test key').id;
  });
  afterAll(async () => {
    await stack?.close();
  });

  describe('what is recorded', () => {
    it("records the operator's tenant changes with actor, action, target, tenant, status, address and request id; the delete outlives the tenant", async () => {
      const slug = uniqueName('audited').replace(/_/g, '-');
      const created = await audited(stack.operator('post', '/api/admin/tenants').send({ slug, name: 'Audited', tier: 'free' }), 201);
      const id = created.response.body.id as string;
      expect(created.row).toMatchObject({
        actor_kind: 'operator',
        actor_id: null,
        action: 'tenant.create',
        target: id,
        tenant_id: id,
        tenant_slug: slug,
        method: 'POST',
        path: '/api/admin/tenants',
        status: 201,
        ip: CLIENT_IP,
        details: { slug, tier: 'free' },
      });
      expect(created.row.request_id).toMatch(/^audit-/);

      // Named by slug: the row still carries the id.
      const patched = await audited(stack.operator('patch', `/api/admin/tenants/${slug}`).send({ name: 'Renamed', quotas: { documents: 5 } }), 200);
      expect(patched.row).toMatchObject({ action: 'tenant.update', target: id, tenant_id: id, path: '/api/admin/tenants/:id', status: 200 });
      expect(patched.row.details).toEqual({ fields: ['name', 'quotas'], quotas: ['documents'] });
      expect(JSON.stringify(patched.row)).not.toContain('Renamed');

      expect((await audited(stack.operator('post', `/api/admin/tenants/${id}/suspend`), 200)).row).toMatchObject({ action: 'tenant.suspend', target: id, tenant_id: id });
      expect((await audited(stack.operator('post', `/api/admin/tenants/${id}/resume`), 200)).row).toMatchObject({ action: 'tenant.resume', target: id, tenant_id: id });

      const deleted = await audited(stack.operator('delete', `/api/admin/tenants/${slug}`), 204);
      expect(deleted.row).toMatchObject({ action: 'tenant.delete', target: id, tenant_id: id, tenant_slug: slug, status: 204 });
      await stack.operator('get', `/api/admin/tenants/${id}`).expect(404);

      const history = await stack.operator('get', `/api/admin/audit?tenant=${id}`).expect(200);
      expect(history.body.items.map((item: AuditRow) => item.action)).toEqual(['tenant.delete', 'tenant.resume', 'tenant.suspend', 'tenant.update', 'tenant.create']);
      const bySlug = await stack.operator('get', `/api/admin/audit?tenant=${slug}&action=tenant.delete`).expect(200);
      expect(bySlug.body.items).toHaveLength(1);
    });

    it('records API keys and webhooks, by the operator and by a tenant admin key (with its key id), and never their secrets', async () => {
      const key = await audited(stack.operator('post', '/api/admin/api-keys', a.id).send({ name: 'reader', scopes: ['documents:read'] }), 201);
      expect(key.row).toMatchObject({
        actor_kind: 'operator', action: 'api_key.create', target: key.response.body.id, tenant_id: a.id, tenant_slug: a.slug, status: 201,
        details: { name: 'reader', scopes: ['documents:read'] },
      });
      const revoked = await audited(stack.as(a.key, 'delete', `/api/admin/api-keys/${key.response.body.id}`), 204);
      expect(revoked.row).toMatchObject({ actor_kind: 'key', actor_id: aKeyId, action: 'api_key.revoke', target: key.response.body.id, tenant_id: a.id, status: 204 });

      const hook = await audited(
        stack.as(a.key, 'post', '/api/admin/webhooks').send({ url: 'http://127.0.0.1:9/hook?token=abc', event_types: ['document.indexed'] }),
        201,
      );
      const endpointId = hook.response.body.id as string;
      expect(hook.row).toMatchObject({
        actor_kind: 'key', actor_id: aKeyId, action: 'webhook.create', target: endpointId, tenant_id: a.id, path: '/api/admin/webhooks', status: 201,
        details: { event_types: ['document.indexed'] },
      });
      const patched = await audited(stack.as(a.key, 'patch', `/api/admin/webhooks/${endpointId}`).send({ enabled: false, description: 'private note' }), 200);
      expect(patched.row).toMatchObject({ action: 'webhook.update', target: endpointId, details: { fields: ['description', 'enabled'], enabled: false } });
      const rotated = await audited(stack.as(a.key, 'post', `/api/admin/webhooks/${endpointId}/rotate-secret`), 200);
      expect(rotated.row).toMatchObject({ action: 'webhook.rotate_secret', target: endpointId, status: 200 });
      // Refused: a second rotation within 24 hours.
      expect((await audited(stack.as(a.key, 'post', `/api/admin/webhooks/${endpointId}/rotate-secret`), 409)).row).toMatchObject({
        action: 'webhook.rotate_secret', target: endpointId, status: 409,
      });
      expect((await audited(stack.as(a.key, 'post', `/api/admin/webhooks/${endpointId}/test`), 409)).row).toMatchObject({ action: 'webhook.test', status: 409 });
      expect((await audited(stack.operator('delete', `/api/admin/webhooks/${endpointId}`, a.id), 204)).row).toMatchObject({
        actor_kind: 'operator', action: 'webhook.delete', target: endpointId, tenant_id: a.id,
      });
      expect((await audited(stack.as(a.key, 'delete', `/api/admin/webhooks/${endpointId}`), 404)).row).toMatchObject({ action: 'webhook.delete', status: 404 });

      const everything = JSON.stringify(await allRows());
      for (const secret of [key.response.body.key, a.key, b.key, hook.response.body.secret, rotated.response.body.secret, 'token=abc', 'private note']) {
        expect(typeof secret).toBe('string');
        expect(everything).not.toContain(secret);
      }
    });

    it('records a change whose client hung up before the answer, once the change is done', async () => {
      const receiver = await startWebhookReceiver();
      try {
        const hook = await stack.as(b.key, 'post', '/api/admin/webhooks').send({ url: receiver.url('/slow') }).expect(201);
        receiver.respond({ status: 200, delayMs: 1_500 });
        const { test, requestId } = traced(stack.as(b.key, 'post', `/api/admin/webhooks/${hook.body.id}/test`).timeout(300));
        await expect(test).rejects.toThrow(/timeout/i);
        const row = await auditOf(requestId);
        expect(row).toMatchObject({ actor_kind: 'key', action: 'webhook.test', target: hook.body.id, tenant_id: b.id, status: 200 });
        // Written once the work was done (the receiver answered), not when the client left.
        expect(receiver.requests).toHaveLength(1);
        expect(new Date(row.at).getTime()).toBeGreaterThanOrEqual(receiver.requests[0].receivedAt + 1_400);
      } finally {
        await receiver.close();
      }
    });

    it('records queue pauses, retries and cache invalidations, with the tenant when there is one', async () => {
      const paused = await audited(stack.operator('post', '/api/admin/queues/indexing/pause'), 200);
      expect(paused.row).toMatchObject({ actor_kind: 'operator', action: 'queue.pause', target: 'indexing', tenant_id: null, path: '/api/admin/queues/:queue/pause', status: 200 });
      expect((await audited(stack.operator('post', '/api/admin/queues/indexing/resume'), 200)).row).toMatchObject({ action: 'queue.resume', target: 'indexing' });

      const bulk = await audited(stack.operator('post', '/api/admin/queues/indexing/retry-failed', a.id).send({ dry_run: true, failed_reason_contains: 'timeout' }), 200);
      expect(bulk.row).toMatchObject({
        action: 'queue.retry_failed', target: 'indexing', tenant_id: a.id,
        details: { dry_run: true, failed_reason_contains: 'timeout', matched: 0, retried: 0 },
      });
      expect((await audited(stack.as(a.key, 'post', '/api/admin/jobs/indexing/no-such-job/retry'), 404)).row).toMatchObject({
        actor_kind: 'key', actor_id: aKeyId, action: 'job.retry', target: 'indexing/no-such-job', tenant_id: a.id, status: 404,
      });
      // A job that is waiting, not failed: refused with 409.
      const document = await stack.as(a.key, 'post', '/api/documents').send({ title: 'Waiting', content: 'Words to index later.' }).expect(202);
      const waiting = await waitFor(async () => {
        const jobs = await stack.operator('get', '/api/admin/jobs?queue=indexing&state=waiting&limit=100').expect(200);
        return jobs.body.items.find((job: { id: string }) => job.id.includes(document.body.id));
      }, { what: 'the indexing job' });
      expect((await audited(stack.operator('post', `/api/admin/jobs/indexing/${waiting.id}/retry`), 409)).row).toMatchObject({
        action: 'job.retry', target: `indexing/${waiting.id}`, tenant_id: null, status: 409,
      });

      const one = await audited(stack.operator('post', '/api/admin/cache/invalidate').send({ tenant_id: b.slug }), 200);
      expect(one.row).toMatchObject({ action: 'cache.invalidate', target: b.id, tenant_id: b.id, tenant_slug: b.slug, details: { tenants: 1 } });
      const every = await audited(stack.operator('post', '/api/admin/cache/invalidate').send({}), 200);
      expect(every.row).toMatchObject({ action: 'cache.invalidate', target: null, tenant_id: null });
      expect((await audited(stack.operator('post', '/api/admin/cache/invalidate').send({ tenant_id: 'no-such-tenant' }), 404)).row).toMatchObject({
        action: 'cache.invalidate', target: 'no-such-tenant', tenant_id: null, status: 404,
      });
    });

    it('records refused mutations with their status: a missing scope, a conflict, invalid input', async () => {
      const reader = await stack.as(a.key, 'post', '/api/admin/api-keys').send({ name: 'writer', scopes: ['documents:write'] }).expect(201);
      const refused = await audited(stack.as(reader.body.key, 'post', '/api/admin/api-keys').send({ name: 'escalate', scopes: ['admin'] }), 403);
      expect(refused.row).toMatchObject({ actor_kind: 'key', actor_id: reader.body.id, action: 'api_key.create', tenant_id: a.id, status: 403, target: null });

      const taken = await audited(stack.operator('post', '/api/admin/tenants').send({ slug: a.slug, name: 'Again' }), 409);
      expect(taken.row).toMatchObject({ action: 'tenant.create', status: 409, target: null, tenant_id: null });

      const invalid = await audited(stack.operator('patch', `/api/admin/tenants/${a.id}`).send({ tier: 'platinum' }), 400);
      expect(invalid.row).toMatchObject({ action: 'tenant.update', status: 400, target: a.id, tenant_id: a.id });
    });

    it("records the operator's document changes and an admin key's, not an ordinary key's, and no reads", async () => {
      const byOperator = await audited(stack.operator('post', '/api/documents', a.id).send({ title: 'Operator', content: 'Put here by the operator.' }), 202);
      expect(byOperator.row).toMatchObject({ actor_kind: 'operator', action: 'document.create', target: byOperator.response.body.id, tenant_id: a.id });
      const byAdmin = await audited(stack.as(a.key, 'delete', `/api/documents/${byOperator.response.body.id}`), 204);
      expect(byAdmin.row).toMatchObject({ actor_kind: 'key', actor_id: aKeyId, action: 'document.delete', target: byOperator.response.body.id });

      const writer = await stack.as(a.key, 'post', '/api/admin/api-keys').send({ name: 'plain writer', scopes: ['documents:write', 'documents:read'] }).expect(201);
      await expectUnaudited([
        stack.as(writer.body.key, 'post', '/api/documents').send({ title: 'Business', content: 'Ordinary data.' }),
        stack.operator('get', '/api/admin/tenants'),
        stack.operator('get', `/api/admin/tenants/${a.id}`),
        stack.as(a.key, 'get', '/api/admin/webhooks'),
        stack.as(a.key, 'get', '/api/admin/audit'),
        // No credential: nobody to record.
        stack.operator('post', '/api/admin/queues/indexing/pause').set('Authorization', 'Bearer wrong'),
      ]);
    });
  });

  describe('reading it', () => {
    const seeded: AuditRow[] = [];
    const seedTarget = `seed-${randomUUID()}`;

    beforeAll(async () => {
      const entries: AuditEntry[] = [];
      for (let index = 0; index < 25; index++) {
        const onA = index % 2 === 0;
        entries.push({
          actor: index % 3 === 0 ? { kind: 'operator', sessionId: 'session-1' } : { kind: 'key', keyId: onA ? aKeyId : 'other-key' },
          action: index % 5 === 0 ? 'seed.delete' : 'seed.update',
          tenantId: index % 7 === 6 ? null : onA ? a.id : b.id,
          target: seedTarget,
          status: index % 4 === 0 ? 403 : 200,
          method: 'POST',
          path: '/api/admin/seed',
          requestId: `seed-${index}`,
        });
      }
      // One at a time: ids are time-ordered, so the order of writing is the order of reading.
      for (const entry of entries) await recordAudit(stack.platform.db.knex, entry);
      const rows = await stack.sql((db) => db('audit_log').where({ target: seedTarget }).orderBy('id', 'desc'));
      seeded.push(...rows.map((row) => ({ ...row, at: row.at.toISOString() })));
      expect(seeded).toHaveLength(25);
    });

    async function readAll(query: string, as?: (url: string) => request.Test): Promise<AuditRow[]> {
      const items: AuditRow[] = [];
      let cursor: string | null = null;
      for (let pages = 0; pages < 20; pages++) {
        const url: string = `/api/admin/audit?target=${seedTarget}&limit=4&${query}${cursor ? `&cursor=${cursor}` : ''}`;
        const response = await (as ? as(url) : stack.operator('get', url)).expect(200);
        items.push(...response.body.items);
        cursor = response.body.next_cursor;
        if (!cursor) return items;
        expect(response.body.items).toHaveLength(4);
      }
      throw new Error('the cursor never ended');
    }

    const ids = (rows: AuditRow[]) => rows.map((row) => row.id);

    it('pages newest first with a cursor, every row once', async () => {
      const everything = await readAll('');
      expect(ids(everything)).toEqual(ids(seeded));
      expect(everything[0]).toMatchObject({ path: '/api/admin/seed', method: 'POST', details: {} });
    });

    it('filters by actor, action, tenant, status class and time', async () => {
      expect(ids(await readAll('actor_kind=operator'))).toEqual(ids(seeded.filter((row) => row.actor_kind === 'operator')));
      expect(ids(await readAll('actor_id=session-1'))).toEqual(ids(seeded.filter((row) => row.actor_id === 'session-1')));
      expect(ids(await readAll(`actor_id=${aKeyId}&actor_kind=key`))).toEqual(ids(seeded.filter((row) => row.actor_id === aKeyId)));
      expect(ids(await readAll('action=seed.delete'))).toEqual(ids(seeded.filter((row) => row.action === 'seed.delete')));
      expect(ids(await readAll('action=seed.*'))).toEqual(ids(seeded));
      expect(await readAll('action=seed')).toEqual([]);
      expect(ids(await readAll(`tenant=${b.id}`))).toEqual(ids(seeded.filter((row) => row.tenant_id === b.id)));
      expect(ids(await readAll(`tenant=${a.slug}`))).toEqual(ids(seeded.filter((row) => row.tenant_id === a.id)));
      expect(ids(await readAll('status_class=4xx'))).toEqual(ids(seeded.filter((row) => row.status === 403)));
      expect(ids(await readAll('status_class=2xx'))).toEqual(ids(seeded.filter((row) => row.status === 200)));

      const middle = seeded[12].at;
      const since = await readAll(`since=${encodeURIComponent(middle)}`);
      expect(since.length).toBeGreaterThan(0);
      expect(since.every((row) => row.at >= middle)).toBe(true);
      const until = await readAll(`until=${encodeURIComponent(middle)}`);
      expect(until.every((row) => row.at < middle)).toBe(true);
      expect(since.length + until.length).toBe(25);
    });

    it("shows a tenant admin key its tenant's rows only, the operator one tenant on request, and refuses keys without the admin scope", async () => {
      const mine = await readAll('', (url) => stack.as(a.key, 'get', url));
      expect(ids(mine)).toEqual(ids(seeded.filter((row) => row.tenant_id === a.id)));
      // The tenant sees that the operator acted, not which session it was nor from where.
      const byOperator = mine.filter((row) => row.actor_kind === 'operator');
      expect(byOperator.length).toBeGreaterThan(0);
      expect(byOperator.every((row) => row.actor_id === null && row.ip === null)).toBe(true);
      expect(mine.filter((row) => row.actor_kind === 'key').every((row) => row.actor_id === aKeyId)).toBe(true);
      // Asking for another tenant's rows finds none.
      expect(await readAll(`tenant=${b.id}`, (url) => stack.as(a.key, 'get', url))).toEqual([]);
      const everyAOf = await stack.as(a.key, 'get', '/api/admin/audit?limit=100').expect(200);
      expect(everyAOf.body.items.length).toBeGreaterThan(0);
      expect(everyAOf.body.items.every((row: AuditRow) => row.tenant_id === a.id)).toBe(true);

      const named = await readAll('', (url) => stack.operator('get', url, b.slug));
      expect(ids(named)).toEqual(ids(seeded.filter((row) => row.tenant_id === b.id)));

      const keysOnly = await stack.as(a.key, 'post', '/api/admin/api-keys').send({ name: 'keys', scopes: ['keys:manage', 'webhooks:manage', 'jobs:manage'] }).expect(201);
      const refused = await stack.as(keysOnly.body.key, 'get', '/api/admin/audit').expect(403);
      expect(refused.body.error.code).toBe('forbidden');
    });

    it('refuses a cursor it did not issue and a malformed filter', async () => {
      const cursor = await stack.operator('get', '/api/admin/audit?cursor=bm90LWFuLWlk').expect(400);
      expect(cursor.body.error).toMatchObject({ code: 'validation_failed' });
      const status = await stack.operator('get', '/api/admin/audit?status_class=6xx').expect(400);
      expect(status.body.error.details.issues[0].field).toBe('query.status_class');
      await stack.operator('get', '/api/admin/audit?since=yesterday').expect(400);
    });
  });

  it('names the audit action of every mutating admin route, and says it in the OpenAPI document', async () => {
    const document = await stack.operator('get', '/api/openapi.json').expect(200);
    const unnamed: string[] = [];
    let mutations = 0;
    for (const [path, operations] of Object.entries(document.body.paths as Record<string, Record<string, { 'x-audit-action'?: string }>>)) {
      for (const [method, operation] of Object.entries(operations)) {
        if (!['post', 'patch', 'put', 'delete'].includes(method) || !path.startsWith('/api/admin/')) continue;
        mutations++;
        if (!/^[a-z_]+\.[a-z_]+$/.test(operation['x-audit-action'] ?? '')) unnamed.push(`${method.toUpperCase()} ${path}: ${operation['x-audit-action']}`);
      }
    }
    expect(unnamed).toEqual([]);
    expect(mutations).toBeGreaterThanOrEqual(15);
    expect(document.body.paths['/api/admin/tenants'].get['x-audit-action']).toBeUndefined();
  });
});
