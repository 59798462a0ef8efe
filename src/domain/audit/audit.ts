import type { Knex } from 'knex';
import { acrossTenants, withTenant } from '../../db/tenant-scope';
import { isUuid, newId } from '../ids';
import { paginate, type Page, type PageRequest } from '../pagination';

export type AuditActor = { kind: 'operator'; sessionId?: string | null } | { kind: 'key'; keyId: string };

/** One operator or admin-scope action. Never secrets, never request bodies: `details` holds names and counts. */
export interface AuditEntry {
  actor: AuditActor;
  /** `tenant.update`, `api_key.create`, `admin.login`, … */
  action: string;
  /** The tenant acted on; absent for actions on the platform itself (queues, every tenant's cache). */
  tenantId?: string | null;
  /** Kept beside the id so the row still reads after the tenant is deleted; looked up from the id when absent. */
  tenantSlug?: string | null;
  /** The id acted on. */
  target?: string | null;
  method?: string;
  /** The route's pattern (`/api/admin/tenants/:id`), never a raw URL. */
  path?: string;
  /** The answer's status: refused attempts are recorded too. */
  status?: number;
  ip?: string | null;
  requestId?: string;
  details?: Record<string, unknown>;
}

export interface AuditRecord {
  id: string;
  at: string;
  actor_kind: 'operator' | 'key';
  actor_id: string | null;
  tenant_id: string | null;
  tenant_slug: string | null;
  action: string;
  target: string | null;
  method: string | null;
  path: string | null;
  status: number | null;
  ip: string | null;
  request_id: string | null;
  details: Record<string, unknown>;
}

interface AuditRow extends Omit<AuditRecord, 'at'> {
  at: Date;
}

export const STATUS_CLASSES = ['2xx', '3xx', '4xx', '5xx'] as const;

export interface AuditFilters {
  actorKind?: 'operator' | 'key';
  actorId?: string;
  /** Exact, or a prefix ending in `*` (`webhook.*`). */
  action?: string;
  /** A tenant's id, or the slug it had when the rows were recorded (so a deleted tenant's history stays findable). */
  tenant?: string;
  target?: string;
  since?: string;
  until?: string;
  statusClass?: (typeof STATUS_CLASSES)[number];
}

/** Whose rows a reader may see: one tenant's, or every row including the operator-only ones. */
export type AuditScope = { tenantId: string } | 'all';

/**
 * Appends one row. A tenant's row is written in that tenant's scope, an
 * operator-only row (no tenant) across tenants, as row-level security requires.
 */
export async function recordAudit(db: Knex, entry: AuditEntry): Promise<void> {
  const tenantId = entry.tenantId ?? null;
  const row = {
    id: newId(),
    at: new Date(),
    actor_kind: entry.actor.kind,
    actor_id: entry.actor.kind === 'key' ? entry.actor.keyId : (entry.actor.sessionId ?? null),
    tenant_id: tenantId,
    tenant_slug: entry.tenantSlug ?? (tenantId ? db.raw('(select slug from tenants where id = ?)', [tenantId]) : null),
    action: entry.action,
    target: entry.target ?? null,
    method: entry.method ?? null,
    path: entry.path ?? null,
    status: entry.status ?? null,
    ip: entry.ip ?? null,
    request_id: entry.requestId || null,
    details: JSON.stringify(entry.details ?? {}),
  };
  const insert = (trx: Knex.Transaction) => trx('audit_log').insert(row);
  if (tenantId) await withTenant(db, tenantId, insert);
  else await acrossTenants(db, insert);
}

/** Newest first, keyset-paged on the time-ordered id. */
export async function listAudit(db: Knex, filters: AuditFilters, page: PageRequest, scope: AuditScope): Promise<Page<AuditRecord>> {
  const read = (trx: Knex.Transaction) => {
    const query = trx<AuditRow>('audit_log').select('*');
    // Row-level security already limits a tenant's scope; the explicit condition says so in the query too.
    if (scope !== 'all') query.where('tenant_id', scope.tenantId);
    applyFilters(query, filters);
    return paginate(query, page, toRecord);
  };
  return scope === 'all' ? acrossTenants(db, read) : withTenant(db, scope.tenantId, read);
}

function applyFilters(query: Knex.QueryBuilder, filters: AuditFilters): void {
  if (filters.actorKind) query.where('actor_kind', filters.actorKind);
  if (filters.actorId) query.where('actor_id', filters.actorId);
  if (filters.action?.endsWith('*')) query.whereLike('action', `${escapeLike(filters.action.slice(0, -1))}%`);
  else if (filters.action) query.where('action', filters.action);
  if (filters.tenant) query.where(isUuid(filters.tenant) ? 'tenant_id' : 'tenant_slug', filters.tenant.toLowerCase());
  if (filters.target) query.where('target', filters.target);
  if (filters.since) query.where('at', '>=', filters.since);
  if (filters.until) query.where('at', '<', filters.until);
  if (filters.statusClass) {
    const floor = Number(filters.statusClass[0]) * 100;
    query.where('status', '>=', floor).andWhere('status', '<', floor + 100);
  }
}

const escapeLike = (value: string) => value.replace(/[\\%_]/g, (character) => `\\${character}`);

const toRecord = (row: AuditRow): AuditRecord => ({ ...row, at: row.at.toISOString() });
