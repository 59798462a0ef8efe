import type { Knex } from 'knex';
import { acrossTenants, queryAsTenant, withTenant } from '../../db/tenant-scope';
import { AppError, badRequest, conflict, notFound } from '../../errors';
import { newId } from '../ids';
import { paginate, type Page, type PageRequest } from '../pagination';
import { attemptDelivery } from './attempts';
import { loadEndpoint } from './endpoints';
import { recordEvent, type EventEnvelope, type EventSink } from './events';
import { literal, uuidArray } from './literals';
import type { EventType } from './event-types';

export { attemptDelivery, type AttemptVerdict, type SendGate } from './attempts';

export type { DeliveryDeps, DeliveryOrigin, DeliveryRow, DeliverySettings, DeliveryStatus, DeliveryWork } from './delivery-model';
import type { DeliveryDeps, DeliveryRow, DeliveryStatus, DeliveryWork } from './delivery-model';

interface AttemptRow {
  id: string;
  attempt: number;
  outcome: 'succeeded' | 'failed';
  status_code: number | null;
  duration_ms: number;
  error: string | null;
  response_body: string | null;
  created_at: Date;
}

const iso = (value: Date | null) => (value ? value.toISOString() : null);

export function toDeliveryView(row: DeliveryRow) {
  return {
    id: row.id,
    message_id: row.event_id,
    endpoint_id: row.endpoint_id,
    event_type: row.event_type,
    origin: row.origin,
    status: row.status,
    attempts: row.attempts,
    last_status_code: row.last_status_code,
    last_error: row.last_error,
    next_attempt_at: iso(row.next_attempt_at),
    delivered_at: iso(row.delivered_at),
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString(),
  };
}

const toAttemptView = (row: AttemptRow) => ({
  id: row.id,
  attempt: row.attempt,
  outcome: row.outcome,
  status_code: row.status_code,
  duration_ms: row.duration_ms,
  error: row.error,
  response_body: row.response_body,
  created_at: row.created_at.toISOString(),
});

/**
 * Creates a delivery for every enabled endpoint subscribed to the event and
 * returns the work to enqueue: every delivery of the event still pending,
 * so a fan-out that stopped between its insert and its enqueue is finished
 * by running it again.
 */
export async function fanOut(db: Knex, tenantId: string, eventId: string): Promise<DeliveryWork[]> {
  return (await fanOutEvents(db, tenantId, [eventId])).work[0];
}

/** A v7 UUID made by PostgreSQL (the millisecond clock in the first 48 bits), for rows whose number is known only there. */
const SQL_UUID_V7 = `encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) placing substring(int8send((extract(epoch from clock_timestamp()) * 1000)::bigint) from 3) from 1 for 6), 52, 1), 53, 1), 'hex')::uuid`;

/**
 * fanOut for several events of one tenant in one statement: the events are
 * locked and marked fanned out, a delivery is inserted for each enabled,
 * subscribed endpoint, and the pending deliveries are returned — those just
 * inserted and those an earlier, interrupted run left. `work` has one list
 * per event, in the order given, each in endpoint order. For a suspended
 * tenant nothing is done (`tenantSuspended`): its fan-outs wait for it.
 */
export async function fanOutEvents(db: Knex, tenantId: string, eventIds: readonly string[]): Promise<{ tenantSuspended: boolean; work: DeliveryWork[][] }> {
  const tenant = literal(tenantId);
  // One statement in one round trip (queryAsTenant: its implicit transaction commits it). Events are found
  // and locked through their primary keys, one lateral lookup per id in id order (so concurrent fan-outs
  // cannot deadlock), and updated by id: a table never analyzed yet (a fresh database) would otherwise
  // tempt the planner into scanning the tenant's rows. A delivery that exists already (an interrupted
  // earlier run) is returned by the no-op update of its conflict.
  const rows = await queryAsTenant<{ tenant_status: string | null; id: string | null; event_id: string; endpoint_id: string; status: string }>(
    db,
    tenantId,
    `with tenant as (
       select status from tenants where id = ${tenant}
     ),
     locked as (
       select ev.id from (select distinct id from unnest(${uuidArray(eventIds)}) as wanted(id) order by id) wanted
        cross join lateral (select id from webhook_events where id = wanted.id and tenant_id = ${tenant} for update) ev
        where (select status from tenant) is distinct from 'suspended'
     ),
     marked as (
       update webhook_events set fanned_out_at = now() where id = any(array(select id from locked)) returning id, type
     ),
     inserted as (
       insert into webhook_deliveries (id, tenant_id, event_id, endpoint_id, event_type, origin)
       select ${SQL_UUID_V7}, ${tenant}, m.id, e.id, m.type, 'event'
         from marked m
         join webhook_endpoints e on e.tenant_id = ${tenant} and e.enabled and (cardinality(e.event_types) = 0 or m.type = any(e.event_types))
       on conflict (event_id, endpoint_id) where origin = 'event' do update set status = webhook_deliveries.status
       returning id, event_id, endpoint_id, status
     )
     select (select status from tenant) as tenant_status, inserted.* from (select 1) as one left join inserted on true`,
  );
  const tenantSuspended = rows[0]?.tenant_status === 'suspended';
  const byEvent = new Map<string, DeliveryWork[]>(eventIds.map((eventId) => [eventId, []]));
  const inserted = rows.filter((row): row is typeof row & { id: string } => row.id !== null && row.status === 'pending');
  inserted.sort((a, b) => (a.endpoint_id < b.endpoint_id ? -1 : a.endpoint_id > b.endpoint_id ? 1 : 0));
  for (const row of inserted) {
    byEvent.get(row.event_id)?.push({ tenantId, deliveryId: row.id, eventId: row.event_id, endpointId: row.endpoint_id, origin: 'event' });
  }
  return { tenantSuspended, work: eventIds.map((eventId) => byEvent.get(eventId)!) };
}

function toWork(row: Pick<DeliveryRow, 'id' | 'tenant_id' | 'event_id' | 'endpoint_id' | 'origin'>): DeliveryWork {
  return { tenantId: row.tenant_id, deliveryId: row.id, eventId: row.event_id, endpointId: row.endpoint_id, origin: row.origin as DeliveryWork['origin'] };
}

/** When the next attempt is due, for operators reading the delivery. */
export async function scheduleNextAttempt(db: Knex, tenantId: string, deliveryId: string, at: Date): Promise<void> {
  await withTenant(db, tenantId, (trx) => trx('webhook_deliveries').where({ id: deliveryId, status: 'pending' }).update({ next_attempt_at: at }));
}

/** Marks a delivery failed when its queue job gives up for a reason no attempt recorded (e.g. a crash loop). */
export async function failDelivery(db: Knex, tenantId: string, deliveryId: string, message: string): Promise<void> {
  await withTenant(db, tenantId, (trx) =>
    trx('webhook_deliveries')
      .where({ id: deliveryId, tenant_id: tenantId, status: 'pending' })
      .update({ status: 'failed', last_error: message, next_attempt_at: null, updated_at: trx.fn.now() }),
  );
}

/**
 * Makes a failed delivery pending again before its dead job is redriven:
 * an attempt skips any delivery that is not pending. Its attempts so far
 * stay counted. Returns why it must not be sent again, or null.
 */
export async function reopenDelivery(db: Knex, tenantId: string, deliveryId: string): Promise<string | null> {
  return withTenant(db, tenantId, async (trx) => {
    const delivery = await trx<DeliveryRow>('webhook_deliveries').first('status', 'endpoint_id').where({ id: deliveryId, tenant_id: tenantId });
    if (!delivery) return 'The delivery no longer exists.';
    // A delivery that succeeded is not sent twice; one canceled with its endpoint stays canceled.
    if (delivery.status !== 'failed') return delivery.status === 'pending' ? null : `The delivery is ${delivery.status}.`;
    const endpoint = await trx('webhook_endpoints').first('enabled').where({ id: delivery.endpoint_id, tenant_id: tenantId });
    if (!endpoint?.enabled) return 'The endpoint is disabled; enable it before redriving its deliveries.';
    // updated_at now: the reconcile tick leaves a delivery alone until it has been pending a while.
    await trx('webhook_deliveries').where({ id: deliveryId, status: 'failed' }).update({ status: 'pending', next_attempt_at: null, updated_at: trx.fn.now() });
    return null;
  });
}

export interface DeliveryFilters {
  status?: DeliveryStatus;
  event_type?: EventType;
  since?: string;
  until?: string;
}

export async function listDeliveries(db: Knex, tenantId: string, endpointId: string, filters: DeliveryFilters, page: PageRequest): Promise<Page<ReturnType<typeof toDeliveryView>>> {
  return withTenant(db, tenantId, async (trx) => {
    await loadEndpoint(trx, tenantId, endpointId);
    const query = trx<DeliveryRow>('webhook_deliveries').select('*').where({ tenant_id: tenantId, endpoint_id: endpointId });
    if (filters.status) query.where({ status: filters.status });
    if (filters.event_type) query.where({ event_type: filters.event_type });
    if (filters.since) query.where('created_at', '>=', filters.since);
    if (filters.until) query.where('created_at', '<', filters.until);
    return paginate(query, page, toDeliveryView);
  });
}

export async function getDelivery(db: Knex, tenantId: string, endpointId: string, deliveryId: string) {
  return withTenant(db, tenantId, async (trx) => {
    const row = await trx<DeliveryRow>('webhook_deliveries').first('*').where({ id: deliveryId, tenant_id: tenantId, endpoint_id: endpointId });
    if (!row) throw notFound('Delivery');
    const attempts: AttemptRow[] = await trx('webhook_attempts').select('*').where({ delivery_id: deliveryId }).orderBy('attempt');
    const event = await trx('webhook_events').first('payload').where({ id: row.event_id });
    return { ...toDeliveryView(row), event: (event?.payload ?? null) as EventEnvelope | null, attempts: attempts.map(toAttemptView) };
  });
}

/** A new delivery of the same message to the same endpoint, with a fresh set of attempts. */
export async function redeliver(db: Knex, tenantId: string, endpointId: string, deliveryId: string): Promise<{ delivery: ReturnType<typeof toDeliveryView>; work: DeliveryWork }> {
  return withTenant(db, tenantId, (trx) => redeliverIn(trx, tenantId, endpointId, deliveryId));
}

async function redeliverIn(db: Knex.Transaction, tenantId: string, endpointId: string, deliveryId: string): Promise<{ delivery: ReturnType<typeof toDeliveryView>; work: DeliveryWork }> {
  const endpoint = await loadEndpoint(db, tenantId, endpointId);
  if (!endpoint.enabled) throw conflict('The endpoint is disabled; enable it before redelivering.', { endpoint_id: endpointId });
  const original = await db<DeliveryRow>('webhook_deliveries').first('*').where({ id: deliveryId, tenant_id: tenantId, endpoint_id: endpointId });
  if (!original) throw notFound('Delivery');
  const [row]: DeliveryRow[] = await db('webhook_deliveries')
    .insert({ id: newId(), tenant_id: tenantId, event_id: original.event_id, endpoint_id: endpointId, event_type: original.event_type, origin: 'redelivery' })
    .returning('*');
  return { delivery: toDeliveryView(row), work: toWork(row) };
}

/** At most this many events per replay request: a larger window is refused, not silently cut. */
export const REPLAY_LIMIT = 10_000;

export interface ReplayRequest {
  since: string;
  until?: string;
  event_types?: EventType[];
  dry_run: boolean;
}

export interface ReplayOptions {
  /** The gap between consecutive sends (the caller enqueues work[i] with a delay of i × spacingMs). */
  spacingMs?: number;
  /** The most events one request may replay; REPLAY_LIMIT unless a test wants a small one. */
  limit?: number;
}

/**
 * Re-sends the tenant's events in a time window that the endpoint is
 * subscribed to (test events excluded). A dry run only counts them. Each
 * delivery's next_attempt_at is the time its paced send is due, so the
 * reconcile tick sees it is waiting by design rather than lost.
 */
export async function replay(
  db: Knex,
  tenantId: string,
  endpointId: string,
  request: ReplayRequest,
  options: ReplayOptions = {},
): Promise<{ matched: number; work: DeliveryWork[] }> {
  return withTenant(db, tenantId, (trx) => replayIn(trx, tenantId, endpointId, request, options));
}

async function replayIn(
  db: Knex.Transaction,
  tenantId: string,
  endpointId: string,
  request: ReplayRequest,
  { spacingMs = 0, limit = REPLAY_LIMIT }: ReplayOptions,
): Promise<{ matched: number; work: DeliveryWork[] }> {
  const endpoint = await loadEndpoint(db, tenantId, endpointId);
  if (!request.dry_run && !endpoint.enabled) throw conflict('The endpoint is disabled; enable it before replaying.', { endpoint_id: endpointId });
  // Compared as instants: as text, times with different offsets sort wrongly.
  if (request.until && Date.parse(request.until) <= Date.parse(request.since)) throw badRequest('`until` must be after `since`.', { field: 'until' });
  const query = db('webhook_events')
    .where({ tenant_id: tenantId })
    .where('created_at', '>=', request.since)
    .whereNot({ type: 'webhook.test' });
  if (request.until) query.where('created_at', '<', request.until);
  if (request.event_types && request.event_types.length > 0) query.whereIn('type', request.event_types);
  if (endpoint.event_types.length > 0) query.whereIn('type', endpoint.event_types);
  const events: Array<{ id: string; type: EventType }> = await query.clone().select('id', 'type').orderBy('created_at').limit(limit + 1);
  if (events.length > limit) {
    throw new AppError(400, 'validation_failed', `The window holds more than ${limit} events; replay a narrower one.`, { limit });
  }
  if (request.dry_run || events.length === 0) return { matched: events.length, work: [] };
  const now = Date.now();
  const rows = events.map((event, index) => ({
    id: newId(),
    tenant_id: tenantId,
    event_id: event.id,
    endpoint_id: endpointId,
    event_type: event.type,
    origin: 'replay' as const,
    next_attempt_at: index > 0 && spacingMs > 0 ? new Date(now + index * spacingMs) : null,
  }));
  for (let start = 0; start < rows.length; start += 500) {
    await db('webhook_deliveries').insert(rows.slice(start, start + 500));
  }
  // In the order of `rows`, which is the order their next_attempt_at times were given in.
  return { matched: events.length, work: rows.map(toWork) };
}

/**
 * Sends a `webhook.test` event to one endpoint now, in the caller's
 * process, and returns the attempt as recorded. No retries follow.
 */
export async function sendTest(deps: DeliveryDeps, tenantId: string, endpointId: string) {
  const endpoint = await loadEndpoint(deps.db, tenantId, endpointId);
  if (!endpoint.enabled) throw conflict('The endpoint is disabled; enable it before testing.', { endpoint_id: endpointId });
  const deliveryId = newId();
  await withTenant(deps.db, tenantId, async (trx) => {
    // Stored as already fanned out: a test goes to this endpoint only.
    const silent: EventSink = { announce: async () => undefined };
    const event = await recordEvent(trx, silent, tenantId, 'webhook.test', { endpoint_id: endpointId, message: 'A test event from ragworks.' });
    await trx('webhook_events').where({ id: event.id }).update({ fanned_out_at: trx.fn.now() });
    await trx('webhook_deliveries').insert({ id: deliveryId, tenant_id: tenantId, event_id: event.id, endpoint_id: endpointId, event_type: 'webhook.test', origin: 'test' });
  });
  await attemptDelivery(deps, tenantId, deliveryId, true);
  return getDelivery(deps.db, tenantId, endpointId, deliveryId);
}

/**
 * Events never fanned out (their announcement was lost) and deliveries
 * pending without a live job: for the reconcile tick. A delivery whose
 * next_attempt_at is still ahead has a delayed job by design (a retry, a
 * paced replay) and is left out, so a window full of such waits cannot hide
 * one that was really lost.
 */
export async function findStuckWebhookWork(db: Knex, olderThanSeconds: number, limit = 1000) {
  return acrossTenants(db, (trx) => findStuckIn(trx, olderThanSeconds, limit));
}

async function findStuckIn(db: Knex.Transaction, olderThanSeconds: number, limit: number) {
  const cutoff = db.raw(`now() - make_interval(secs => ?)`, [olderThanSeconds]);
  // One transaction, one connection: its statements run one after another.
  const events = await db('webhook_events').select('tenant_id', 'id').whereNull('fanned_out_at').where('created_at', '<', cutoff).orderBy('created_at').limit(limit);
  const deliveries: DeliveryRow[] = await db<DeliveryRow>('webhook_deliveries')
    .select('*')
    .where({ status: 'pending' })
    .whereNot({ origin: 'test' })
    .where('updated_at', '<', cutoff)
    .where((due) => due.whereNull('next_attempt_at').orWhere('next_attempt_at', '<=', db.fn.now()))
    .orderBy('updated_at')
    .limit(limit);
  return {
    events: events.map((event: { tenant_id: string; id: string }) => ({ tenantId: event.tenant_id, eventId: event.id })),
    deliveries: deliveries.map(toWork),
  };
}
