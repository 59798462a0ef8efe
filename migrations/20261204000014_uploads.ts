import type { Knex } from 'knex';
import { enableRowLevelSecurity } from './row-level-security';

/**
 * Uploaded files: the original of each uploaded document, kept beside it
 * (and gone with it), PDF and DOCX as content types of their own, the
 * page of each PDF chunk, and the codes of the ways a file can be refused.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('document_files', (t) => {
    t.uuid('document_id').primary().references('documents.id').onDelete('CASCADE');
    t.uuid('tenant_id').notNullable().references('tenants.id').onDelete('CASCADE');
    t.text('filename').notNullable();
    t.text('media_type').notNullable();
    t.integer('size_bytes').notNullable();
    t.binary('data').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await enableRowLevelSecurity(knex, 'document_files');
  await knex.raw('alter table documents drop constraint documents_content_type_check');
  await knex.raw(`alter table documents add constraint documents_content_type_check check (content_type in ('markdown','text','code','html','pdf','docx'))`);
  await knex.schema.alterTable('chunks', (t) => {
    t.integer('page');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('chunks', (t) => {
    t.dropColumn('page');
  });
  await knex.raw('alter table documents drop constraint documents_content_type_check');
  await knex.raw(`alter table documents add constraint documents_content_type_check check (content_type in ('markdown','text','code','html'))`);
  await knex.schema.dropTable('document_files');
}
