import type { Knex } from 'knex';
import { enableRowLevelSecurity } from './row-level-security';

/**
 * Daily usage per tenant, the source of billing, and the reports of the
 * nightly reconciliation that compares closed days with the raw data.
 *
 * `usage_daily` holds counters recomputed from timestamps over the UTC day
 * (documents created and deleted, searches, index jobs, webhook deliveries)
 * and gauges sampled during the day (documents held, storage bytes, chunks).
 * Once `closed_at` is set the row is final: the rollup's upsert skips it.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('usage_daily', (t) => {
    t.uuid('tenant_id').notNullable().references('tenants.id').onDelete('CASCADE');
    t.date('day').notNullable();
    t.bigInteger('documents_created').notNullable();
    t.bigInteger('documents_deleted').notNullable();
    t.bigInteger('searches').notNullable();
    t.bigInteger('index_jobs').notNullable();
    t.bigInteger('webhook_deliveries').notNullable();
    // Gauges: null until the first sample taken during the day (or at the close).
    t.bigInteger('documents');
    t.bigInteger('storage_bytes');
    t.bigInteger('chunks');
    t.timestamp('gauges_sampled_at', { useTz: true });
    t.timestamp('computed_at', { useTz: true }).notNullable();
    t.timestamp('closed_at', { useTz: true });
    t.primary(['tenant_id', 'day']);
  });
  await enableRowLevelSecurity(knex, 'usage_daily');

  // The rollup counts each tenant's rows of a day from these tables.
  await knex.raw('create index index_jobs_tenant_created_at on index_jobs (tenant_id, created_at)');
  await knex.raw('create index webhook_deliveries_tenant_created_at on webhook_deliveries (tenant_id, created_at)');

  // Cross-tenant by nature (one report per run over every tenant) and read by the operator only: no row-level security.
  await knex.schema.createTable('usage_reconciliations', (t) => {
    // Ids come from the application: the application role holds rights on tables, not on sequences.
    t.uuid('id').primary();
    t.timestamp('ran_at', { useTz: true }).notNullable();
    t.integer('tenants').notNullable();
    t.integer('tenant_days').notNullable();
    t.integer('drifting_tenant_days').notNullable();
    t.integer('unclosed_tenant_days').notNullable();
    t.jsonb('drift').notNullable();
    t.jsonb('findings').notNullable();
    t.boolean('findings_truncated').notNullable();
    t.index(['ran_at']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('usage_reconciliations');
  await knex.raw('drop index if exists webhook_deliveries_tenant_created_at');
  await knex.raw('drop index if exists index_jobs_tenant_created_at');
  await knex.schema.dropTableIfExists('usage_daily');
}
