import type { Knex } from 'knex';
import { disableRowLevelSecurity, enableRowLevelSecurity } from './row-level-security';

/** Every table that holds a tenant's rows (all carry `tenant_id`). */
export const TENANT_TABLES = [
  'api_keys',
  'documents',
  'chunks',
  'index_jobs',
  'index_job_items',
  'webhook_endpoints',
  'webhook_events',
  'webhook_deliveries',
  'webhook_attempts',
  'search_events',
  'search_query_hourly',
  'search_clicks',
  'tenant_usage',
  'quota_notices',
] as const;

/**
 * Per-tenant quota overrides, live document and storage counters kept by
 * triggers (so every path that adds or removes a document counts, and the
 * counter row doubles as the lock that makes capacity checks exact), the
 * once-a-day record of quota notices, and row-level security on every
 * tenant-owned table.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('tenants', (t) => {
    t.jsonb('quota_overrides').notNullable().defaultTo('{}');
  });

  await knex.schema.createTable('tenant_usage', (t) => {
    t.uuid('tenant_id').primary().references('tenants.id').onDelete('CASCADE');
    t.bigInteger('documents').notNullable().defaultTo(0);
    t.bigInteger('storage_bytes').notNullable().defaultTo(0);
  });
  await knex.raw(`
    insert into tenant_usage (tenant_id, documents, storage_bytes)
    select t.id, count(d.id), coalesce(sum(d.content_bytes), 0) from tenants t left join documents d on d.tenant_id = t.id group by t.id`);

  // Inserts upsert the counter row; deletes and updates only update it, so the
  // cascade of a tenant's deletion never re-creates a row for a vanished tenant.
  await knex.raw(`
    create function tenant_usage_documents_inserted() returns trigger language plpgsql as $$
    begin
      insert into tenant_usage as u (tenant_id, documents, storage_bytes)
        select tenant_id, count(*), sum(content_bytes) from inserted group by tenant_id
      on conflict (tenant_id) do update
        set documents = u.documents + excluded.documents, storage_bytes = u.storage_bytes + excluded.storage_bytes;
      return null;
    end $$`);
  await knex.raw(`
    create function tenant_usage_documents_deleted() returns trigger language plpgsql as $$
    begin
      update tenant_usage u set documents = u.documents - d.documents, storage_bytes = u.storage_bytes - d.bytes
        from (select tenant_id, count(*) as documents, sum(content_bytes) as bytes from deleted group by tenant_id) d
       where u.tenant_id = d.tenant_id;
      return null;
    end $$`);
  await knex.raw(`
    create function tenant_usage_documents_updated() returns trigger language plpgsql as $$
    begin
      update tenant_usage u set storage_bytes = u.storage_bytes + d.delta
        from (select n.tenant_id, sum(n.content_bytes - o.content_bytes) as delta
                from updated n join previous o on o.id = n.id group by n.tenant_id) d
       where u.tenant_id = d.tenant_id and d.delta <> 0;
      return null;
    end $$`);
  await knex.raw(`create trigger tenant_usage_documents_inserted after insert on documents
    referencing new table as inserted for each statement execute function tenant_usage_documents_inserted()`);
  await knex.raw(`create trigger tenant_usage_documents_deleted after delete on documents
    referencing old table as deleted for each statement execute function tenant_usage_documents_deleted()`);
  await knex.raw(`create trigger tenant_usage_documents_updated after update on documents
    referencing new table as updated old table as previous for each statement execute function tenant_usage_documents_updated()`);

  await knex.schema.createTable('quota_notices', (t) => {
    t.uuid('tenant_id').notNullable().references('tenants.id').onDelete('CASCADE');
    t.text('quota').notNullable();
    t.date('day').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['tenant_id', 'quota', 'day']);
  });

  for (const table of TENANT_TABLES) await enableRowLevelSecurity(knex, table);
}

export async function down(knex: Knex): Promise<void> {
  for (const table of TENANT_TABLES.filter((name) => name !== 'tenant_usage' && name !== 'quota_notices')) {
    await disableRowLevelSecurity(knex, table);
  }
  for (const trigger of ['inserted', 'deleted', 'updated']) {
    await knex.raw(`drop trigger if exists tenant_usage_documents_${trigger} on documents`);
    await knex.raw(`drop function if exists tenant_usage_documents_${trigger}()`);
  }
  await knex.schema.dropTableIfExists('quota_notices');
  await knex.schema.dropTableIfExists('tenant_usage');
  await knex.schema.alterTable('tenants', (t) => t.dropColumn('quota_overrides'));
}
