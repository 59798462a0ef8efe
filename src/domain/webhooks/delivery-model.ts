import type { Knex } from 'knex';
import type { EventSink } from './events';
import type { EventType } from './event-types';

/** A webhook delivery as deliveries.ts keeps it and attempts.ts carries it out. */

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
  propagateTrace: boolean;
}

export interface DeliveryDeps {
  db: Knex;
  events: EventSink;
  settings: DeliverySettings;
}

export interface DeliveryRow {
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
