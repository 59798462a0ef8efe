import type { Knex } from 'knex';
import { enableRowLevelSecurity } from './row-level-security';

/**
 * Dead letters: one row per job that failed for good (unrecoverable, out of
 * attempts, or stalled too often). A row is open until it is redriven (its
 * work queued again) or discarded; either way it stays, as history.
 *
 * Row-level security as on every tenant table: a tenant's rows are its own;
 * rows without a tenant (scheduler ticks, invalid payloads) are seen only
 * across tenants, by the operator.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('dead_letters', (t) => {
    // uuid v7 from the application: time-ordered, the keyset cursor.
    t.uuid('id').primary();
    t.text('queue').notNullable();
    t.text('job_id').notNullable();
    t.text('job_name').notNullable();
    t.uuid('tenant_id').references('tenants.id').onDelete('CASCADE');
    // The job's data with secret-named keys redacted; what a redrive enqueues again when the job itself is gone.
    t.jsonb('payload').notNullable();
    t.text('error_class').notNullable();
    t.text('error_message').notNullable();
    t.text('stacktrace');
    // Attempts made when it failed for good, as BullMQ (and Bull Board) counts them; and the job's budget.
    t.integer('attempts').notNullable();
    t.integer('max_attempts');
    t.timestamp('failed_at', { useTz: true }).notNullable();
    t.timestamp('redriven_at', { useTz: true });
    t.integer('redrive_count').notNullable().defaultTo(0);
    t.text('last_redrive_job_id');
    t.timestamp('discarded_at', { useTz: true });
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw(`alter table dead_letters add constraint dead_letters_one_outcome check (redriven_at is null or discarded_at is null)`);
  // One open row per job: recording the same final failure again updates it (and is what the gauge counts, by queue).
  await knex.raw('create unique index dead_letters_open_job on dead_letters (queue, job_id) where redriven_at is null and discarded_at is null');
  // A tenant's view (and row-level security) filters on tenant_id and pages on id.
  await knex.raw('create index dead_letters_tenant_id on dead_letters (tenant_id, id)');
  await enableRowLevelSecurity(knex, 'dead_letters');
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('dead_letters');
}
