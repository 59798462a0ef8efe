import { z } from 'zod';
import { notFound } from '../../errors';
import { COUNTERS, GAUGES } from '../../domain/usage/counters';
import { latestReconciliation } from '../../domain/usage/reconcile';
import { billingStatement, MAX_BILLING_DAYS, usageSnapshot, type BillingStatement } from '../../domain/usage/report';
import { getTenant, type Tenant } from '../../domain/tenants/tenants';
import type { Platform } from '../../platform';
import { csvRecord } from '../csv';
import type { Api } from '../route';
import { idOrSlugParams } from '../schemas';

const tag = 'Usage and billing';

const quotaUsage = z.object({
  used: z.number(),
  limit: z.number().nullable().describe('null: no limit'),
  remaining: z.number().nullable(),
});

const usageDay = z.object({
  day: z.string().describe('UTC day, YYYY-MM-DD'),
  closed: z.boolean().describe('true: final, never recomputed'),
  closed_at: z.string().nullable(),
  computed_at: z.string().describe('the scheduler tick of the run that last wrote the row'),
  ...Object.fromEntries(COUNTERS.map((counter) => [counter, z.number()])),
  documents: z.number().nullable().describe('gauge: documents held at the last sample'),
  storage_bytes: z.number().nullable().describe('gauge: bytes held at the last sample'),
  chunks: z.number().nullable().describe('gauge: chunks held at the last sample'),
  gauges_sampled_at: z.string().nullable(),
});

const usageSnapshotSchema = z.object({
  tenant_id: z.string(),
  day: z.string(),
  quotas: z.object({
    documents: quotaUsage,
    storage_mb: quotaUsage.extend({ used_bytes: z.number() }),
    searches_per_day: quotaUsage,
    answers_per_day: quotaUsage,
    api_keys: quotaUsage,
    webhook_endpoints: quotaUsage,
  }),
  today: usageDay.nullable(),
});

const billingSchema = z.object({
  tenant_id: z.string(),
  start: z.string(),
  end: z.string(),
  final: z.boolean().describe('every day of the period (since the tenant existed) is closed'),
  days: z.array(usageDay),
  totals: z.object({
    ...Object.fromEntries(COUNTERS.map((counter) => [counter, z.number().describe('sum over the days')])),
    ...Object.fromEntries(GAUGES.map((gauge) => [gauge, z.number().nullable().describe('peak: the highest daily sample')])),
  }),
});

const reconciliationSchema = z.object({
  ran_at: z.string(),
  tenants: z.number(),
  tenant_days: z.number(),
  drifting_tenant_days: z.number(),
  unclosed_tenant_days: z.number(),
  drift: z.record(z.string(), z.number()),
  findings: z.array(z.record(z.string(), z.unknown())),
  findings_truncated: z.boolean(),
});

const day = z.iso.date().refine((value) => value >= '1970-01-01', 'must be 1970-01-01 or later');

/** The CSV columns of a statement; its last record, `total`, has the counters' sums and the gauges' peaks. */
export const BILLING_COLUMNS = ['day', 'closed', 'closed_at', 'computed_at', ...COUNTERS, ...GAUGES, 'gauges_sampled_at'] as const;

function billingCsv(statement: BillingStatement): string {
  const records: unknown[][] = [[...BILLING_COLUMNS]];
  for (const usage of statement.days) records.push(BILLING_COLUMNS.map((column) => usage[column]));
  records.push(BILLING_COLUMNS.map((column) => (column === 'day' ? 'total' : column === 'closed' ? statement.final : column in statement.totals ? statement.totals[column as keyof BillingStatement['totals']] : null)));
  return records.map(csvRecord).join('');
}

async function snapshotOf(services: UsageServices, tenant: Tenant) {
  return usageSnapshot(services.db.knex, tenant, { searches_per_day: await services.searchQuota.used(tenant.id), answers_per_day: await services.answerQuota.used(tenant.id) });
}

/** What the usage routes use of the platform, wired in by the app (src/http/app.ts). */
export type UsageServices = Pick<Platform, 'answerQuota' | 'db' | 'searchQuota'>;

export function usageRoutes(api: Api, services: UsageServices): void {
  api.add({
    method: 'get', path: '/api/admin/usage', operationId: 'getUsage', summary: "The tenant's current use of each quota against its limits", tag,
    auth: { scope: 'analytics:read', tenant: 'required' },
    responses: { 200: { description: 'Used, limit and remaining per quota, and today’s rollup', schema: usageSnapshotSchema } },
    handler: async ({ ctx }) => ({ status: 200, body: await snapshotOf(services, ctx.tenant!) }),
  });
  api.add({
    method: 'get', path: '/api/admin/tenants/:id/usage', operationId: 'getTenantUsage', summary: "A tenant's current use of each quota against its limits", tag, auth: 'operator',
    params: idOrSlugParams,
    responses: { 200: { description: 'Used, limit and remaining per quota, and today’s rollup', schema: usageSnapshotSchema }, 404: { description: 'No such tenant' } },
    handler: async ({ params }) => ({ status: 200, body: await snapshotOf(services, await getTenant(services.db.knex, params.id)) }),
  });
  api.add({
    method: 'get', path: '/api/admin/tenants/:id/billing', operationId: 'getTenantBilling', summary: 'Daily usage over a period with totals, as JSON or CSV', tag, auth: 'operator',
    params: idOrSlugParams,
    query: z.object({
      start: day.describe('first UTC day, included'),
      end: day.describe(`last UTC day, included; at most ${MAX_BILLING_DAYS} days after start`),
      format: z.enum(['json', 'csv']).default('json'),
    }),
    responses: {
      200: { description: 'Per-day rows and totals (application/json, or text/csv whose last record is `total`)', schema: billingSchema },
      404: { description: 'No such tenant' },
    },
    handler: async ({ params, query }) => {
      const tenant = await getTenant(services.db.knex, params.id);
      const statement = await billingStatement(services.db.knex, tenant, query.start, query.end);
      if (query.format === 'json') return { status: 200, body: statement };
      const csv = billingCsv(statement);
      return {
        status: 200,
        headers: {
          'Content-Type': 'text/csv; charset=utf-8',
          'Content-Disposition': `attachment; filename="usage-${tenant.slug}-${query.start}-${query.end}.csv"`,
        },
        stream: async (res) => {
          res.write(csv);
        },
      };
    },
  });
  api.add({
    method: 'get', path: '/api/admin/usage/reconciliation', operationId: 'getUsageReconciliation', summary: 'The last nightly comparison of closed usage days with the raw data', tag, auth: 'operator',
    responses: { 200: { description: 'Drift per counter and the drifting tenant-days', schema: reconciliationSchema }, 404: { description: 'No reconciliation has run yet' } },
    handler: async () => {
      const report = await latestReconciliation(services.db.knex);
      if (!report) throw notFound('Usage reconciliation report');
      return { status: 200, body: report };
    },
  });
}
