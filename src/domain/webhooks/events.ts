import type { Knex } from 'knex';
import { newId } from '../ids';
import type { EventType } from './event-types';

/** What a fan-out needs to find an event. */
export interface PendingEvent {
  tenantId: string;
  eventId: string;
}

/**
 * Hears about events once their transaction has committed. The queue layer
 * enqueues their fan-out; a failure there is caught by the reconcile tick,
 * so announcing never fails the operation that caused the event.
 */
export interface EventSink {
  /** All the events one commit stored, at once, so they can be enqueued in one bulk add. */
  announce(events: readonly PendingEvent[]): Promise<void>;
}

export interface EventEnvelope {
  id: string;
  type: EventType;
  created_at: string;
  tenant_id: string;
  data: Record<string, unknown>;
}

/** Receivers get at most this much JSON per event. */
export const MAX_ENVELOPE_BYTES = 20 * 1024;

/**
 * Stores an event in the caller's transaction (so it exists exactly when
 * the change it describes does) and announces it after the commit. A tenant
 * with no enabled endpoint gets the event stored for replay but marked as
 * fanned out, so no queue work is spent on it.
 */
export async function recordEvent(
  trx: Knex.Transaction,
  sink: EventSink,
  tenantId: string,
  type: EventType,
  data: Record<string, unknown>,
): Promise<EventEnvelope> {
  const [envelope] = await recordEvents(trx, sink, tenantId, type, [data]);
  return envelope;
}

/** Rows per insert statement in recordEvents: 200 envelopes of up to 20 KB stay well inside one statement. */
const EVENT_INSERT_SLICE = 200;

/**
 * recordEvent for many events of one type at once (e.g. a 1000-document
 * batch): one statement per slice of rows, which also looks for an enabled
 * endpoint, instead of a round trip per event. Same guarantees: stored in
 * the caller's transaction, announced only after it commits.
 */
export async function recordEvents(
  trx: Knex.Transaction,
  sink: EventSink,
  tenantId: string,
  type: EventType,
  dataList: ReadonlyArray<Record<string, unknown>>,
): Promise<EventEnvelope[]> {
  const createdAt = new Date().toISOString();
  const envelopes: EventEnvelope[] = dataList.map((data) => ({ id: newId(), type, created_at: createdAt, tenant_id: tenantId, data: boundData(data) }));
  const announced: PendingEvent[] = [];
  for (let start = 0; start < envelopes.length; start += EVENT_INSERT_SLICE) {
    const slice = envelopes.slice(start, start + EVENT_INSERT_SLICE);
    const result = await trx.raw(
      `insert into webhook_events (id, tenant_id, type, payload, created_at, fanned_out_at)
       select e.id, ?, ?, e.payload, ?,
              case when exists (select 1 from webhook_endpoints where tenant_id = ? and enabled) then null else now() end
         from jsonb_to_recordset(?::jsonb) as e(id uuid, payload jsonb)
       returning id, fanned_out_at is null as needs_fanout`,
      [tenantId, type, createdAt, tenantId, JSON.stringify(slice.map((envelope) => ({ id: envelope.id, payload: envelope })))],
    );
    const fannedOut = new Set((result.rows as Array<{ id: string; needs_fanout: boolean }>).filter((row) => !row.needs_fanout).map((row) => row.id));
    // In the order they were recorded, whatever order the insert answered in.
    for (const envelope of slice) if (!fannedOut.has(envelope.id)) announced.push({ tenantId, eventId: envelope.id });
  }
  if (announced.length > 0) {
    trx.executionPromise.then(
      () => sink.announce(announced).catch(() => undefined),
      () => undefined,
    );
  }
  return envelopes;
}

/**
 * Keeps an event small: large metadata is dropped first, then long strings
 * are cut, and the envelope says what was left out.
 */
function boundData(data: Record<string, unknown>): Record<string, unknown> {
  if (Buffer.byteLength(JSON.stringify(data)) <= MAX_ENVELOPE_BYTES - 512) return data;
  const { metadata: _metadata, ...rest } = data;
  const withoutMetadata: Record<string, unknown> = { ...rest, metadata_omitted: true };
  if (Buffer.byteLength(JSON.stringify(withoutMetadata)) <= MAX_ENVELOPE_BYTES - 512) return withoutMetadata;
  const cut = { ...shortenStrings(withoutMetadata, 1000), truncated: true };
  if (Buffer.byteLength(JSON.stringify(cut)) <= MAX_ENVELOPE_BYTES - 512) return cut;
  // Still too big (e.g. tags full of characters JSON escapes six bytes wide): keep only short scalars.
  const scalars = Object.fromEntries(Object.entries(cut).filter(([, value]) => value === null || typeof value !== 'object'));
  return { ...shortenStrings(scalars, 200), truncated: true };
}

/** Cuts strings longer than `max` characters, never between the two halves of a surrogate pair (jsonb refuses a lone one). */
function shortenStrings(data: Record<string, unknown>, max: number): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(data).map(([key, value]) => [key, typeof value === 'string' && value.length > max ? `${value.slice(0, max).replace(/[\uD800-\uDBFF]$/, '')}…` : value]),
  );
}
