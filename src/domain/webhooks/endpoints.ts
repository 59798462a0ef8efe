import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { withTenant } from '../../db/tenant-scope';
import { assertRoomFor, lockTenantCounters, type Quotas } from '../tenants/quotas';
import { badRequest, conflict, notFound } from '../../errors';
import { newId } from '../ids';
import { paginate, type Page, type PageRequest } from '../pagination';
import type { EventType } from './event-types';
import { unsafeUrlReason } from './url-safety';

/** How long a rotated-out secret keeps signing beside the new one. */
export const PREVIOUS_SECRET_GRACE_MS = 24 * 60 * 60 * 1000;

export interface EndpointRow {
  id: string;
  tenant_id: string;
  url: string;
  description: string | null;
  event_types: EventType[];
  enabled: boolean;
  disabled_reason: string | null;
  disabled_at: Date | null;
  secret: string;
  previous_secret: string | null;
  previous_secret_expires_at: Date | null;
  consecutive_failures: number;
  failing_since: Date | null;
  last_success_at: Date | null;
  last_failure_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

export interface EndpointView {
  id: string;
  url: string;
  description: string | null;
  event_types: EventType[];
  enabled: boolean;
  disabled_reason: string | null;
  disabled_at: string | null;
  health: {
    status: 'healthy' | 'failing' | 'disabled';
    consecutive_failures: number;
    failing_since: string | null;
    last_success_at: string | null;
    last_failure_at: string | null;
    /** Share of attempts in the last 24 hours that succeeded; null without attempts. */
    success_rate_24h: number | null;
    attempts_24h: number;
  };
  previous_secret_expires_at: string | null;
  created_at: string;
  updated_at: string;
}

const iso = (value: Date | null) => (value ? value.toISOString() : null);

function toView(row: EndpointRow & { attempts_24h?: number; succeeded_24h?: number }): EndpointView {
  const attempts = Number(row.attempts_24h ?? 0);
  return {
    id: row.id,
    url: row.url,
    description: row.description,
    event_types: row.event_types,
    enabled: row.enabled,
    disabled_reason: row.disabled_reason,
    disabled_at: iso(row.disabled_at),
    health: {
      status: !row.enabled ? 'disabled' : row.consecutive_failures > 0 ? 'failing' : 'healthy',
      consecutive_failures: row.consecutive_failures,
      failing_since: iso(row.failing_since),
      last_success_at: iso(row.last_success_at),
      last_failure_at: iso(row.last_failure_at),
      success_rate_24h: attempts > 0 ? Number(row.succeeded_24h ?? 0) / attempts : null,
      attempts_24h: attempts,
    },
    previous_secret_expires_at: row.previous_secret_expires_at && row.previous_secret_expires_at > new Date() ? row.previous_secret_expires_at.toISOString() : null,
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString(),
  };
}

/** `whsec_` and the base64 of 32 random bytes, the form Standard Webhooks libraries take. */
export const newSecret = (): string => `whsec_${randomBytes(32).toString('base64')}`;

export interface EndpointSettings {
  allowPrivate: boolean;
}

export interface NewEndpoint {
  url: string;
  description?: string | null;
  event_types?: EventType[];
  enabled?: boolean;
}

function assertSafeUrl(url: string, settings: EndpointSettings): void {
  const reason = unsafeUrlReason(url, settings.allowPrivate);
  if (reason) throw badRequest(`The webhook URL ${reason}.`, { field: 'url' });
}

/** Endpoints with their 24-hour attempt counts, for the health figures. */
function withHealth(db: Knex, tenantId: string) {
  return db<EndpointRow>('webhook_endpoints as e')
    .select(
      'e.*',
      db.raw(`(select count(*) from webhook_attempts a where a.endpoint_id = e.id and a.created_at > now() - interval '24 hours')::int as attempts_24h`),
      db.raw(
        `(select count(*) from webhook_attempts a where a.endpoint_id = e.id and a.outcome = 'succeeded' and a.created_at > now() - interval '24 hours')::int as succeeded_24h`,
      ),
    )
    .where('e.tenant_id', tenantId);
}

/**
 * Creates an endpoint; the secret is in the result and is never shown again.
 * Endpoints are counted under the tenant's counter lock so concurrent
 * creations cannot pass the webhook_endpoints quota together.
 */
export async function createEndpoint(
  db: Knex,
  tenantId: string,
  input: NewEndpoint,
  settings: EndpointSettings,
  quotas: Quotas,
): Promise<{ endpoint: EndpointView; secret: string }> {
  assertSafeUrl(input.url, settings);
  const secret = newSecret();
  return withTenant(db, tenantId, async (trx) => {
    await lockTenantCounters(trx, tenantId);
    const { count } = (await trx('webhook_endpoints').where({ tenant_id: tenantId }).count('* as count').first()) as { count: number };
    assertRoomFor(quotas, 'webhook_endpoints', Number(count), 1);
    const endpointId = newId();
    await trx('webhook_endpoints').insert({
      id: endpointId,
      tenant_id: tenantId,
      url: input.url,
      description: input.description ?? null,
      event_types: [...new Set(input.event_types ?? [])],
      enabled: input.enabled ?? true,
      ...(input.enabled === false ? { disabled_reason: 'Disabled on request.', disabled_at: trx.fn.now() } : {}),
      secret,
    });
    return { endpoint: await getEndpoint(trx, tenantId, endpointId), secret };
  });
}

export async function listEndpoints(db: Knex, tenantId: string, page: PageRequest): Promise<Page<EndpointView>> {
  return withTenant(db, tenantId, (trx) => paginate(withHealth(trx, tenantId), page, toView, 'e.id'));
}

export async function getEndpoint(db: Knex, tenantId: string, endpointId: string): Promise<EndpointView> {
  const row = await withTenant(db, tenantId, (trx) => withHealth(trx, tenantId).where('e.id', endpointId).first());
  if (!row) throw notFound('Webhook endpoint');
  return toView(row);
}

/** The stored endpoint with its secrets, for signing; never returned by the API. */
export async function loadEndpoint(db: Knex, tenantId: string, endpointId: string): Promise<EndpointRow> {
  const row = await withTenant(db, tenantId, (trx) => trx<EndpointRow>('webhook_endpoints').first('*').where({ id: endpointId, tenant_id: tenantId }));
  if (!row) throw notFound('Webhook endpoint');
  return row;
}

export interface EndpointChanges {
  url?: string;
  description?: string | null;
  event_types?: EventType[];
  enabled?: boolean;
}

/**
 * Changes an endpoint; `enabled: true` re-enables a disabled one and clears
 * its failure streak, and so does a new URL: the old address's failures say
 * nothing about the new one (and would otherwise count towards disabling it).
 */
export async function updateEndpoint(db: Knex, tenantId: string, endpointId: string, changes: EndpointChanges, settings: EndpointSettings): Promise<EndpointView> {
  if (changes.url !== undefined) assertSafeUrl(changes.url, settings);
  return withTenant(db, tenantId, (trx) => applyEndpointChanges(trx, tenantId, endpointId, changes));
}

async function applyEndpointChanges(db: Knex.Transaction, tenantId: string, endpointId: string, changes: EndpointChanges): Promise<EndpointView> {
  const update: Record<string, unknown> = { updated_at: db.fn.now() };
  if (changes.url !== undefined) {
    update.url = changes.url;
    // SET expressions read the row as it was, so `url` here is the old one: the same URL again keeps the streak.
    update.consecutive_failures = db.raw('case when url = ? then consecutive_failures else 0 end', [changes.url]);
    update.failing_since = db.raw('case when url = ? then failing_since else null end', [changes.url]);
  }
  if (changes.description !== undefined) update.description = changes.description;
  if (changes.event_types !== undefined) update.event_types = [...new Set(changes.event_types)];
  if (changes.enabled === true) Object.assign(update, { enabled: true, disabled_reason: null, disabled_at: null, consecutive_failures: 0, failing_since: null });
  if (changes.enabled === false) Object.assign(update, { enabled: false, disabled_reason: 'Disabled on request.', disabled_at: db.fn.now() });
  const updated = await db('webhook_endpoints').where({ id: endpointId, tenant_id: tenantId }).update(update);
  if (updated === 0) throw notFound('Webhook endpoint');
  return getEndpoint(db, tenantId, endpointId);
}

export async function deleteEndpoint(db: Knex, tenantId: string, endpointId: string): Promise<void> {
  const deleted = await withTenant(db, tenantId, (trx) => trx('webhook_endpoints').where({ id: endpointId, tenant_id: tenantId }).delete());
  if (deleted === 0) throw notFound('Webhook endpoint');
}

/**
 * A new secret; the old one keeps signing beside it for 24 hours so
 * receivers can switch without losing messages. Only one old secret is
 * kept, so a second rotation during that grace period is refused (409, with
 * the time it is allowed again): it would silently retire a secret that
 * receivers were promised for the rest of the 24 hours.
 */
export async function rotateSecret(db: Knex, tenantId: string, endpointId: string): Promise<{ endpoint: EndpointView; secret: string }> {
  return withTenant(db, tenantId, (trx) => rotateIn(trx, tenantId, endpointId));
}

async function rotateIn(db: Knex.Transaction, tenantId: string, endpointId: string): Promise<{ endpoint: EndpointView; secret: string }> {
  const secret = newSecret();
  const updated = await db('webhook_endpoints')
    .where({ id: endpointId, tenant_id: tenantId })
    .andWhere((graceOver) => graceOver.whereNull('previous_secret_expires_at').orWhere('previous_secret_expires_at', '<=', db.fn.now()))
    .update({
      previous_secret: db.ref('secret'),
      previous_secret_expires_at: new Date(Date.now() + PREVIOUS_SECRET_GRACE_MS),
      secret,
      updated_at: db.fn.now(),
    });
  if (updated === 0) {
    const endpoint = await loadEndpoint(db, tenantId, endpointId);
    const allowedAt = (endpoint.previous_secret_expires_at ?? new Date()).toISOString();
    throw conflict(`The secret was rotated less than 24 hours ago and the previous one still signs; it can be rotated again at ${allowedAt}.`, {
      rotate_again_at: allowedAt,
    });
  }
  return { endpoint: await getEndpoint(db, tenantId, endpointId), secret };
}

/** The secrets that sign now: the current one, and the previous one during its grace period. */
export function signingSecrets(endpoint: EndpointRow, now = new Date()): string[] {
  const secrets = [endpoint.secret];
  if (endpoint.previous_secret && endpoint.previous_secret_expires_at && endpoint.previous_secret_expires_at > now) secrets.push(endpoint.previous_secret);
  return secrets;
}
