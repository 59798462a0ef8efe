import { hash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Knex } from 'knex';
import { notFound } from '../../errors';
import { newId } from '../ids';
import { paginate, type Page, type PageRequest } from '../pagination';
import { acrossTenants, withTenant } from '../../db/tenant-scope';
import { assertRoomFor, lockTenantCounters, type Quotas } from '../tenants/quotas';
import { customDomainOf, toTenant, type Tenant, type TenantRow } from '../tenants/tenants';
import type { CredentialChanges } from './credential-changes';

export const SCOPES = [
  'documents:read',
  'documents:write',
  'search',
  'analytics:read',
  'webhooks:manage',
  'keys:manage',
  'jobs:manage',
  'admin',
] as const;
export type Scope = (typeof SCOPES)[number];

export const DEFAULT_SCOPES: Scope[] = ['documents:read', 'documents:write', 'search'];

/** Keys are recognisable in logs and secret scanners by this prefix. */
export const KEY_PREFIX = 'rw_live_';
/** 30 random bytes → 40 base64url characters after the prefix. */
const KEY_RANDOM_BYTES = 30;
/** What createApiKey hands out: anything else is no key of ours, and costs no lookup. */
const KEY_FORMAT = new RegExp(`^${KEY_PREFIX}[A-Za-z0-9_-]{${Math.ceil((KEY_RANDOM_BYTES * 4) / 3)}}$`);
/** How much of a key is kept in clear to tell keys apart. */
const VISIBLE_PREFIX_LENGTH = KEY_PREFIX.length + 6;

export interface ApiKey {
  id: string;
  tenant_id: string;
  name: string;
  prefix: string;
  scopes: Scope[];
  expires_at: string | null;
  revoked_at: string | null;
  last_used_at: string | null;
  request_count: number;
  created_at: string;
}

interface ApiKeyRow {
  id: string;
  tenant_id: string;
  name: string;
  prefix: string;
  key_hash: string;
  scopes: Scope[];
  expires_at: Date | null;
  revoked_at: Date | null;
  last_used_at: Date | null;
  request_count: number;
  created_at: Date;
}

const iso = (value: Date | null) => (value ? value.toISOString() : null);

const toApiKey = (row: ApiKeyRow): ApiKey => ({
  id: row.id,
  tenant_id: row.tenant_id,
  name: row.name,
  prefix: row.prefix,
  scopes: row.scopes,
  expires_at: iso(row.expires_at),
  revoked_at: iso(row.revoked_at),
  last_used_at: iso(row.last_used_at),
  request_count: row.request_count,
  created_at: row.created_at.toISOString(),
});

export const hashKey = (key: string): string => hash('sha256', key, 'hex');

export interface NewApiKey {
  name: string;
  scopes?: Scope[];
  expires_at?: string | null;
}

/** Keys that still authenticate: neither revoked nor expired. These are what the api_keys quota counts. */
export function usableKeys(trx: Knex, tenantId: string): Knex.QueryBuilder {
  return trx('api_keys')
    .where({ tenant_id: tenantId })
    .whereNull('revoked_at')
    .andWhere((live) => live.whereNull('expires_at').orWhere('expires_at', '>', trx.fn.now()));
}

/**
 * Creates a key; the plaintext is in the result and nowhere else, ever.
 * Usable keys are counted under the tenant's counter lock, so concurrent
 * creations cannot pass the api_keys quota together.
 */
export async function createApiKey(db: Knex, tenantId: string, input: NewApiKey, quotas: Quotas): Promise<{ apiKey: ApiKey; key: string }> {
  const key = KEY_PREFIX + randomBytes(KEY_RANDOM_BYTES).toString('base64url');
  const row = await withTenant(db, tenantId, async (trx) => {
    await lockTenantCounters(trx, tenantId);
    const { count } = (await usableKeys(trx, tenantId).count('* as count').first()) as { count: number };
    assertRoomFor(quotas, 'api_keys', Number(count), 1);
    const [inserted] = await trx<ApiKeyRow>('api_keys')
    .insert({
      id: newId(),
      tenant_id: tenantId,
      name: input.name,
      prefix: key.slice(0, VISIBLE_PREFIX_LENGTH),
      key_hash: hashKey(key),
      scopes: [...new Set(input.scopes ?? DEFAULT_SCOPES)],
      expires_at: input.expires_at ? new Date(input.expires_at) : null,
    })
    .returning('*');
    return inserted;
  });
  return { apiKey: toApiKey(row), key };
}

/** Active (not revoked) keys of a tenant; never the hash. */
export async function listApiKeys(db: Knex, tenantId: string, page: PageRequest): Promise<Page<ApiKey>> {
  return withTenant(db, tenantId, (trx) => paginate(trx<ApiKeyRow>('api_keys').select('*').where({ tenant_id: tenantId }).whereNull('revoked_at'), page, toApiKey));
}

/** Revokes a key; every API process stops accepting it before this returns. */
export async function revokeApiKey(db: Knex, changes: CredentialChanges, tenantId: string, keyId: string): Promise<void> {
  const updated = await changes.announce({ keyId }, () =>
    withTenant(db, tenantId, (trx) =>
      trx('api_keys').where({ id: keyId, tenant_id: tenantId }).whereNull('revoked_at').update({ revoked_at: trx.fn.now() }),
    ),
  );
  if (updated === 0) throw notFound('API key');
}

/** Replaces a key's scopes; every API process holds the key to them before this returns. */
export async function setApiKeyScopes(db: Knex, changes: CredentialChanges, tenantId: string, keyId: string, scopes: Scope[]): Promise<ApiKey> {
  const [row] = await changes.announce({ keyId }, () =>
    withTenant(db, tenantId, (trx) =>
      trx<ApiKeyRow>('api_keys').where({ id: keyId, tenant_id: tenantId }).whereNull('revoked_at').update({ scopes: [...new Set(scopes)] }).returning('*'),
    ),
  );
  if (!row) throw notFound('API key');
  return toApiKey(row);
}

export type KeyVerdict =
  | { ok: true; apiKey: ApiKey; tenant: Tenant; domainTenant: Tenant | null }
  | { ok: false; reason: 'unknown' }
  | { ok: false; reason: 'revoked' | 'expired'; keyId: string };

export const isWellFormedKey = (presented: string): boolean => KEY_FORMAT.test(presented);

/**
 * Looks a presented key up by its SHA-256, with its tenant, in one query,
 * and checks it is usable. Which tenant a key belongs to is what this
 * finds out, so it is one of the few cross-tenant reads. The hash is
 * compared again in constant time so no early-exit comparison ever sees
 * secret-derived bytes.
 */
export async function verifyApiKey(db: Knex, presented: string, options: { host?: string; now?: Date } = {}): Promise<KeyVerdict> {
  if (!isWellFormedKey(presented)) return { ok: false, reason: 'unknown' };
  const digest = hashKey(presented);
  const domain = customDomainOf(options.host);
  const row = await acrossTenants(db, (trx) =>
    trx('api_keys as k')
      .join('tenants as t', 't.id', 'k.tenant_id')
      .first(
        trx.raw('row_to_json(k.*) as key'),
        trx.raw('row_to_json(t.*) as tenant'),
        // The tenant whose custom domain the request came in on, in the same round trip.
        trx.raw('(select row_to_json(d.*) from tenants d where d.custom_domain = ?) as domain_tenant', [domain]),
      )
      .where('k.key_hash', digest),
  );
  const now = options.now ?? new Date();
  if (!row) return { ok: false, reason: 'unknown' };
  const key = reviveDates<ApiKeyRow>(row.key, ['expires_at', 'revoked_at', 'last_used_at', 'created_at']);
  if (!timingSafeEqual(Buffer.from(key.key_hash, 'hex'), Buffer.from(digest, 'hex'))) return { ok: false, reason: 'unknown' };
  if (key.revoked_at) return { ok: false, reason: 'revoked', keyId: key.id };
  if (key.expires_at && key.expires_at <= now) return { ok: false, reason: 'expired', keyId: key.id };
  const tenantOf = (json: Record<string, unknown>) => toTenant(reviveDates<TenantRow>(json, ['created_at', 'updated_at']));
  return { ok: true, apiKey: toApiKey(key), tenant: tenantOf(row.tenant), domainTenant: row.domain_tenant ? tenantOf(row.domain_tenant) : null };
}

/** row_to_json gives timestamps as strings; the row mappers expect Dates. */
function reviveDates<Row>(row: Record<string, unknown>, columns: string[]): Row {
  const revived = { ...row };
  for (const column of columns) if (typeof revived[column] === 'string') revived[column] = new Date(revived[column] as string);
  return revived as Row;
}

/**
 * Counts key use in memory and writes it in one statement per flush, so
 * authentication adds no write to every request.
 */
export class KeyUsageRecorder {
  private pending = new Map<string, { count: number; lastUsed: Date }>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly db: Knex,
    private readonly flushEveryMs: number,
    private readonly onError: (error: unknown) => void,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.flush().catch(this.onError), this.flushEveryMs);
    this.timer.unref();
  }

  record(keyId: string, at = new Date()): void {
    const entry = this.pending.get(keyId);
    if (entry) {
      entry.count += 1;
      entry.lastUsed = at;
    } else {
      this.pending.set(keyId, { count: 1, lastUsed: at });
    }
  }

  async flush(): Promise<void> {
    if (this.pending.size === 0) return;
    const batch = this.pending;
    this.pending = new Map();
    // In id order, so two processes flushing overlapping keys lock them in the same order.
    const rows = [...batch]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([id, usage]) => ({ id, count: usage.count, last_used: usage.lastUsed.toISOString() }));
    try {
      await acrossTenants(this.db, (trx) =>
        trx.raw(
        `update api_keys k set request_count = k.request_count + u.count, last_used_at = greatest(k.last_used_at, u.last_used)
           from jsonb_to_recordset(?::jsonb) as u(id uuid, count int, last_used timestamptz)
          where k.id = u.id`,
        [JSON.stringify(rows)],
        ),
      );
    } catch (error) {
      // Put the counts back so a database blip loses nothing.
      for (const [id, usage] of batch) {
        const entry = this.pending.get(id);
        if (entry) {
          entry.count += usage.count;
          if (usage.lastUsed > entry.lastUsed) entry.lastUsed = usage.lastUsed;
        } else this.pending.set(id, usage);
      }
      throw error;
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.flush().catch(this.onError);
  }
}
