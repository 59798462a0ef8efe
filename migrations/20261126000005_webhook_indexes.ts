import type { Knex } from 'knex';

/**
 * Deleting an event (or a tenant) cascades to its deliveries through
 * event_id; without an index each cascade scans webhook_deliveries. The only
 * index leading with event_id is partial (origin = 'event'), which the
 * cascade cannot use. tenant_id likewise backs the tenant cascade.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw('create index if not exists webhook_deliveries_event_id on webhook_deliveries (event_id)');
  await knex.raw('create index if not exists webhook_deliveries_tenant_id on webhook_deliveries (tenant_id)');
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop index if exists webhook_deliveries_event_id');
  await knex.raw('drop index if exists webhook_deliveries_tenant_id');
}
