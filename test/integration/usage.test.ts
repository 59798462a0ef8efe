import { randomUUID } from 'node:crypto';
import knexFactory, { type Knex } from 'knex';
import { usageQueue, type PayloadOf } from '../../queues';
import type { Tier } from '../../src/domain/tenants/quotas';
import { addDays, dayOf } from '../../src/domain/usage/days';
import { reconcileUsage } from '../../src/domain/usage/reconcile';
import { rollUpTenantUsage, usageTenant, type RollupSettings } from '../../src/domain/usage/rollup';
import { SCHEDULES, tickOf } from '../../workers/scheduler';
import { parseCsv } from '../helpers/csv';
import { uniqueName } from '../helpers/databases';
import { startStack, type TestStack } from '../helpers/harness';
import { startRagworks, unusedPort } from '../helpers/processes';
import { waitFor } from '../helpers/wait';

// Usage rollups, their close, billing statements, the usage endpoints and the
// nightly reconciliation, on PostgreSQL. Raw rows are back-dated through an
// owner connection (past row-level security); rollups and reconciliations
// are called with explicit times to play through days and closes.

const TODAY = dayOf(new Date());
const at = (day: string, time = '12:00:00.000') => new Date(`${day}T${time}Z`);

/** The counters one raw row adds one to. */
const COUNTED_ROWS = ['documents_created', 'documents_deleted', 'searches', 'index_jobs', 'webhook_deliveries', 'answers'] as const;
type CountedRow = (typeof COUNTED_ROWS)[number];
/** Every counter, in the billing export's order: each answer row also adds its tokens. */
const COUNTER_COLUMNS = [...COUNTED_ROWS, 'answer_prompt_tokens', 'answer_completion_tokens'] as const;
type CounterColumn = (typeof COUNTER_COLUMNS)[number];
const ANSWER_TOKENS = { prompt: 12, completion: 5 } as const;

/** Inserts raw rows of every source the rollup counts, as the application would have stored them. */
class RawData {
  private endpoints = new Map<string, string>();

  constructor(private readonly owner: Knex) {}

  async documentEvent(tenantId: string, type: 'document.created' | 'document.deleted', when: Date) {
    await this.owner('webhook_events').insert({ id: randomUUID(), tenant_id: tenantId, type, payload: '{}', created_at: when, fanned_out_at: when });
  }

  async search(tenantId: string, when: Date) {
    await this.owner('search_events').insert({
      id: `evt-${randomUUID()}`, tenant_id: tenantId, query_id: randomUUID(), query: 'q', query_normalized: 'q', mode: 'keyword',
      result_count: 1, took_ms: 1, cached: false, created_at: when,
    });
  }

  async answer(tenantId: string, when: Date) {
    await this.owner('answer_events').insert({
      query_id: randomUUID(), tenant_id: tenantId, question: 'q', model: 'm', passages: 1, cited: 1,
      prompt_tokens: ANSWER_TOKENS.prompt, completion_tokens: ANSWER_TOKENS.completion, took_ms: 1, cached: false, streamed: false, created_at: when,
    });
  }

  async indexJob(tenantId: string, when: Date) {
    await this.owner('index_jobs').insert({ id: randomUUID(), tenant_id: tenantId, documents_total: 1, created_at: when });
  }

  async delivery(tenantId: string, when: Date) {
    let endpointId = this.endpoints.get(tenantId);
    if (!endpointId) {
      endpointId = randomUUID();
      await this.owner('webhook_endpoints').insert({ id: endpointId, tenant_id: tenantId, url: 'https://hooks.example.com/usage', secret: 'whsec_test' });
      this.endpoints.set(tenantId, endpointId);
    }
    const eventId = randomUUID();
    await this.owner('webhook_events').insert({ id: eventId, tenant_id: tenantId, type: 'document.indexed', payload: '{}', created_at: when, fanned_out_at: when });
    await this.owner('webhook_deliveries').insert({
      id: randomUUID(), tenant_id: tenantId, event_id: eventId, endpoint_id: endpointId, event_type: 'document.indexed', origin: 'event',
      status: 'succeeded', attempts: 1, created_at: when, updated_at: when,
    });
  }

  async add(tenantId: string, counter: CountedRow, when: Date) {
    switch (counter) {
      case 'documents_created':
        return this.documentEvent(tenantId, 'document.created', when);
      case 'documents_deleted':
        return this.documentEvent(tenantId, 'document.deleted', when);
      case 'searches':
        return this.search(tenantId, when);
      case 'index_jobs':
        return this.indexJob(tenantId, when);
      case 'webhook_deliveries':
        return this.delivery(tenantId, when);
      case 'answers':
        return this.answer(tenantId, when);
    }
  }

  /** A stored document: the trigger-kept counters (documents, storage) and the chunk gauge see it. */
  async document(tenantId: string, bytes: number, chunks: number): Promise<string> {
    const id = randomUUID();
    await this.owner('documents').insert({
      id, tenant_id: tenantId, title: 'doc', content: 'x', content_type: 'text', status: 'indexed', content_bytes: bytes, chunk_count: chunks,
    });
    return id;
  }

  async deleteDocument(id: string) {
    await this.owner('documents').where({ id }).delete();
  }
}

async function openOwner(stack: TestStack): Promise<Knex> {
  return knexFactory({ client: 'pg', connection: stack.env.MIGRATION_DATABASE_URL ?? stack.env.DATABASE_URL, pool: { min: 0, max: 2 } });
}

/** The stored row of one tenant-day, as the owner sees it. */
async function usageRow(owner: Knex, tenantId: string, day: string): Promise<Record<string, unknown> | undefined> {
  return owner('usage_daily').first('*', owner.raw(`to_char(day, 'YYYY-MM-DD') as day`)).where({ tenant_id: tenantId, day });
}

const countersOf = (row: Record<string, unknown> | undefined) => Object.fromEntries(COUNTER_COLUMNS.map((column) => [column, Number(row?.[column])]));

/**
 * A tenant whose history starts `days` ago, so rollups played in the past
 * have days to cover. Standard tier: its raw rows are recountable for 30 days
 * (the webhook log's retention).
 */
async function tenantSince(stack: TestStack, owner: Knex, days: number, tier: Tier = 'standard') {
  const tenant = await stack.createTenant(uniqueName('t').replace(/_/g, '-'), tier);
  await owner('tenants').where({ id: tenant.id }).update({ created_at: at(addDays(TODAY, -days), '00:00:00.000') });
  return tenant;
}

describe('usage rollups, billing and the usage endpoints (postgres)', () => {
  let stack: TestStack;
  let owner: Knex;
  let raw: RawData;
  let settings: RollupSettings;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres' });
    owner = await openOwner(stack);
    raw = new RawData(owner);
    settings = { graceMinutes: stack.config.USAGE_DAY_CLOSE_GRACE_MINUTES, webhookLogDays: stack.config.WEBHOOK_LOG_RETENTION_DAYS };
  });
  afterAll(async () => {
    await owner?.destroy();
    await stack?.close();
  });

  const rollUp = async (tenantId: string, now: Date) => rollUpTenantUsage(stack.platform.db.knex, (await usageTenant(stack.platform.db.knex, tenantId))!, now, settings);

  it('counts the exact UTC day, gives the same row on a re-run, counts a late event before the close, and never changes a closed day', async () => {
    expect(settings.graceMinutes).toBe(120);
    const tenant = await tenantSince(stack, owner, 20);
    const day = addDays(TODAY, -3);
    const next = addDays(day, 1);
    await raw.documentEvent(tenant.id, 'document.created', at(day, '00:00:00.000'));
    await raw.documentEvent(tenant.id, 'document.created', at(day, '10:00:00.000'));
    await raw.documentEvent(tenant.id, 'document.deleted', at(day, '23:59:59.999'));
    for (const time of ['01:00:00.000', '09:00:00.000', '11:30:00.000']) await raw.search(tenant.id, at(day, time));
    await raw.indexJob(tenant.id, at(day, '08:00:00.000'));
    await raw.delivery(tenant.id, at(day, '06:00:00.000'));
    await raw.delivery(tenant.id, at(day, '07:00:00.000'));
    // Just outside the day on either side.
    await raw.search(tenant.id, at(addDays(day, -1), '23:59:59.999'));
    await raw.search(tenant.id, at(next, '00:00:00.000'));
    await raw.document(tenant.id, 1_000, 4);

    const first = await rollUp(tenant.id, at(day, '12:00:00.000'));
    expect(first.written).toContain(day);
    expect(first.closed).not.toContain(day);
    const sampled = await usageRow(owner, tenant.id, day);
    expect(sampled).toMatchObject({
      documents_created: 2, documents_deleted: 1, searches: 3, index_jobs: 1, webhook_deliveries: 2,
      documents: 1, storage_bytes: 1_000, chunks: 4, closed_at: null,
    });
    expect(sampled!.gauges_sampled_at).toEqual(at(day, '12:00:00.000'));
    expect(countersOf(await usageRow(owner, tenant.id, addDays(day, -1)))).toMatchObject({ searches: 1 });

    // The same run again: the same row, to the last column.
    await rollUp(tenant.id, at(day, '12:00:00.000'));
    expect(await usageRow(owner, tenant.id, day)).toEqual(sampled);

    // A later run the same day: the same counters, a fresh gauge sample.
    await raw.document(tenant.id, 500, 2);
    await rollUp(tenant.id, at(day, '18:00:00.000'));
    const evening = await usageRow(owner, tenant.id, day);
    expect(countersOf(evening)).toEqual(countersOf(sampled));
    expect(evening).toMatchObject({ documents: 2, storage_bytes: 1_500, chunks: 6, closed_at: null });

    // The 13:00 tick's job, running late, does not replace the 18:00 sample.
    await raw.document(tenant.id, 250, 1);
    await rollUp(tenant.id, at(day, '13:00:00.000'));
    expect(await usageRow(owner, tenant.id, day)).toMatchObject({ documents: 2, storage_bytes: 1_500, chunks: 6, gauges_sampled_at: at(day, '18:00:00.000') });

    // A search from 11:45 reaches the database after midnight: counted by the next run, before the close.
    await raw.search(tenant.id, at(day, '11:45:00.000'));
    await rollUp(tenant.id, at(next, '01:59:59.000'));
    const late = await usageRow(owner, tenant.id, day);
    expect(late).toMatchObject({ searches: 4, closed_at: null });
    // A run after the day's end does not sample it: the gauges stay those of 18:00.
    expect(late).toMatchObject({ documents: 2, storage_bytes: 1_500, chunks: 6 });
    expect(late!.gauges_sampled_at).toEqual(at(day, '18:00:00.000'));

    // The close: end of day + 120 minutes.
    const closing = await rollUp(tenant.id, at(next, '02:00:00.000'));
    expect(closing.closed).toContain(day);
    const closed = await usageRow(owner, tenant.id, day);
    expect(closed).toMatchObject({ documents_created: 2, documents_deleted: 1, searches: 4, index_jobs: 1, webhook_deliveries: 2, documents: 2, storage_bytes: 1_500, chunks: 6 });
    expect(closed!.closed_at).toEqual(at(next, '02:00:00.000'));
    expect((await usageRow(owner, tenant.id, next))!.closed_at).toBeNull();

    // After the close: late events and re-runs change nothing.
    await raw.search(tenant.id, at(day, '15:00:00.000'));
    await raw.documentEvent(tenant.id, 'document.created', at(day, '16:00:00.000'));
    await raw.document(tenant.id, 100, 1);
    for (const now of [at(next, '05:00:00.000'), at(addDays(day, 2), '12:00:00.000'), at(TODAY)]) {
      const run = await rollUp(tenant.id, now);
      expect(run.written).not.toContain(day);
      expect(await usageRow(owner, tenant.id, day)).toEqual(closed);
    }

    // The billing statement shows the day as closed, with the closed numbers.
    const statement = await stack.operator('get', `/api/admin/tenants/${tenant.id}/billing?start=${day}&end=${day}`).expect(200);
    expect(statement.body.days).toEqual([
      expect.objectContaining({ day, closed: true, closed_at: at(next, '02:00:00.000').toISOString(), searches: 4, documents_created: 2 }),
    ]);
    expect(statement.body.final).toBe(true);
  });

  it('never reopens a day that another run closed while this one was under way', async () => {
    const tenant = await tenantSince(stack, owner, 20);
    const day = addDays(TODAY, -6);
    const next = addDays(day, 1);
    await raw.search(tenant.id, at(day, '10:00:00.000'));
    await rollUp(tenant.id, at(day, '12:00:00.000'));

    // The closing run holds the day's row while it commits; meanwhile the previous tick's job, running
    // late, finds the day open and tries to write it.
    const closing = await owner.transaction();
    await closing('usage_daily').where({ tenant_id: tenant.id, day }).forUpdate().first();
    const late = rollUp(tenant.id, at(next, '01:00:00.000'));
    await waitFor(
      async () => (await owner.raw(`select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`)).rows[0].n > 0,
      { what: 'the late run to wait for the row' },
    );
    await closing('usage_daily').where({ tenant_id: tenant.id, day }).update({ closed_at: at(next, '02:00:00.000') });
    await closing.commit();
    const result = await late;

    expect(result.written).not.toContain(day);
    const row = await usageRow(owner, tenant.id, day);
    expect(row!.closed_at).toEqual(at(next, '02:00:00.000'));
    expect(row!.computed_at).toEqual(at(day, '12:00:00.000'));
  });

  it('closes a day that never had a sample with the gauges at the close', async () => {
    const tenant = await tenantSince(stack, owner, 20);
    const day = addDays(TODAY, -4);
    const next = addDays(day, 1);
    await raw.search(tenant.id, at(day, '10:00:00.000'));
    await raw.document(tenant.id, 300, 3);

    // First run after the day ended, before its close: counters, no gauges.
    await rollUp(tenant.id, at(next, '01:00:00.000'));
    expect(await usageRow(owner, tenant.id, day)).toMatchObject({ searches: 1, documents: null, storage_bytes: null, chunks: null, gauges_sampled_at: null, closed_at: null });

    await raw.document(tenant.id, 700, 2);
    await rollUp(tenant.id, at(next, '03:00:00.000'));
    const closed = await usageRow(owner, tenant.id, day);
    expect(closed).toMatchObject({ searches: 1, documents: 2, storage_bytes: 1_000, chunks: 5 });
    expect(closed!.gauges_sampled_at).toEqual(at(next, '03:00:00.000'));
    expect(closed!.closed_at).toEqual(at(next, '03:00:00.000'));
  });

  it('closes an open day that has fallen out of the recountable window as it stands', async () => {
    // Free tier: search events are kept 7 days, so a day older than that cannot be recounted.
    const tenant = await tenantSince(stack, owner, 20, 'free');
    const day = addDays(TODAY, -10);
    await raw.search(tenant.id, at(day, '09:00:00.000'));
    await raw.document(tenant.id, 42, 1);
    await rollUp(tenant.id, at(day, '12:00:00.000'));
    const open = await usageRow(owner, tenant.id, day);
    expect(open).toMatchObject({ searches: 1, documents: 1, closed_at: null });

    // The rollup was down for ten days; meanwhile a late event for the day arrived.
    await raw.search(tenant.id, at(day, '10:00:00.000'));
    const run = await rollUp(tenant.id, at(TODAY));
    expect(run.closed).toContain(day);
    expect(await usageRow(owner, tenant.id, day)).toEqual({ ...open, closed_at: at(TODAY) });
    // Days inside the window are recounted and closed as usual; older missing days are not invented.
    expect(await usageRow(owner, tenant.id, addDays(TODAY, -6))).toMatchObject({ closed_at: at(TODAY) });
    expect(await usageRow(owner, tenant.id, addDays(TODAY, -7))).toBeUndefined();
  });

  it('bills totals equal to the raw counts over generated days, the same in JSON and CSV', async () => {
    const tenant = await tenantSince(stack, owner, 20);
    const days = [5, 4, 3, 2].map((back) => addDays(TODAY, -back));
    // Deterministic, uneven counts per day and counter, at times spread over the day.
    const expected = Object.fromEntries(COUNTER_COLUMNS.map((column) => [column, 0])) as Record<CounterColumn, number>;
    const perDay: Array<Record<CounterColumn, number>> = [];
    for (const [index, day] of days.entries()) {
      const counts = {} as Record<CounterColumn, number>;
      for (const [position, column] of COUNTED_ROWS.entries()) {
        const count = ((index * 7 + position * 3) % 5) + (column === 'searches' ? 4 : 0);
        counts[column] = count;
        expected[column] += count;
        for (let n = 0; n < count; n += 1) {
          const minute = (n * 197 + position * 61 + index * 13) % 1440;
          await raw.add(tenant.id, column, at(day, `${String(Math.floor(minute / 60)).padStart(2, '0')}:${String(minute % 60).padStart(2, '0')}:00.000`));
        }
      }
      counts.answer_prompt_tokens = counts.answers * ANSWER_TOKENS.prompt;
      counts.answer_completion_tokens = counts.answers * ANSWER_TOKENS.completion;
      perDay.push(counts);
    }
    expected.answer_prompt_tokens = expected.answers * ANSWER_TOKENS.prompt;
    expected.answer_completion_tokens = expected.answers * ANSWER_TOKENS.completion;
    // Rows on the neighbouring days, outside the statement.
    for (const column of COUNTED_ROWS) {
      await raw.add(tenant.id, column, at(addDays(days[0], -1), '23:59:59.999'));
      await raw.add(tenant.id, column, at(addDays(days[3], 1), '00:00:00.000'));
    }

    // One run at noon each day, documents held changing between them (1, 2, 3, then 1), then the closing run.
    const documents: string[] = [];
    for (const [index, day] of days.entries()) {
      if (index < 3) documents.push(await raw.document(tenant.id, 100 * (index + 1), index + 1));
      else for (const id of documents.splice(1)) await raw.deleteDocument(id);
      await rollUp(tenant.id, at(day, '12:00:00.000'));
    }
    await rollUp(tenant.id, at(addDays(days[3], 1), '03:00:00.000'));

    // What the raw tables hold for the period, counted independently of the rollup.
    const from = at(days[0], '00:00:00.000');
    const until = at(addDays(days[3], 1), '00:00:00.000');
    const inPeriod = (table: string, where: Record<string, string> = {}) =>
      owner(table).where({ tenant_id: tenant.id, ...where }).where('created_at', '>=', from).where('created_at', '<', until);
    const count = async (table: string, where: Record<string, string> = {}) => Number((await inPeriod(table, where).count({ n: '*' }))[0].n);
    const sum = async (table: string, column: string) => Number((await inPeriod(table).sum({ n: column }))[0].n);
    expect({
      documents_created: await count('webhook_events', { type: 'document.created' }),
      documents_deleted: await count('webhook_events', { type: 'document.deleted' }),
      searches: await count('search_events'),
      index_jobs: await count('index_jobs'),
      webhook_deliveries: await count('webhook_deliveries'),
      answers: await count('answer_events'),
      answer_prompt_tokens: await sum('answer_events', 'prompt_tokens'),
      answer_completion_tokens: await sum('answer_events', 'completion_tokens'),
    }).toEqual(expected);

    const json = await stack.operator('get', `/api/admin/tenants/${tenant.slug}/billing?start=${days[0]}&end=${days[3]}&format=json`).expect(200);
    expect(json.body).toMatchObject({ tenant_id: tenant.id, start: days[0], end: days[3], final: true });
    expect(json.body.days.map((row: { day: string; closed: boolean }) => [row.day, row.closed])).toEqual(days.map((day) => [day, true]));
    for (const [index, row] of json.body.days.entries()) expect(row).toMatchObject(perDay[index]);
    // Counters are summed, gauges peak: storage 100+200+300 on the third day, documents 3 then.
    expect(json.body.totals).toEqual({ ...expected, documents: 3, storage_bytes: 600, chunks: 6 });
    expect(json.body.days.map((row: { documents: number }) => row.documents)).toEqual([1, 2, 3, 1]);

    const csv = await stack.operator('get', `/api/admin/tenants/${tenant.id}/billing?start=${days[0]}&end=${days[3]}&format=csv`).expect(200);
    expect(csv.headers['content-type']).toMatch(/^text\/csv/);
    const [header, ...records] = parseCsv(csv.text);
    expect(header).toEqual(['day', 'closed', 'closed_at', 'computed_at', ...COUNTER_COLUMNS, 'documents', 'storage_bytes', 'chunks', 'gauges_sampled_at']);
    expect(records).toHaveLength(days.length + 1);
    const asObjects = records.map((record) => Object.fromEntries(header.map((column, index) => [column, record[index]])));
    for (const [index, row] of json.body.days.entries()) {
      expect(asObjects[index]).toEqual(Object.fromEntries(header.map((column) => [column, row[column] === null ? '' : String(row[column])])));
    }
    const total = asObjects[days.length];
    expect(total).toMatchObject({ day: 'total', closed: 'true', documents: '3', storage_bytes: '600', chunks: '6' });
    for (const column of COUNTER_COLUMNS) expect(Number(total[column])).toBe(expected[column]);

    // A period reaching today is not final: today is open.
    const open = await stack.operator('get', `/api/admin/tenants/${tenant.id}/billing?start=${days[0]}&end=${TODAY}`).expect(200);
    expect(open.body.final).toBe(false);
  });

  it('refuses a bad billing period with 400, an unknown tenant with 404, and anyone but the operator with 403', async () => {
    const tenant = await stack.createTenant();
    const billing = (query: string) => stack.operator('get', `/api/admin/tenants/${tenant.id}/billing?${query}`);
    for (const query of [
      'start=2026-03-10&end=2026-03-01',
      'start=2025-01-01&end=2026-01-02',
      'start=2026-02-30&end=2026-03-01',
      'start=2026-03-01',
      'start=20260301&end=2026-03-02',
      'start=2026-03-01&end=2026-03-02&format=xml',
    ]) {
      const response = await billing(query);
      expect([query, response.status, response.body.error?.code]).toEqual([query, 400, 'validation_failed']);
    }
    await billing('start=2025-01-01&end=2026-01-01').expect(200);
    await stack.operator('get', `/api/admin/tenants/${randomUUID()}/billing?start=2026-03-01&end=2026-03-02`).expect(404);
    await stack.as(tenant.key, 'get', `/api/admin/tenants/${tenant.id}/billing?start=2026-03-01&end=2026-03-02`).expect(403);
  });

  it("shows each quota's use against its limit, to the tenant and the operator, and never another tenant's", async () => {
    const tenant = await stack.createTenant(uniqueName('t').replace(/_/g, '-'), 'free');
    const other = await stack.createTenant();
    const contents = ['# Usage\n\nFirst document about usage.', 'Second document, with ümlauts.'];
    for (const [index, content] of contents.entries()) {
      await stack.as(tenant.key, 'post', '/api/documents').send({ title: `Doc ${index}`, content, content_type: 'markdown' }).expect(202);
    }
    const bytes = contents.reduce((sum, content) => sum + Buffer.byteLength(content, 'utf8'), 0);
    const extra = await stack.as(tenant.key, 'post', '/api/admin/api-keys').send({ name: 'extra', scopes: ['search'] }).expect(201);
    await stack.as(tenant.key, 'delete', `/api/admin/api-keys/${extra.body.id}`).expect(204);
    await stack.as(tenant.key, 'post', '/api/admin/webhooks').send({ url: 'https://hooks.example.com/usage' }).expect(201);
    await stack.as(tenant.key, 'post', '/api/search').send({ query: 'usage', mode: 'keyword' }).expect(200);
    await stack.as(tenant.key, 'post', '/api/search').send({ query: 'document', mode: 'keyword' }).expect(200);

    const mine = await stack.as(tenant.key, 'get', '/api/admin/usage').expect(200);
    expect(mine.body).toEqual({
      tenant_id: tenant.id,
      day: TODAY,
      quotas: {
        documents: { used: 2, limit: 100, remaining: 98 },
        storage_mb: { used: 0.001, used_bytes: bytes, limit: 100, remaining: 99.999 },
        searches_per_day: { used: 2, limit: 1_000, remaining: 998 },
        answers_per_day: { used: 0, limit: 50, remaining: 50 },
        api_keys: { used: 1, limit: 2, remaining: 1 },
        webhook_endpoints: { used: 1, limit: 1, remaining: 0 },
      },
      today: null,
    });

    // After a rollup, today's row is part of the answer.
    await rollUp(tenant.id, new Date());
    const withToday = await stack.as(tenant.key, 'get', '/api/admin/usage').expect(200);
    expect(withToday.body.today).toMatchObject({ day: TODAY, closed: false, documents_created: 2, documents: 2, storage_bytes: bytes });

    // The operator: by path, and with X-Tenant-Id.
    const byPath = await stack.operator('get', `/api/admin/tenants/${tenant.slug}/usage`).expect(200);
    expect(byPath.body).toEqual(withToday.body);
    const byHeader = await stack.operator('get', '/api/admin/usage', tenant.id).expect(200);
    expect(byHeader.body).toEqual(withToday.body);
    await stack.operator('get', '/api/admin/usage').expect(400);
    await stack.operator('get', `/api/admin/tenants/${randomUUID()}/usage`).expect(404);

    // Another tenant's key sees only its own tenant, whatever it names.
    const unlimited = await stack.as(other.key, 'get', '/api/admin/usage').set('X-Tenant-Id', tenant.id).expect(200);
    expect(unlimited.body.tenant_id).toBe(other.id);
    expect(unlimited.body.quotas.documents).toEqual({ used: 0, limit: null, remaining: null });
    await stack.as(other.key, 'get', `/api/admin/tenants/${tenant.id}/usage`).expect(403);
    // A key without analytics:read gets nothing.
    const searchOnly = await stack.as(tenant.key, 'post', '/api/admin/api-keys').send({ name: 'search only', scopes: ['search'] }).expect(201);
    await stack.as(searchOnly.body.key, 'get', '/api/admin/usage').expect(403);
  });
});

describe('usage reconciliation and the scheduled rollup (postgres, through the usage queue)', () => {
  let stack: TestStack;
  let owner: Knex;
  let raw: RawData;
  let settings: RollupSettings;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres' });
    owner = await openOwner(stack);
    raw = new RawData(owner);
    settings = { graceMinutes: stack.config.USAGE_DAY_CLOSE_GRACE_MINUTES, webhookLogDays: stack.config.WEBHOOK_LOG_RETENTION_DAYS };
  });
  afterAll(async () => {
    await owner?.destroy();
    await stack?.close();
  });

  const rollUp = async (tenantId: string, now: Date) => rollUpTenantUsage(stack.platform.db.knex, (await usageTenant(stack.platform.db.knex, tenantId))!, now, settings);

  /** Runs a job through the real queue and worker and returns its result. */
  async function runJob(payload: PayloadOf<typeof usageQueue>) {
    const jobId = await stack.platform.queues.enqueue(usageQueue, payload);
    const queue = stack.platform.queues.queue('usage');
    return waitFor(
      async () => {
        const job = await queue.getJob(jobId);
        const state = await job?.getState();
        if (state === 'failed') throw new Error(`job ${jobId} failed: ${job!.failedReason}`);
        return state === 'completed' ? job!.returnvalue : null;
      },
      { what: `usage job ${jobId}` },
    );
  }

  async function metricValue(name: string, labels: string): Promise<number | undefined> {
    const text = (await stack.operator('get', '/metrics').expect(200)).text;
    const line = text.split('\n').find((candidate) => candidate.startsWith(`${name}${labels} `));
    return line === undefined ? undefined : Number(line.split(' ')[1]);
  }

  const reconcileAt = at(TODAY, '04:15:00.000');
  const d1 = addDays(TODAY, -3);
  const d2 = addDays(TODAY, -2);
  let tenantId: string;

  it('reports no drift on clean data, then the drift of a tampered row and of an event that came after the close', async () => {
    await stack.operator('get', '/api/admin/usage/reconciliation').expect(404);
    const tenant = await tenantSince(stack, owner, 20);
    tenantId = tenant.id;
    for (const day of [d1, d2]) {
      for (const column of COUNTED_ROWS) {
        await raw.add(tenant.id, column, at(day, '09:00:00.000'));
        await raw.add(tenant.id, column, at(day, '21:00:00.000'));
      }
    }
    await rollUp(tenant.id, at(d2, '12:00:00.000'));
    await rollUp(tenant.id, reconcileAt);

    const clean = await runJob({ kind: 'reconcile', tick: reconcileAt.toISOString() });
    expect(clean).toMatchObject({ tenants: 1, tenant_days: 20, drifting_tenant_days: 0, unclosed_tenant_days: 0, findings: 0 });
    for (const column of COUNTER_COLUMNS) expect(await metricValue('ragworks_usage_drift', `{metric="${column}"}`)).toBe(0);
    expect(await metricValue('ragworks_usage_drift_tenant_days', '{kind="drifting"}')).toBe(0);
    expect(await metricValue('ragworks_usage_reconciliation_timestamp_seconds', '')).toBe(reconcileAt.getTime() / 1000);

    // Someone edits a billed row; a search of d2 reaches the database after d2 was closed.
    await owner('usage_daily').where({ tenant_id: tenant.id, day: d1 }).update({ searches: owner.raw('searches + 5') });
    await raw.search(tenant.id, at(d2, '22:00:00.000'));
    await rollUp(tenant.id, reconcileAt);
    expect(countersOf(await usageRow(owner, tenant.id, d2)).searches).toBe(2);

    // A new tick: the same tick's job id would be the completed job.
    const later = new Date(reconcileAt.getTime() + 60_000);
    const drifting = await runJob({ kind: 'reconcile', tick: later.toISOString() });
    expect(drifting).toMatchObject({ drifting_tenant_days: 2, drift: { searches: 6, documents_created: 0, index_jobs: 0 } });
    expect(await metricValue('ragworks_usage_drift', '{metric="searches"}')).toBe(6);
    expect(await metricValue('ragworks_usage_drift', '{metric="index_jobs"}')).toBe(0);
    expect(await metricValue('ragworks_usage_drift_tenant_days', '{kind="drifting"}')).toBe(2);
    // Another process, which ran no reconciliation, exports the same figures: they are read from the stored report.
    const port = await unusedPort();
    const web = startRagworks('web', { ...stack.env, PORT: String(port), LOG_LEVEL: 'info' });
    try {
      await web.waitForMessage('api listening');
      const scraped = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(scraped).toMatch(/^ragworks_usage_drift\{metric="searches"\} 6$/m);
      expect(scraped).toMatch(/^ragworks_usage_drift_tenant_days\{kind="drifting"\} 2$/m);
    } finally {
      await web.stop();
    }

    const report = await stack.operator('get', '/api/admin/usage/reconciliation').expect(200);
    expect(report.body).toMatchObject({ ran_at: later.toISOString(), drifting_tenant_days: 2, drift: { searches: 6 } });
    expect(report.body.findings).toEqual([
      { kind: 'drift', tenant_id: tenant.id, day: d1, metric: 'searches', rollup: 7, raw: 2 },
      { kind: 'drift', tenant_id: tenant.id, day: d2, metric: 'searches', rollup: 2, raw: 3 },
    ]);
    // The reconciliation reports; it never rewrites a closed day.
    expect(countersOf(await usageRow(owner, tenant.id, d1)).searches).toBe(7);
    const tenantKey = (await stack.operator('post', '/api/admin/api-keys', tenant.id).send({ name: 'k', scopes: ['admin'] }).expect(201)).body.key;
    await stack.as(tenantKey, 'get', '/api/admin/usage/reconciliation').expect(403);
  });

  it('reports days past their close that are still open', async () => {
    const tenant = await tenantSince(stack, owner, 5);
    // The last run was three days ago: since then nothing closed.
    await rollUp(tenant.id, at(addDays(TODAY, -3), '12:00:00.000'));
    const report = await reconcileUsage(stack.platform.db.knex, reconcileAt, settings);
    const unclosed = report.findings.filter((finding) => finding.kind === 'unclosed' && finding.tenant_id === tenant.id).map((finding) => finding.day);
    expect(unclosed).toEqual([addDays(TODAY, -3), addDays(TODAY, -2), addDays(TODAY, -1)]);
    expect(report.unclosed_tenant_days).toBe(3);
  });

  it('fans a scheduled tick out to one job per tenant, once however often the tick is enqueued', async () => {
    const schedule = SCHEDULES.find((candidate) => candidate.name === 'usage')!;
    expect(schedule.expression(stack.platform)).toBe('0 0 * * * *');
    expect(SCHEDULES.find((candidate) => candidate.name === 'usage-reconcile')!.expression(stack.platform)).toBe('0 15 4 * * *');
    const fresh = await stack.createTenant();
    const tenantIds = (await owner('tenants').select('id')).map((row: { id: string }) => row.id);
    expect(tenantIds).toEqual(expect.arrayContaining([tenantId, fresh.id]));

    const tick = tickOf(new Date());
    const tickJobId = await schedule.enqueue(stack.platform, tick);
    expect(await schedule.enqueue(stack.platform, tick)).toBe(tickJobId);
    const queue = stack.platform.queues.queue('usage');
    const tenantJobIds = tenantIds.map((id) => usageQueue.jobId({ kind: 'tenant', tenantId: id, tick }));
    await waitFor(
      async () => {
        const states = await Promise.all(tenantJobIds.map(async (id) => (await queue.getJob(id))?.getState()));
        return states.every((state) => state === 'completed') ? states : null;
      },
      { what: 'one completed usage job per tenant' },
    );
    expect((await queue.getJob(tickJobId))!.returnvalue).toEqual({ tenants: tenantIds.length });
    // Each tenant has today's row, sampled by its job.
    for (const id of tenantIds) expect(await usageRow(owner, id, dayOf(new Date(tick)))).toMatchObject({ closed_at: null });
    // Enqueued again for the same tick, no tenant job runs twice.
    await schedule.enqueue(stack.platform, tick);
    const completed = await queue.getJobs(['completed', 'waiting', 'active', 'delayed'], 0, 1_000);
    expect(completed.filter((job) => job.data.kind === 'tenant' && job.data.tick === tick)).toHaveLength(tenantIds.length);
  });
});

describe('usage on the embedded database (pglite)', () => {
  let stack: TestStack;

  beforeAll(async () => {
    stack = await startStack({ database: 'pglite', workers: false });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('rolls up, closes, bills and reconciles', async () => {
    const db = stack.platform.db.knex;
    const settings = { graceMinutes: stack.config.USAGE_DAY_CLOSE_GRACE_MINUTES, webhookLogDays: stack.config.WEBHOOK_LOG_RETENTION_DAYS };
    const tenant = await stack.createTenant(uniqueName('t').replace(/_/g, '-'), 'standard');
    const day = addDays(TODAY, -2);
    await stack.sql(async (trx) => {
      await trx('tenants').where({ id: tenant.id }).update({ created_at: at(addDays(TODAY, -5), '00:00:00.000') });
      for (const time of ['00:00:00.000', '23:59:59.999']) {
        await trx('webhook_events').insert({ id: randomUUID(), tenant_id: tenant.id, type: 'document.created', payload: '{}', created_at: at(day, time) });
      }
      await trx('search_events').insert({
        id: `evt-${randomUUID()}`, tenant_id: tenant.id, query_id: randomUUID(), query: 'q', query_normalized: 'q', mode: 'hybrid',
        result_count: 0, took_ms: 1, cached: false, created_at: at(day, '08:00:00.000'),
      });
    });
    await stack.as(tenant.key, 'post', '/api/documents').send({ title: 'Held', content: 'Held while the day is sampled.' }).expect(202);
    const rollUp = async (now: Date) => rollUpTenantUsage(db, (await usageTenant(db, tenant.id))!, now, settings);
    await rollUp(at(day, '12:00:00.000'));
    await rollUp(at(TODAY, '04:15:00.000'));

    const statement = await stack.operator('get', `/api/admin/tenants/${tenant.id}/billing?start=${day}&end=${day}`).expect(200);
    expect(statement.body).toMatchObject({ final: true, totals: { documents_created: 2, searches: 1, documents: 1 } });
    const csv = parseCsv((await stack.operator('get', `/api/admin/tenants/${tenant.id}/billing?start=${day}&end=${day}&format=csv`).expect(200)).text);
    expect(csv.map((record) => record[0])).toEqual(['day', day, 'total']);

    const usage = await stack.as(tenant.key, 'get', '/api/admin/usage').expect(200);
    expect(usage.body.quotas.documents).toEqual({ used: 1, limit: 10_000, remaining: 9_999 });

    const report = await reconcileUsage(db, at(TODAY, '04:15:00.000'), settings);
    expect(report).toMatchObject({ tenants: 1, tenant_days: 5, drifting_tenant_days: 0, unclosed_tenant_days: 0 });
  });
});
