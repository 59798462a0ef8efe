import type { Knex } from 'knex';
import { acrossTenants, withTenant } from '../../db/tenant-scope';
import { AppError, badRequest, conflict, notFound } from '../../errors';
import { newId } from '../ids';
import { paginate, type Page, type PageRequest } from '../pagination';
import { loadEndpoint, signingSecrets, type EndpointRow } from './endpoints';
import { recordEvent, type EventEnvelope, type EventSink } from './events';
import type { EventType } from './event-types';
import { sendSigned, type SendResult } from './sender';

export type DeliveryOrigin = 'event' | 'redelivery' | 'replay' | 'test';
export type DeliveryStatus = 'pending' | 'succeeded' | 'failed' | 'canceled';

/** What the webhooks queue carries: ids only, the rest is read at delivery time. */
export interface DeliveryWork {
  tenantId: string;
  deliveryId: string;
  eventId: string;
  endpointId: string;
  origin: Exclude<DeliveryOrigin, 'test'>;
}

export interface DeliverySettings {
  allowPrivate: boolean;
  timeoutMs: number;
  userAgent: string;
  disableAfterHours: number;
}

export interface DeliveryDeps {
  db: Knex;
  events: EventSink;
  settings: DeliverySettings;
}

interface DeliveryRow {
  id: string;
  tenant_id: string;
  event_id: string;
  endpoint_id: string;
  event_type: EventType;
  origin: DeliveryOrigin;
  status: DeliveryStatus;
  attempts: number;
  last_status_code: number | null;
  last_error: string | null;
  next_attempt_at: Date | null;
  delivered_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

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
  return withTenant(db, tenantId, async (trx) => {
    await createFanOutDeliveries(trx, tenantId, eventId);
    const pending: DeliveryRow[] = await trx('webhook_deliveries').select('*').where({ event_id: eventId, tenant_id: tenantId, origin: 'event', status: 'pending' });
    return pending.map(toWork);
  });
}

async function createFanOutDeliveries(trx: Knex.Transaction, tenantId: string, eventId: string): Promise<void> {
  const event = await trx('webhook_events').first('id', 'type').where({ id: eventId, tenant_id: tenantId }).forUpdate();
  if (!event) return;
  const endpoints: Array<{ id: string }> = await trx('webhook_endpoints')
    .select('id')
    .where({ tenant_id: tenantId, enabled: true })
    .andWhere((subscribed) => subscribed.whereRaw('cardinality(event_types) = 0').orWhereRaw('? = any(event_types)', [event.type]));
  if (endpoints.length > 0) {
    const rows = endpoints.map((endpoint) => ({ id: newId(), endpoint_id: endpoint.id }));
    await trx.raw(
      `insert into webhook_deliveries (id, tenant_id, event_id, endpoint_id, event_type, origin)
       select r.id, ?, ?, r.endpoint_id, ?, 'event' from jsonb_to_recordset(?::jsonb) as r(id uuid, endpoint_id uuid)
       on conflict (event_id, endpoint_id) where origin = 'event' do nothing`,
      [tenantId, eventId, event.type, JSON.stringify(rows)],
    );
  }
  await trx('webhook_events').where({ id: eventId }).update({ fanned_out_at: trx.fn.now() });
}

function toWork(row: Pick<DeliveryRow, 'id' | 'tenant_id' | 'event_id' | 'endpoint_id' | 'origin'>): DeliveryWork {
  return { tenantId: row.tenant_id, deliveryId: row.id, eventId: row.event_id, endpointId: row.endpoint_id, origin: row.origin as DeliveryWork['origin'] };
}

export type AttemptVerdict =
  | { kind: 'skipped'; reason: string }
  | { kind: 'delivered' | 'retry' | 'gone' | 'given_up'; result: SendResult; endpointDisabled: boolean };

/**
 * Makes one attempt of a delivery and records it. `final` says no retry
 * follows, so a failure fails the delivery. A delivery that is no longer
 * pending is skipped: a job that runs again after succeeding sends nothing.
 */
export async function attemptDelivery(deps: DeliveryDeps, tenantId: string, deliveryId: string, final: boolean): Promise<AttemptVerdict> {
  const loaded = await loadAttempt(deps.db, tenantId, deliveryId);
  if ('kind' in loaded) return loaded;
  const { delivery, endpoint, event } = loaded;

  const result = await sendSigned({
    url: endpoint.url,
    messageId: delivery.event_id,
    body: JSON.stringify(event.payload),
    secrets: signingSecrets(endpoint),
    userAgent: deps.settings.userAgent,
    timeoutMs: deps.settings.timeoutMs,
    allowPrivate: deps.settings.allowPrivate,
  });
  const kind = result.ok ? 'delivered' : result.statusCode === 410 ? 'gone' : final ? 'given_up' : 'retry';
  const recorded = await recordAttempt(deps, delivery, endpoint, result, kind);
  if (recorded === 'vanished') return { kind: 'skipped', reason: 'the delivery or its endpoint was deleted during the attempt' };
  // Another attempt finished the delivery meanwhile: no retry for this one.
  if (recorded.superseded && kind === 'retry') return { kind: 'skipped', reason: 'the delivery was finished by another attempt' };
  // An endpoint disabled by this very failure gets no retry.
  return { kind: kind === 'retry' && recorded.endpointDisabled ? 'given_up' : kind, result, endpointDisabled: recorded.endpointDisabled };
}

/** What an attempt sends, read before the request so no transaction stays open while the receiver answers. */
async function loadAttempt(
  db: Knex,
  tenantId: string,
  deliveryId: string,
): Promise<{ kind: 'skipped'; reason: string } | { delivery: DeliveryRow; endpoint: EndpointRow; event: { payload: unknown } }> {
  return withTenant(db, tenantId, async (trx) => {
    const delivery = await trx<DeliveryRow>('webhook_deliveries').first('*').where({ id: deliveryId, tenant_id: tenantId });
    if (!delivery) return { kind: 'skipped', reason: 'the delivery no longer exists' };
    if (delivery.status !== 'pending') return { kind: 'skipped', reason: `the delivery is already ${delivery.status}` };
    const endpoint = await trx<EndpointRow>('webhook_endpoints').first('*').where({ id: delivery.endpoint_id, tenant_id: tenantId });
    if (!endpoint || !endpoint.enabled) {
      const reason = endpoint ? 'The endpoint is disabled.' : 'The endpoint was deleted.';
      await trx('webhook_deliveries').where({ id: deliveryId }).update({ status: 'canceled', last_error: reason, next_attempt_at: null, updated_at: trx.fn.now() });
      return { kind: 'skipped', reason };
    }
    const event = await trx('webhook_events').first('payload').where({ id: delivery.event_id, tenant_id: tenantId });
    if (!event) return { kind: 'skipped', reason: 'the event no longer exists' };
    return { delivery, endpoint, event };
  });
}

/** Thrown inside recordAttempt's transaction to roll it back when a row it needs was deleted mid-attempt. */
class Vanished extends Error {}

/**
 * Stores the attempt and its effect on the delivery and the endpoint's
 * health. `superseded`: the delivery was no longer pending (another attempt
 * overlapping this one finished it), so its status was left alone.
 * 'vanished': the endpoint or the delivery was deleted while the request was
 * in flight, and nothing was recorded.
 */
async function recordAttempt(
  deps: DeliveryDeps,
  delivery: DeliveryRow,
  endpoint: EndpointRow,
  result: SendResult,
  verdict: AttemptVerdict['kind'],
): Promise<{ endpointDisabled: boolean; superseded: boolean } | 'vanished'> {
  try {
    return await withTenant(deps.db, delivery.tenant_id, async (trx) => {
      // The endpoint row first, then the delivery: the order deleting an endpoint cascades in, so the two cannot deadlock.
      const endpointDisabled = result.ok ? false : await recordFailureHealth(trx, deps, endpoint, verdict);
      if (result.ok) {
        const updated = await trx('webhook_endpoints')
          .where({ id: endpoint.id })
          .update({ consecutive_failures: 0, failing_since: null, last_success_at: trx.fn.now(), updated_at: trx.fn.now() });
        if (updated === 0) throw new Vanished();
      }
      // The attempt happened, so it is counted and logged whatever the delivery's state now.
      const [counted] = await trx('webhook_deliveries')
        .where({ id: delivery.id })
        .increment('attempts', 1)
        .returning(['attempts', 'status']);
      if (!counted) throw new Vanished();
      const attempts: number = counted.attempts;
      await trx('webhook_attempts').insert({
        id: newId(),
        tenant_id: delivery.tenant_id,
        delivery_id: delivery.id,
        endpoint_id: endpoint.id,
        event_id: delivery.event_id,
        event_type: delivery.event_type,
        attempt: attempts,
        outcome: result.ok ? 'succeeded' : 'failed',
        status_code: result.statusCode,
        duration_ms: result.durationMs,
        error: result.error,
        response_body: result.responseBody,
      });
      // Only a pending delivery changes: a late attempt overlapping one that already finished it must not undo its outcome.
      if (counted.status !== 'pending') return { endpointDisabled, superseded: true };
      await trx('webhook_deliveries')
        .where({ id: delivery.id, status: 'pending' })
        .update({
          status: verdict === 'delivered' ? 'succeeded' : verdict === 'retry' && !endpointDisabled ? 'pending' : 'failed',
          last_status_code: result.statusCode,
          last_error: result.error,
          delivered_at: verdict === 'delivered' ? trx.fn.now() : null,
          // The attempt that was due has happened; a retry sets the next time again (scheduleNextAttempt).
          next_attempt_at: null,
          updated_at: trx.fn.now(),
        });
      return { endpointDisabled, superseded: false };
    });
  } catch (error) {
    if (error instanceof Vanished) return 'vanished';
    throw error;
  }
}

/** Counts a failure against the endpoint; disables it on 410 or after failing too long. True if it got disabled. */
async function recordFailureHealth(trx: Knex.Transaction, deps: DeliveryDeps, endpoint: EndpointRow, verdict: AttemptVerdict['kind']): Promise<boolean> {
  const [health] = await trx('webhook_endpoints')
    .where({ id: endpoint.id })
    .update({
      consecutive_failures: trx.raw('consecutive_failures + 1'),
      failing_since: trx.raw('coalesce(failing_since, now())'),
      last_failure_at: trx.fn.now(),
      updated_at: trx.fn.now(),
    })
    .returning(['failing_since', 'enabled']);
  if (!health) throw new Vanished();
  const failingForMs = Date.now() - new Date(health.failing_since).getTime();
  if (verdict === 'gone') return disableEndpoint(trx, deps.events, endpoint, 'The receiver answered 410 Gone.');
  if (health.enabled && failingForMs >= deps.settings.disableAfterHours * 3_600_000) {
    return disableEndpoint(trx, deps.events, endpoint, `Every attempt has failed for ${deps.settings.disableAfterHours} hours.`);
  }
  return false;
}

/** Disables an endpoint and tells the tenant's other endpoints with a `webhook.endpoint_disabled` event. */
async function disableEndpoint(trx: Knex.Transaction, events: EventSink, endpoint: EndpointRow, reason: string): Promise<boolean> {
  const updated = await trx('webhook_endpoints')
    .where({ id: endpoint.id, enabled: true })
    .update({ enabled: false, disabled_reason: reason, disabled_at: trx.fn.now(), updated_at: trx.fn.now() });
  if (updated === 0) return false;
  await recordEvent(trx, events, endpoint.tenant_id, 'webhook.endpoint_disabled', {
    endpoint_id: endpoint.id,
    url: endpoint.url,
    reason,
    failing_since: endpoint.failing_since ? endpoint.failing_since.toISOString() : new Date().toISOString(),
  });
  return true;
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
