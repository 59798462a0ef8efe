import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import { retentionQueue } from '../../queues';
import { TIER_RETENTION_DAYS, type Tier } from '../../src/domain/tenants/quotas';
import { startStack, type TestStack } from '../helpers/harness';
import { waitFor } from '../helpers/wait';

// The retention job on constructed data: rows on both sides of every cut-off,
// run through the real queue and worker, on PostgreSQL and on PGlite. Raw
// search events, clicks and answer events are kept per tenant tier; rollups and webhook logs
// per deployment.

const TABLES = ['search_events', 'search_clicks', 'answer_events', 'search_query_hourly', 'webhook_attempts', 'webhook_deliveries'] as const;
type Table = (typeof TABLES)[number];

interface Cutoffs {
  rollupDays: number;
  webhookDays: number;
}

/** The operator's own tables, which the seeded tenant rows never touch: audit trail, dead letters, dashboard sessions. */
const NO_OPERATOR_ROWS = { audit_log: 0, dead_letters: 0, admin_sessions: 0 };

/** Age of raw search history that outlives any tier with a limit: a tier that keeps for good must still have it. */
const AGE_PAST_EVERY_TIER = 400;

/** Which rows of each table were made to survive and which to go. */
type Seeded = Record<Table, { kept: string[]; removed: string[] }>;

const idColumn = (table: Table) => (table === 'search_query_hourly' ? 'query_normalized' : table === 'answer_events' ? 'query_id' : 'id');

/**
 * Rows one day inside and one day past each cut-off, for one tenant whose
 * tier keeps raw search history `eventsDays` days (`null`: for good, so a
 * recent and a very old event both stay).
 * Deliveries: finished ones past the cut-off go (their attempts with them);
 * pending ones stay however old; attempts past the cut-off go even when
 * their delivery stays.
 */
async function seed(stack: TestStack, tenantId: string, eventsDays: number | null, cut: Cutoffs): Promise<Seeded> {
  return stack.sql((db) => seedRows(db, tenantId, eventsDays, cut));
}

async function seedRows(db: Knex.Transaction, tenantId: string, eventsDays: number | null, cut: Cutoffs): Promise<Seeded> {
  const ago = (days: number) => db.raw(`now() - make_interval(days => ?::int)`, [days]);
  const seeded = Object.fromEntries(TABLES.map((table) => [table, { kept: [] as string[], removed: [] as string[] }])) as Seeded;
  const note = (table: Table, id: string, kept: boolean) => seeded[table][kept ? 'kept' : 'removed'].push(id);

  const eventAges: ReadonlyArray<readonly [number, boolean]> =
    eventsDays === null
      ? [[1, true], [AGE_PAST_EVERY_TIER, true]]
      : [[eventsDays - 1, true], [eventsDays + 1, false]];
  for (const [days, kept] of eventAges) {
    const id = `evt-${randomUUID()}`;
    const queryId = randomUUID();
    await db('search_events').insert({
      id, tenant_id: tenantId, query_id: queryId, query: 'q', query_normalized: 'q', mode: 'keyword',
      result_count: 1, took_ms: 1, cached: false, created_at: ago(days),
    });
    note('search_events', id, kept);
    const clickId = randomUUID();
    await db('search_clicks').insert({ id: clickId, tenant_id: tenantId, query_id: queryId, document_id: randomUUID(), position: 1, created_at: ago(days) });
    note('search_clicks', clickId, kept);
    const answerId = randomUUID();
    await db('answer_events').insert({
      query_id: answerId, tenant_id: tenantId, question: 'q', model: 'm', passages: 1, cited: 1, prompt_tokens: 1, completion_tokens: 1,
      took_ms: 1, cached: false, streamed: false, created_at: ago(days),
    });
    note('answer_events', answerId, kept);
  }
  for (const [days, kept] of [[cut.rollupDays - 1, true], [cut.rollupDays + 1, false]] as const) {
    const query = `rollup-${randomUUID()}`;
    await db('search_query_hourly').insert({ tenant_id: tenantId, hour: db.raw(`date_trunc('hour', now() - make_interval(days => ?::int))`, [days]), query_normalized: query, searches: 1 });
    note('search_query_hourly', query, kept);
  }

  const endpointId = randomUUID();
  await db('webhook_endpoints').insert({ id: endpointId, tenant_id: tenantId, url: 'https://hooks.example.com/ragworks', secret: 'whsec_test' });
  const delivery = async (status: string, days: number, kept: boolean, attempts: Array<{ days: number; kept: boolean }>) => {
    const eventId = randomUUID();
    await db('webhook_events').insert({ id: eventId, tenant_id: tenantId, type: 'document.indexed', payload: '{}', created_at: ago(days), fanned_out_at: ago(days) });
    const id = randomUUID();
    await db('webhook_deliveries').insert({
      id, tenant_id: tenantId, event_id: eventId, endpoint_id: endpointId, event_type: 'document.indexed', origin: 'event',
      status, attempts: attempts.length, created_at: ago(days + 1), updated_at: ago(days),
    });
    note('webhook_deliveries', id, kept);
    for (const [index, attempt] of attempts.entries()) {
      const attemptId = randomUUID();
      await db('webhook_attempts').insert({
        id: attemptId, tenant_id: tenantId, delivery_id: id, endpoint_id: endpointId, event_id: eventId, event_type: 'document.indexed',
        attempt: index + 1, outcome: status === 'succeeded' && index === attempts.length - 1 ? 'succeeded' : 'failed', duration_ms: 5, created_at: ago(attempt.days),
      });
      note('webhook_attempts', attemptId, attempt.kept);
    }
  };
  const recent = cut.webhookDays - 1;
  const old = cut.webhookDays + 1;
  await delivery('succeeded', old, false, [{ days: old, kept: false }]);
  await delivery('failed', old, false, [{ days: old + 1, kept: false }, { days: old, kept: false }]);
  await delivery('canceled', old, false, []);
  await delivery('succeeded', recent, true, [{ days: old, kept: false }, { days: recent, kept: true }]);
  await delivery('pending', old + 5, true, []);
  await delivery('pending', recent, true, [{ days: recent, kept: true }]);
  return seeded;
}

/** 12,000 search events past the cut-off in one statement: more than two batches of 5,000. */
async function seedManyOldEvents(stack: TestStack, tenantId: string, days: number, count: number): Promise<void> {
  await stack.sql((db) =>
    db.raw(
      `insert into search_events (id, tenant_id, query_id, query, query_normalized, mode, result_count, took_ms, cached, created_at)
       select 'bulk-' || i, ?, gen_random_uuid(), 'bulk', 'bulk', 'keyword', 0, 1, false, now() - make_interval(days => ?::int) - i * interval '1 second'
         from generate_series(1, ?::int) as i`,
      [tenantId, days, count],
    ),
  );
}

async function remaining(stack: TestStack, table: Table, tenantIds: string[]): Promise<string[]> {
  const rows = await stack.sql((db) => db(table).whereIn('tenant_id', tenantIds).select(idColumn(table)));
  return rows.map((row: Record<string, string>) => row[idColumn(table)]).sort();
}

async function runRetention(stack: TestStack): Promise<Record<string, number>> {
  const jobId = await stack.platform.queues.enqueue(retentionQueue, { tick: new Date(Date.now() + Math.random() * 1e9).toISOString() });
  const queue = stack.platform.queues.queue(retentionQueue.name);
  return waitFor(async () => {
    const job = await queue.getJob(jobId);
    const state = await job?.getState();
    if (state === 'failed') throw new Error(`the retention job failed: ${job?.failedReason}`);
    return state === 'completed' ? (job!.returnvalue as Record<string, number>) : null;
  }, { what: 'the retention job', timeoutMs: 40_000 });
}

async function deletedMetric(stack: TestStack, table: Table): Promise<number> {
  const text: string = (await stack.operator('get', '/metrics').expect(200)).text;
  const series = `ragworks_retention_deleted_rows_total{table="${table}"}`;
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

function expectExactlyOlderRowsGone(seeded: Seeded[], after: Record<Table, string[]>): void {
  for (const table of TABLES) {
    const kept = seeded.flatMap((tenant) => tenant[table].kept).sort();
    expect({ table, rows: after[table] }).toEqual({ table, rows: kept });
  }
}

const expectedRemoved = (seeded: Seeded[], extraEvents = 0): Record<Table, number> => ({
  search_events: seeded.reduce((sum, tenant) => sum + tenant.search_events.removed.length, 0) + extraEvents,
  search_clicks: seeded.reduce((sum, tenant) => sum + tenant.search_clicks.removed.length, 0),
  answer_events: seeded.reduce((sum, tenant) => sum + tenant.answer_events.removed.length, 0),
  search_query_hourly: seeded.reduce((sum, tenant) => sum + tenant.search_query_hourly.removed.length, 0),
  webhook_attempts: seeded.reduce((sum, tenant) => sum + tenant.webhook_attempts.removed.length, 0),
  webhook_deliveries: seeded.reduce((sum, tenant) => sum + tenant.webhook_deliveries.removed.length, 0),
});

/** Webhook events older than the delivery-log cut-off that no pending delivery still needs: what retention may remove. */
async function removableEvents(stack: TestStack, tenantIds: string[], webhookDays: number): Promise<number> {
  const row = await stack.sql((db) =>
    db.raw(
      `select count(*)::int as n from webhook_events e
        where e.tenant_id = any(?::uuid[]) and e.created_at < now() - make_interval(days => ?)
          and not exists (select 1 from webhook_deliveries d where d.event_id = e.id and d.status = 'pending')`,
      [tenantIds, webhookDays],
    ),
  );
  return Number(row.rows[0].n);
}

async function snapshot(stack: TestStack, tenantIds: string[]): Promise<Record<Table, string[]>> {
  const entries = await Promise.all(TABLES.map(async (table) => [table, await remaining(stack, table, tenantIds)] as const));
  return Object.fromEntries(entries) as Record<Table, string[]>;
}

/** Tenants on every tier, one moved onto its tier after creation: retention reads the tier in force when it runs. */
async function tenantsOnEveryTier(stack: TestStack): Promise<Array<{ id: string; tier: Tier }>> {
  const tenants = [];
  for (const tier of ['free', 'standard', 'enterprise', 'unlimited'] as const) {
    tenants.push({ id: (await stack.createTenant(undefined, tier)).id, tier });
  }
  const moved = await stack.createTenant(undefined, 'unlimited');
  const patched = await stack.operator('patch', `/api/admin/tenants/${moved.id}`).send({ tier: 'free' }).expect(200);
  expect(patched.body).toMatchObject({ tier: 'free', retention_days: TIER_RETENTION_DAYS.free });
  tenants.push({ id: moved.id, tier: 'free' as const });
  return tenants;
}

describe.each<{ database: 'postgres' | 'pglite'; env: Record<string, string>; cut: Cutoffs }>([
  { database: 'postgres', env: {}, cut: { rollupDays: 400, webhookDays: 30 } },
  {
    database: 'pglite',
    env: { ANALYTICS_ROLLUP_RETENTION_DAYS: '60', WEBHOOK_LOG_RETENTION_DAYS: '3' },
    cut: { rollupDays: 60, webhookDays: 3 },
  },
])('retention on $database (raw search history per tier, rollups $cut.rollupDays d, webhook logs $cut.webhookDays d)', ({ database, env, cut }) => {
  let stack: TestStack;

  beforeAll(async () => {
    stack = await startStack({ database, env });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it("removes exactly the rows older than each cut-off, each tenant's search history by its tier, keeps pending deliveries, and reports rows per table in the return value and the metric", async () => {
    const tenants = await tenantsOnEveryTier(stack);
    const ids = tenants.map((tenant) => tenant.id);
    const seeded = [];
    for (const tenant of tenants) seeded.push(await seed(stack, tenant.id, TIER_RETENTION_DAYS[tenant.tier], cut));
    const before = Object.fromEntries(await Promise.all(TABLES.map(async (table) => [table, await deletedMetric(stack, table)] as const)));
    const oldEvents = await removableEvents(stack, ids, cut.webhookDays);
    expect(oldEvents).toBeGreaterThan(0);

    const removed = await runRetention(stack);
    expect(removed).toEqual({ ...expectedRemoved(seeded), webhook_events: oldEvents, ...NO_OPERATOR_ROWS });
    expectExactlyOlderRowsGone(seeded, await snapshot(stack, ids));
    // Spelled out per tier: a free tenant's 8-day-old events went, a standard one's 89-day-old and an unlimited one's 400-day-old stayed.
    const eventsLeft = async (tenantId: string) => (await remaining(stack, 'search_events', [tenantId])).length;
    expect(await Promise.all(tenants.map(async (tenant) => ({ tier: tenant.tier, events: await eventsLeft(tenant.id) })))).toEqual(
      tenants.map((tenant) => ({ tier: tenant.tier, events: TIER_RETENTION_DAYS[tenant.tier] === null ? 2 : 1 })),
    );
    for (const table of TABLES) expect({ table, metric: await deletedMetric(stack, table) }).toEqual({ table, metric: before[table] + removed[table] });
    // Events still wanted by a pending delivery, or younger than the cut-off, stay: replay reaches back that far.
    expect(await stack.sql((db) => db('webhook_events').whereIn('tenant_id', ids).count('* as n').first())).toEqual({ n: 6 * tenants.length - oldEvents });
    expect(await removableEvents(stack, ids, cut.webhookDays)).toBe(0);

    // A second run finds nothing more to remove.
    expect(await runRetention(stack)).toEqual({ ...Object.fromEntries(TABLES.map((table) => [table, 0])), webhook_events: 0, ...NO_OPERATOR_ROWS });
    expectExactlyOlderRowsGone(seeded, await snapshot(stack, ids));
  });

  it('removes more old rows than one batch holds, all of them, in one run', async () => {
    const tenant = await stack.createTenant(undefined, 'free');
    const eventsDays = TIER_RETENTION_DAYS.free!;
    const seeded = await seed(stack, tenant.id, eventsDays, cut);
    await seedManyOldEvents(stack, tenant.id, eventsDays + 2, 12_000);
    const before = await deletedMetric(stack, 'search_events');
    const oldEvents = await removableEvents(stack, [tenant.id], cut.webhookDays);

    const removed = await runRetention(stack);
    expect(removed).toEqual({ ...expectedRemoved([seeded], 12_000), webhook_events: oldEvents, ...NO_OPERATOR_ROWS });
    expectExactlyOlderRowsGone([seeded], await snapshot(stack, [tenant.id]));
    expect(await deletedMetric(stack, 'search_events')).toBe(before + 12_001);
  });

  it('removes old audit entries, dead letters closed long ago and ended dashboard sessions, and keeps the rest', async () => {
    const tenant = await stack.createTenant();
    const daysAgo = (days: number) => new Date(Date.now() - days * 86_400_000);
    const audit = (id: string, days: number) => ({ id, at: daysAgo(days), actor_kind: 'operator', tenant_id: tenant.id, action: 'test.seed', details: {} });
    const letter = (id: string, closed: { redriven_at?: Date; discarded_at?: Date }) => ({
      id, queue: 'indexing', job_id: `job-${id}`, job_name: 'indexing', tenant_id: tenant.id, payload: {}, error_class: 'Error', error_message: 'seeded',
      attempts: 1, failed_at: daysAgo(60), ...closed,
    });
    const ids = Array.from({ length: 10 }, () => randomUUID());
    await stack.sql(async (db) => {
      await db('audit_log').insert([audit(ids[0], 401), audit(ids[1], 399)]);
      await db('dead_letters').insert([
        letter(ids[2], { redriven_at: daysAgo(31) }),
        letter(ids[3], { discarded_at: daysAgo(31) }),
        letter(ids[4], { discarded_at: daysAgo(29) }),
        // Open, however old: it waits for an operator.
        letter(ids[5], {}),
      ]);
      await db('admin_sessions').insert([
        { id: ids[6], expires_at: daysAgo(2) },
        { id: ids[7], expires_at: daysAgo(-1), revoked_at: daysAgo(2) },
        { id: ids[8], expires_at: daysAgo(-1) },
        { id: ids[9], expires_at: daysAgo(0.5) },
      ]);
    });
    const removed = await runRetention(stack);
    expect({ audit_log: removed.audit_log, dead_letters: removed.dead_letters, admin_sessions: removed.admin_sessions }).toEqual({ audit_log: 1, dead_letters: 2, admin_sessions: 2 });
    const left = await stack.sql(async (db) => ({
      audit_log: await db('audit_log').whereIn('id', ids).pluck('id'),
      dead_letters: await db('dead_letters').whereIn('id', ids).pluck('id'),
      admin_sessions: await db('admin_sessions').whereIn('id', ids).pluck('id'),
    }));
    expect({ audit_log: left.audit_log.sort(), dead_letters: left.dead_letters.sort(), admin_sessions: left.admin_sessions.sort() }).toEqual({
      audit_log: [ids[1]],
      dead_letters: [ids[4], ids[5]].sort(),
      admin_sessions: [ids[8], ids[9]].sort(),
    });
  });
});
