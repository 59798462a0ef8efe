import type { Knex } from 'knex';

/** Lets the reconcile tick find unfinished work without scanning whole tables. */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`create index index_job_items_unfinished on index_job_items (updated_at) where status in ('queued', 'processing')`);
  await knex.raw(`create index webhook_deliveries_pending on webhook_deliveries (updated_at) where status = 'pending'`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop index if exists index_job_items_unfinished');
  await knex.raw('drop index if exists webhook_deliveries_pending');
}
