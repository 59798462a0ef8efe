import type { Knex } from 'knex';
import { onePer } from '../../one-per';
import { queryAsTenant, withTenant } from '../../db/tenant-scope';
import { newId } from '../ids';
import { Batcher, settleAll, type Settled } from '../../batcher';
import type { DeliveryDeps, DeliveryRow } from './delivery-model';
import { signingSecrets, type EndpointRow } from './endpoints';
import { recordEvent, type EventSink } from './events';
import { intArray, literal, textArray, uuidArray } from './literals';
import { sendSigned, type SendResult } from './sender';

/**
 * One attempt of a delivery: read what to send, send it, record it. The
 * reads and the records of the attempts that a process's jobs make at the
 * same time are batched per tenant (Batcher): one statement loads a batch,
 * one statement records a batch of successes, and each job is acknowledged
 * only once its own attempt has been committed — so an attempt is never
 * recorded for a job that then runs again, and a job that dies before its
 * record is committed runs again (at least once), as before.
 */

export type AttemptVerdict =
  | { kind: 'skipped'; reason: string }
  /** The tenant is suspended: nothing was sent or recorded; the job is to wait for its resumption. */
  | { kind: 'suspended' }
  /** The gate refused: the endpoint has no free slot. Nothing was sent or recorded. */
  | { kind: 'busy' }
  | { kind: 'delivered' | 'retry' | 'gone' | 'given_up'; result: SendResult; endpointDisabled: boolean };

/**
 * Where the per-endpoint limit on requests in flight is kept (fairness.ts,
 * driven by the worker): `enter` right before the request — false when the
 * endpoint is full — and `leave` as soon as the response is in, before the
 * attempt is recorded. `leave` must not throw.
 */
export interface SendGate {
  enter(): Promise<boolean>;
  leave(): Promise<void>;
}

interface Loaded {
  delivery: DeliveryRow;
  endpoint: EndpointRow;
  payload: unknown;
}

type Skipped = { kind: 'skipped'; reason: string } | { kind: 'suspended' };

/**
 * Makes one attempt of a delivery and records it. `final` says no retry
 * follows, so a failure fails the delivery. A delivery that is no longer
 * pending is skipped: a job that runs again after succeeding sends nothing.
 */
export async function attemptDelivery(
  deps: DeliveryDeps,
  tenantId: string,
  deliveryId: string,
  final: boolean,
  gate?: SendGate,
  readAhead?: Promise<AttemptRead>,
): Promise<AttemptVerdict> {
  // The slot is asked for while the delivery is read: two round trips at once instead of one after the other.
  const entering: Promise<{ held: boolean } | { error: unknown }> = gate
    ? gate.enter().then(
        (held) => ({ held }),
        (error: unknown) => ({ error }),
      )
    : Promise.resolve({ held: true });
  let loaded: AttemptRead;
  try {
    loaded = (readAhead && (await readAhead.catch(() => undefined))) || (await readAttempt(deps.db, tenantId, deliveryId));
  } finally {
    // A skipped or failed read gives its slot back through the gate's leave (the caller's).
    await entering;
  }
  if ('kind' in loaded) return loaded;
  const { delivery, endpoint, payload } = loaded;
  const entered = await entering;
  if ('error' in entered) throw entered.error;
  if (!entered.held) return { kind: 'busy' };

  let result: SendResult;
  try {
    result = await sendSigned({
      url: endpoint.url,
      messageId: delivery.event_id,
      body: JSON.stringify(payload),
      secrets: signingSecrets(endpoint),
      userAgent: deps.settings.userAgent,
      timeoutMs: deps.settings.timeoutMs,
      allowPrivate: deps.settings.allowPrivate,
      propagateTrace: deps.settings.propagateTrace,
    });
  } catch (error) {
    await gate?.leave();
    throw error;
  }
  // After a success the slot is free at once: the next delivery to this endpoint need not wait for the record.
  // After a failure only once it is recorded, so a 410 (or a failure that disables the endpoint) is in force
  // before the next delivery to the endpoint reads it.
  const leaving = result.ok ? gate?.leave() : undefined;
  try {
    const kind = result.ok ? 'delivered' : result.statusCode === 410 ? 'gone' : final ? 'given_up' : 'retry';
    const recorded = await batchesFor(deps.db).records.submit(tenantId, { deps, delivery, endpoint, result, verdict: kind });
    if (recorded === 'vanished') return { kind: 'skipped', reason: 'the delivery or its endpoint was deleted during the attempt' };
    // Another attempt finished the delivery meanwhile: no retry for this one.
    if (recorded.superseded && kind === 'retry') return { kind: 'skipped', reason: 'the delivery was finished by another attempt' };
    // An endpoint disabled by this very failure gets no retry.
    return { kind: kind === 'retry' && recorded.endpointDisabled ? 'given_up' : kind, result, endpointDisabled: recorded.endpointDisabled };
  } finally {
    await (leaving ?? gate?.leave());
  }
}

/** What an attempt sends (or why it is skipped), read before the request. */
export type AttemptRead = Loaded | Skipped;

/**
 * Reads what an attempt of the delivery will send, batched with the reads
 * of the other attempts starting meanwhile; the same read attemptDelivery
 * makes, for a caller that knows which delivery runs next (`readAhead`).
 */
export function readAttempt(db: Knex, tenantId: string, deliveryId: string): Promise<AttemptRead> {
  return batchesFor(db).loads.submit(tenantId, deliveryId);
}

// ---------------------------------------------------------------------------
// Batches, one set per database handle

interface Batches {
  loads: Batcher<string, AttemptRead>;
  records: Batcher<AttemptRecord, Recorded>;
}

const batchesFor = onePer(
  (db: Knex): Batches => ({
    loads: new Batcher((tenantId, deliveryIds) => settleAll(deliveryIds.length, () => loadAttempts(db, tenantId, deliveryIds))),
    records: new Batcher((tenantId, records) => recordAttempts(db, tenantId, records)),
  }),
);

// ---------------------------------------------------------------------------
// Loading: what a batch of attempts sends, in one statement

const ENDPOINT_COLUMNS = [
  'id',
  'tenant_id',
  'url',
  'description',
  'event_types',
  'enabled',
  'disabled_reason',
  'disabled_at',
  'secret',
  'previous_secret',
  'previous_secret_expires_at',
  'consecutive_failures',
  'failing_since',
  'last_success_at',
  'last_failure_at',
  'created_at',
  'updated_at',
] as const;

/**
 * The deliveries, their endpoints and their events' payloads, read before
 * the requests so no transaction stays open while receivers answer. An
 * endpoint found disabled or deleted cancels its delivery.
 */
async function loadAttempts(db: Knex, tenantId: string, deliveryIds: string[]): Promise<Array<Loaded | Skipped>> {
  // One round trip (queryAsTenant). Each row is found through its primary key — a lateral lookup per id,
  // fenced by OFFSET 0 — as a table never analyzed yet (a fresh database) would otherwise tempt the
  // planner into scanning all the tenant's rows.
  const rows = await queryAsTenant<Record<string, unknown>>(
    db,
    tenantId,
    `select d.*, ${ENDPOINT_COLUMNS.map((column) => `e.${column} as "endpoint.${column}"`).join(', ')},
            ev.id is not null as event_found, ev.payload as event_payload, tenant.status as tenant_status
       from (select status from tenants where id = ${literal(tenantId)}) tenant
      cross join unnest(${uuidArray(deliveryIds)}) as wanted(id)
      cross join lateral (select * from webhook_deliveries where id = wanted.id and tenant_id = ${literal(tenantId)} offset 0) d
       left join lateral (select * from webhook_endpoints where id = d.endpoint_id and tenant_id = d.tenant_id offset 0) e on true
       left join lateral (select id, payload from webhook_events where id = d.event_id and tenant_id = d.tenant_id offset 0) ev on true`,
  );
  const found = new Map(rows.map((row) => [row.id as string, row]));
  const outcomes: Array<Loaded | Skipped> = [];
  const canceled: Array<{ id: string; reason: string }> = [];
  for (const deliveryId of deliveryIds) {
    const row = found.get(deliveryId);
    if (!row) {
      outcomes.push({ kind: 'skipped', reason: 'the delivery no longer exists' });
      continue;
    }
    const { delivery, endpoint } = splitRow(row);
    if (row.tenant_status === 'suspended') outcomes.push({ kind: 'suspended' });
    else if (delivery.status !== 'pending') outcomes.push({ kind: 'skipped', reason: `the delivery is already ${delivery.status}` });
    else if (!endpoint || !endpoint.enabled) {
      const reason = endpoint ? 'The endpoint is disabled.' : 'The endpoint was deleted.';
      canceled.push({ id: deliveryId, reason });
      outcomes.push({ kind: 'skipped', reason });
    } else if (!row.event_found) outcomes.push({ kind: 'skipped', reason: 'the event no longer exists' });
    else outcomes.push({ delivery, endpoint, payload: row.event_payload });
  }
  if (canceled.length > 0) {
    await withTenant(db, tenantId, async (trx) => {
      for (const { id, reason } of canceled) {
        await trx('webhook_deliveries').where({ id, status: 'pending' }).update({ status: 'canceled', last_error: reason, next_attempt_at: null, updated_at: trx.fn.now() });
      }
    });
  }
  return outcomes;
}

/** A joined row back into the delivery and its endpoint (null when the endpoint is gone). */
function splitRow(row: Record<string, unknown>): { delivery: DeliveryRow; endpoint: EndpointRow | null } {
  const delivery: Record<string, unknown> = {};
  const endpoint: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(row)) {
    if (name.startsWith('endpoint.')) endpoint[name.slice('endpoint.'.length)] = value;
    else if (name !== 'event_found' && name !== 'event_payload' && name !== 'tenant_status') delivery[name] = value;
  }
  return { delivery: delivery as unknown as DeliveryRow, endpoint: endpoint.id ? (endpoint as unknown as EndpointRow) : null };
}

// ---------------------------------------------------------------------------
// Recording

interface AttemptRecord {
  deps: DeliveryDeps;
  delivery: DeliveryRow;
  endpoint: EndpointRow;
  result: SendResult;
  verdict: Exclude<AttemptVerdict['kind'], 'skipped' | 'suspended' | 'busy'>;
}

/**
 * `superseded`: the delivery was no longer pending (another attempt
 * overlapping this one finished it), so its status was left alone.
 * 'vanished': the endpoint or the delivery was deleted while the request was
 * in flight, and nothing was recorded.
 */
type Recorded = { endpointDisabled: boolean; superseded: boolean } | 'vanished';

/**
 * Records a batch in arrival order: each run of successes in one
 * transaction and one statement, each failure on its own (it may disable
 * the endpoint and emit an event). A failure's error settles only its own
 * item or run.
 */
async function recordAttempts(db: Knex, tenantId: string, records: AttemptRecord[]): Promise<Array<Settled<Recorded>>> {
  const outcomes: Array<Settled<Recorded>> = [];
  let index = 0;
  while (index < records.length) {
    if (!records[index].result.ok) {
      const [outcome] = await settleAll(1, async () => [await recordFailure(records[index])]);
      outcomes.push(outcome);
      index += 1;
      continue;
    }
    // One row per delivery in a statement: a second attempt of the same delivery waits for the next run.
    const run: AttemptRecord[] = [];
    const deliveries = new Set<string>();
    while (index < records.length && records[index].result.ok && !deliveries.has(records[index].delivery.id)) {
      deliveries.add(records[index].delivery.id);
      run.push(records[index]);
      index += 1;
    }
    outcomes.push(...(await settleAll(run.length, () => recordSuccesses(db, tenantId, run))));
  }
  return outcomes;
}

/**
 * An endpoint whose health a success changes: it was failing, or its last
 * success is older than a second (so a busy endpoint's row is written once a
 * second, not once per batch, and batches of two processes do not queue on
 * it).
 */
const STALE_HEALTH = `consecutive_failures <> 0 or failing_since is not null or last_success_at is null or last_success_at < now() - interval '1 second'`;

/**
 * Successful attempts of one tenant, in one statement: the endpoints' health
 * back to healthy, each delivery's attempt counted and (if still pending)
 * marked succeeded, and each attempt logged as a row. Endpoint rows are
 * locked first (key share, in id order: it keeps them from being deleted
 * under the batch without making batches wait for each other), those whose
 * health changes are updated, then the deliveries are locked in id order —
 * the order an endpoint's deletion and a failure's record take them in, so
 * none of them can deadlock. A delivery deleted meanwhile (with its endpoint
 * or alone) is simply not found: nothing is recorded for it.
 */
async function recordSuccesses(db: Knex, tenantId: string, run: AttemptRecord[]): Promise<Recorded[]> {
  const tenant = literal(tenantId);
  // One statement in one round trip (queryAsTenant: its implicit transaction commits it). Rows are found
  // and locked through their primary keys, one lateral lookup per id in id order, and updated by id: a
  // table never analyzed yet (a fresh database) would otherwise tempt the planner into scanning the
  // tenant's rows.
  const rows = await queryAsTenant<{ id: string; previous_status: string }>(
    db,
    tenantId,
    `with input as (
       select * from unnest(
         ${uuidArray(run.map(() => newId()))},
         ${uuidArray(run.map((record) => record.delivery.id))},
         ${uuidArray(run.map((record) => record.endpoint.id))},
         ${intArray(run.map((record) => record.result.statusCode))},
         ${intArray(run.map((record) => record.result.durationMs))},
         ${textArray(run.map((record) => record.result.responseBody))}
       ) as i(attempt_id, delivery_id, endpoint_id, status_code, duration_ms, response_body)
     ),
     endpoints as (
       select w.id from (select distinct endpoint_id from input order by endpoint_id) i
        cross join lateral (select id from webhook_endpoints where id = i.endpoint_id and tenant_id = ${tenant} for key share) w
     ),
     healthy as (
       update webhook_endpoints
          set consecutive_failures = 0, failing_since = null, last_success_at = now(), updated_at = now()
        where id = any(array(select id from endpoints)) and (${STALE_HEALTH})
       returning id
     ),
     previous as (
       select p.id, p.status from (select delivery_id from input order by delivery_id) i
        cross join lateral (
          select id, status from webhook_deliveries
           where id = i.delivery_id and tenant_id = ${tenant} and endpoint_id in (select id from endpoints)
             and (select count(*) from healthy) >= 0
             for update
        ) p
     ),
     counted as (
       update webhook_deliveries d
          set attempts = d.attempts + 1,
              status = case when p.status = 'pending' then 'succeeded' else d.status end,
              last_status_code = case when p.status = 'pending' then i.status_code else d.last_status_code end,
              last_error = case when p.status = 'pending' then null else d.last_error end,
              delivered_at = case when p.status = 'pending' then now() else d.delivered_at end,
              next_attempt_at = case when p.status = 'pending' then null else d.next_attempt_at end,
              updated_at = case when p.status = 'pending' then now() else d.updated_at end
         from previous p join input i on i.delivery_id = p.id
        where d.id = p.id and d.id = any(array(select id from previous))
       returning d.id, d.attempts, d.endpoint_id, d.event_id, d.event_type, p.status as previous_status
     ),
     logged as (
       insert into webhook_attempts (id, tenant_id, delivery_id, endpoint_id, event_id, event_type, attempt, outcome, status_code, duration_ms, error, response_body)
       select i.attempt_id, ${tenant}, c.id, c.endpoint_id, c.event_id, c.event_type, c.attempts, 'succeeded', i.status_code, i.duration_ms, null, i.response_body
         from counted c join input i on i.delivery_id = c.id
       on conflict (id) do nothing
     )
     select id, previous_status from counted`,
  );
  const previous = new Map(rows.map((row) => [row.id, row.previous_status]));
  return run.map((record) => {
    const status = previous.get(record.delivery.id);
    return status === undefined ? 'vanished' : { endpointDisabled: false, superseded: status !== 'pending' };
  });
}

/** Thrown inside recordFailure's transaction to roll it back when a row it needs was deleted mid-attempt. */
class Vanished extends Error {}

/** Stores a failed attempt and its effect on the delivery and on the endpoint's health. */
async function recordFailure({ deps, delivery, endpoint, result, verdict }: AttemptRecord): Promise<Recorded> {
  try {
    return await withTenant(deps.db, delivery.tenant_id, async (trx) => {
      // The endpoint row first, then the delivery: the order deleting an endpoint cascades in, so the two cannot deadlock.
      const endpointDisabled = await recordFailureHealth(trx, deps, endpoint, verdict);
      // The attempt happened, so it is counted and logged whatever the delivery's state now.
      const [counted] = await trx('webhook_deliveries').where({ id: delivery.id }).increment('attempts', 1).returning(['attempts', 'status']);
      if (!counted) throw new Vanished();
      await trx('webhook_attempts').insert({
        id: newId(),
        tenant_id: delivery.tenant_id,
        delivery_id: delivery.id,
        endpoint_id: endpoint.id,
        event_id: delivery.event_id,
        event_type: delivery.event_type,
        attempt: counted.attempts,
        outcome: 'failed',
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
          status: verdict === 'retry' && !endpointDisabled ? 'pending' : 'failed',
          last_status_code: result.statusCode,
          last_error: result.error,
          delivered_at: null,
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
async function recordFailureHealth(trx: Knex.Transaction, deps: DeliveryDeps, endpoint: EndpointRow, verdict: AttemptRecord['verdict']): Promise<boolean> {
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
