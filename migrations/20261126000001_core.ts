import type { Knex } from 'knex';

/** Tenants, API keys, documents, chunks and index jobs. Vector columns are added at start when pgvector exists. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('tenants', (t) => {
    t.uuid('id').primary();
    t.text('slug').notNullable().unique();
    t.text('name').notNullable();
    t.text('tier').notNullable().defaultTo('free');
    t.text('custom_domain').unique();
    t.text('status').notNullable().defaultTo('active');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw(`alter table tenants add constraint tenants_tier_check check (tier in ('free','standard','enterprise','unlimited'))`);
  await knex.raw(`alter table tenants add constraint tenants_status_check check (status in ('active','suspended'))`);

  await knex.schema.createTable('api_keys', (t) => {
    t.uuid('id').primary();
    t.uuid('tenant_id').notNullable().references('tenants.id').onDelete('CASCADE');
    t.text('name').notNullable();
    t.text('prefix').notNullable();
    t.text('key_hash').notNullable().unique();
    t.specificType('scopes', 'text[]').notNullable();
    t.timestamp('expires_at', { useTz: true });
    t.timestamp('revoked_at', { useTz: true });
    t.timestamp('last_used_at', { useTz: true });
    t.bigInteger('request_count').notNullable().defaultTo(0);
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['tenant_id', 'id']);
  });

  await knex.schema.createTable('documents', (t) => {
    t.uuid('id').primary();
    t.uuid('tenant_id').notNullable().references('tenants.id').onDelete('CASCADE');
    t.text('title').notNullable();
    t.text('content').notNullable();
    t.text('content_type').notNullable();
    t.specificType('tags', 'text[]').notNullable().defaultTo('{}');
    t.jsonb('metadata').notNullable().defaultTo('{}');
    t.text('source_url');
    t.text('external_id');
    t.text('status').notNullable();
    t.integer('version').notNullable().defaultTo(1);
    t.integer('chunk_count').notNullable().defaultTo(0);
    t.integer('content_bytes').notNullable();
    t.text('error');
    t.uuid('last_index_job_id');
    t.timestamp('indexed_at', { useTz: true });
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['tenant_id', 'id']);
    t.index(['tenant_id', 'status', 'updated_at']);
  });
  await knex.raw(`alter table documents add constraint documents_status_check check (status in ('queued','processing','indexed','failed','canceled'))`);
  await knex.raw(`alter table documents add constraint documents_content_type_check check (content_type in ('markdown','text','code','html'))`);
  await knex.raw('create index documents_tags_gin on documents using gin (tags)');
  await knex.raw('create unique index documents_external_id_unique on documents (tenant_id, external_id) where external_id is not null');

  await knex.schema.createTable('chunks', (t) => {
    t.uuid('id').primary();
    t.uuid('tenant_id').notNullable();
    t.uuid('document_id').notNullable().references('documents.id').onDelete('CASCADE');
    t.integer('document_version').notNullable();
    t.integer('ordinal').notNullable();
    t.text('content').notNullable();
    t.text('heading');
    t.integer('char_start').notNullable();
    t.integer('char_end').notNullable();
    t.specificType('tsv', 'tsvector').notNullable();
    t.text('embedding_model');
    t.integer('embedding_dims');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.unique(['document_id', 'ordinal']);
    t.index(['tenant_id']);
  });
  await knex.raw('create index chunks_tsv_gin on chunks using gin (tsv)');

  await knex.schema.createTable('index_jobs', (t) => {
    t.uuid('id').primary();
    t.uuid('tenant_id').notNullable().references('tenants.id').onDelete('CASCADE');
    t.text('status').notNullable().defaultTo('queued');
    t.boolean('force_reindex').notNullable().defaultTo(false);
    t.integer('documents_total').notNullable();
    t.integer('documents_completed').notNullable().defaultTo(0);
    t.integer('documents_failed').notNullable().defaultTo(0);
    t.text('error');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('started_at', { useTz: true });
    t.timestamp('completed_at', { useTz: true });
    t.index(['tenant_id', 'id']);
  });
  await knex.raw(`alter table index_jobs add constraint index_jobs_status_check check (status in ('queued','processing','completed','failed','canceled'))`);

  await knex.schema.createTable('index_job_items', (t) => {
    t.uuid('index_job_id').notNullable().references('index_jobs.id').onDelete('CASCADE');
    t.uuid('document_id').notNullable();
    t.uuid('tenant_id').notNullable();
    t.integer('document_version').notNullable();
    t.text('status').notNullable().defaultTo('queued');
    t.text('error');
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['index_job_id', 'document_id']);
    t.index(['document_id']);
  });
  await knex.raw(`alter table index_job_items add constraint index_job_items_status_check check (status in ('queued','processing','completed','failed','canceled'))`);
}

export async function down(knex: Knex): Promise<void> {
  for (const table of ['index_job_items', 'index_jobs', 'chunks', 'documents', 'api_keys', 'tenants']) {
    await knex.schema.dropTableIfExists(table);
  }
}
