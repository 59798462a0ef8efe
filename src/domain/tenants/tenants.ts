import type { Knex } from 'knex';
import type { CredentialChanges } from '../apikeys/credential-changes';
import { conflict, isUniqueViolation, notFound } from '../../errors';
import { normalHost } from '../hosts';
import { isUuid, newId } from '../ids';
import { withTenant } from '../../db/tenant-scope';
import { paginate, type Page, type PageRequest } from '../pagination';
import { effectiveQuotas, QUOTA_NAMES, TIER_QUOTAS, TIER_RETENTION_DAYS, type QuotaOverrides, type Quotas, type Tier } from './quotas';

export const TIERS = Object.keys(TIER_QUOTAS) as [Tier, ...Tier[]];
export type { Tier };
export type TenantStatus = 'active' | 'suspended';

export interface Tenant {
  id: string;
  slug: string;
  name: string;
  tier: Tier;
  custom_domain: string | null;
  status: TenantStatus;
  quota_overrides: QuotaOverrides;
  /** The limits in force: the tier's, then the overrides. */
  quotas: Quotas;
  retention_days: number | null;
  created_at: string;
  updated_at: string;
}

export interface TenantRow extends Omit<Tenant, 'created_at' | 'updated_at' | 'quotas' | 'retention_days'> {
  created_at: Date;
  updated_at: Date;
}

export interface NewTenant {
  slug: string;
  name: string;
  tier?: Tier;
  custom_domain?: string | null;
}

export interface TenantChanges extends Partial<Pick<Tenant, 'name' | 'tier' | 'custom_domain' | 'slug'>> {
  /** Merged into the overrides; `null` removes one. */
  quotas?: Partial<Record<keyof Quotas, number | 'unlimited' | null>>;
}

export const toTenant = (row: TenantRow): Tenant => ({
  ...row,
  quotas: effectiveQuotas(row.tier, row.quota_overrides),
  retention_days: TIER_RETENTION_DAYS[row.tier],
  created_at: row.created_at.toISOString(),
  updated_at: row.updated_at.toISOString(),
});

export async function createTenant(db: Knex, input: NewTenant): Promise<Tenant> {
  try {
    const [row] = await db<TenantRow>('tenants')
      .insert({ id: newId(), slug: input.slug, name: input.name, tier: input.tier ?? 'free', custom_domain: input.custom_domain ?? null })
      .returning('*');
    return toTenant(row);
  } catch (error) {
    throw translateUnique(error);
  }
}

export async function listTenants(db: Knex, page: PageRequest): Promise<Page<Tenant>> {
  return paginate(db<TenantRow>('tenants').select('*'), page, toTenant);
}

/** Finds a tenant by id or by slug; missing → 404. */
export async function getTenant(db: Knex, idOrSlug: string): Promise<Tenant> {
  const row = await findTenantRow(db, idOrSlug);
  if (!row) throw notFound('Tenant');
  return toTenant(row);
}

export async function findTenant(db: Knex, idOrSlug: string): Promise<Tenant | null> {
  const row = await findTenantRow(db, idOrSlug);
  return row ? toTenant(row) : null;
}

/**
 * `host` (a Host header: any case, a port, a trailing dot) as a custom domain
 * is stored, or null for names that cannot be one (localhost, addresses):
 * those are never looked up.
 */
export function customDomainOf(host: string | undefined): string | null {
  const name = normalHost(host);
  return name && /^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/.test(name) ? name : null;
}

/** The tenant serving `host` as its custom domain. */
export async function findTenantByDomain(db: Knex, host: string | undefined): Promise<Tenant | null> {
  const name = customDomainOf(host);
  if (!name) return null;
  const row = await db<TenantRow>('tenants').first('*').where({ custom_domain: name });
  return row ? toTenant(row) : null;
}

function findTenantRow(db: Knex, idOrSlug: string): Promise<TenantRow | undefined> {
  const query = db<TenantRow>('tenants').first('*');
  return isUuid(idOrSlug) ? query.where({ id: idOrSlug }) : query.where({ slug: idOrSlug });
}

/**
 * Applies changes; a new tier, quota override or custom domain is in force
 * for the next request, in every API process.
 */
export async function updateTenant(db: Knex, credentials: CredentialChanges, idOrSlug: string, changes: TenantChanges): Promise<Tenant> {
  if (Object.keys(changes).length === 0) return getTenant(db, idOrSlug);
  return credentials.announce({ tenant: idOrSlug }, () => applyChanges(db, idOrSlug, changes));
}

async function applyChanges(db: Knex, idOrSlug: string, changes: TenantChanges): Promise<Tenant> {
  const tenant = await getTenant(db, idOrSlug);
  const { quotas, ...columns } = changes;
  const update: Record<string, unknown> = { ...columns, updated_at: db.fn.now() };
  // Merged by PostgreSQL in the UPDATE itself, so two operators changing different quotas at once both keep their change.
  if (quotas) {
    const { set, removed } = splitOverrides(quotas);
    update.quota_overrides = db.raw('(quota_overrides || ?::jsonb) - ?::text[]', [JSON.stringify(set), removed]);
  }
  try {
    const [row] = await db<TenantRow>('tenants').where({ id: tenant.id }).update(update).returning('*');
    return toTenant(row);
  } catch (error) {
    throw translateUnique(error);
  }
}

/** Suspends or resumes; the tenant's keys are refused, or accepted again, by every API process before this returns. */
export async function setTenantStatus(db: Knex, credentials: CredentialChanges, idOrSlug: string, status: TenantStatus): Promise<Tenant> {
  return credentials.announce({ tenant: idOrSlug }, async () => {
    const tenant = await getTenant(db, idOrSlug);
    const [row] = await db<TenantRow>('tenants')
      .where({ id: tenant.id })
      .update({ status, updated_at: db.fn.now() as unknown as Date })
      .returning('*');
    return toTenant(row);
  });
}

/**
 * Deletes the tenant and, through foreign keys, everything it owns. Its
 * index job items are locked first, in the order the indexer locks them,
 * so a deletion during indexing waits instead of deadlocking.
 */
export async function deleteTenant(db: Knex, credentials: CredentialChanges, idOrSlug: string): Promise<Tenant> {
  return credentials.announce({ tenant: idOrSlug }, async () => {
    const tenant = await getTenant(db, idOrSlug);
    await withTenant(db, tenant.id, async (trx) => {
      await trx('index_job_items').select('index_job_id').where({ tenant_id: tenant.id }).orderBy(['index_job_id', 'document_id']).forUpdate();
      await trx('tenants').where({ id: tenant.id }).delete();
    });
    return tenant;
  });
}

/** The overrides a PATCH sets, and the ones it removes (`null`: back to the tier's value). */
function splitOverrides(changes: NonNullable<TenantChanges['quotas']>): { set: QuotaOverrides; removed: string[] } {
  const set: QuotaOverrides = {};
  const removed: string[] = [];
  for (const name of QUOTA_NAMES) {
    const change = changes[name];
    if (change === null) removed.push(name);
    else if (change !== undefined) set[name] = change;
  }
  return { set, removed };
}

function translateUnique(error: unknown): unknown {
  if (isUniqueViolation(error, 'tenants_slug_unique')) return conflict('A tenant with this slug already exists.', { field: 'slug' });
  if (isUniqueViolation(error, 'tenants_custom_domain_unique')) {
    return conflict('Another tenant already uses this custom domain.', { field: 'custom_domain' });
  }
  return error;
}
