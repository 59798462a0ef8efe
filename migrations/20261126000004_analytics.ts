import type { Knex } from 'knex';

/** Search events as aggregated from the Redis stream, hourly per-query rollups, and clicks. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('search_events', (t) => {
    /** The Redis stream entry id: inserting an entry twice is a no-op, so re-run batches count nothing twice. */
    t.text('id').primary();
    t.uuid('tenant_id').notNullable().references('tenants.id').onDelete('CASCADE');
    t.uuid('query_id').notNullable();
    t.text('query').notNullable();
    t.text('query_normalized').notNullable();
    t.text('mode').notNullable();
    t.jsonb('filters').notNullable().defaultTo('{}');
    t.integer('result_count').notNullable();
    t.double('took_ms').notNullable();
    t.boolean('cached').notNullable();
    t.text('user_id');
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.index(['tenant_id', 'created_at']);
    t.index(['tenant_id', 'user_id', 'created_at']);
    t.index(['query_id']);
    // For retention, which deletes by age across tenants.
    t.index(['created_at']);
  });

  await knex.schema.createTable('search_query_hourly', (t) => {
    t.uuid('tenant_id').notNullable().references('tenants.id').onDelete('CASCADE');
    t.timestamp('hour', { useTz: true }).notNullable();
    t.text('query_normalized').notNullable();
    t.integer('searches').notNullable().defaultTo(0);
    t.integer('no_result_searches').notNullable().defaultTo(0);
    t.double('total_took_ms').notNullable().defaultTo(0);
    t.integer('total_results').notNullable().defaultTo(0);
    t.primary(['tenant_id', 'hour', 'query_normalized']);
    t.index(['tenant_id', 'hour']);
    t.index(['hour']);
  });

  await knex.schema.createTable('search_clicks', (t) => {
    t.uuid('id').primary();
    t.uuid('tenant_id').notNullable().references('tenants.id').onDelete('CASCADE');
    t.uuid('query_id').notNullable();
    t.uuid('document_id').notNullable();
    t.integer('position').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.unique(['tenant_id', 'query_id', 'document_id', 'position']);
    t.index(['tenant_id', 'created_at']);
    t.index(['created_at']);
  });
  // Retention deletes webhook attempts and events by age too.
  await knex.raw('create index webhook_attempts_created_at on webhook_attempts (created_at)');
  await knex.raw('create index webhook_events_created_at on webhook_events (created_at)');
}

export async function down(knex: Knex): Promise<void> {
  for (const table of ['search_clicks', 'search_query_hourly', 'search_events']) await knex.schema.dropTableIfExists(table);
}
