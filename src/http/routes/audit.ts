import { z } from 'zod';
import type { Platform } from '../../platform';
import { listAudit, STATUS_CLASSES } from '../../domain/audit/audit';
import type { Api } from '../route';
import { listQuery, safeString } from '../schemas';

const tag = 'Audit trail';
const isoDateTime = z.iso.datetime({ offset: true });

const auditRecordSchema = z.object({
  id: z.uuid(),
  at: z.string(),
  actor_kind: z.enum(['operator', 'key']),
  actor_id: z.string().nullable().describe("The API key's id; for the operator, the dashboard session's id, or null for the operator token"),
  tenant_id: z.uuid().nullable().describe('The tenant acted on; null for actions on the platform itself. Kept after the tenant is deleted'),
  tenant_slug: z.string().nullable().describe('The tenant’s slug when the action was recorded'),
  action: z.string().describe('`noun.verb` (tenant.update, api_key.create, queue.pause, admin.login, …); each route names its own in `x-audit-action`'),
  target: z.string().nullable().describe('The id acted on'),
  method: z.string().nullable(),
  path: z.string().nullable().describe("The route's pattern, not the URL as called"),
  status: z.number().int().nullable().describe('The answer’s status: refused attempts are recorded too'),
  ip: z.string().nullable(),
  request_id: z.string().nullable(),
  details: z.record(z.string(), z.unknown()).describe('Field names and counts, never values of secrets'),
});

/** What the audit routes use of the platform, wired in by the app (src/http/app.ts). */
export type AuditServices = Pick<Platform, 'db'>;

export function auditRoutes(api: Api, services: AuditServices): void {
  api.add({
    method: 'get', path: '/api/admin/audit', operationId: 'listAuditEntries', summary: 'Who changed what, newest first: operator and admin-scope mutations, refused ones included', tag,
    auth: { scope: 'admin', tenant: 'optional' },
    query: listQuery.extend({
      actor_kind: z.enum(['operator', 'key']).optional(),
      actor_id: safeString({ min: 1, max: 200 }).optional(),
      action: safeString({ min: 1, max: 100 }).optional().describe('Exact, or a prefix ending in `*`: `webhook.*`'),
      tenant: safeString({ min: 1, max: 100 }).optional().describe("A tenant's id, or the slug it had (a deleted tenant's rows stay findable)"),
      target: safeString({ min: 1, max: 200 }).optional(),
      since: isoDateTime.optional(),
      until: isoDateTime.optional(),
      status_class: z.enum(STATUS_CLASSES).optional(),
    }),
    responses: { 200: { description: 'A page of audit records', schema: z.object({ items: z.array(auditRecordSchema), next_cursor: z.string().nullable() }) } },
    handler: async ({ query, ctx }) => {
      const { limit, cursor, actor_kind, actor_id, status_class, ...filters } = query;
      // A key, or the operator naming a tenant, reads that tenant's rows only; the bare operator reads every row.
      const scope = ctx.tenant ? { tenantId: ctx.tenant.id } : 'all';
      const page = await listAudit(
        services.db.knex,
        { ...filters, actorKind: actor_kind, actorId: actor_id, statusClass: status_class },
        { limit, cursor },
        scope,
      );
      if (ctx.principal?.kind !== 'key') return { status: 200, body: page };
      // A tenant sees that the operator acted, and what; not which session or from where.
      const items = page.items.map((item) => (item.actor_kind === 'operator' ? { ...item, actor_id: null, ip: null } : item));
      return { status: 200, body: { ...page, items } };
    },
  });
}
