import type { Knex } from 'knex';

/**
 * Why a document failed, for machines (`error` keeps the sentence for
 * people): see DOCUMENT_ERROR_CODES. Documents that failed before the code
 * existed get the general one.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('documents', (t) => {
    t.text('error_code');
  });
  // documents forces row-level security on its owner too: this update is a cross-tenant one.
  await knex.raw(`select set_config('app.all_tenants', 'on', true)`);
  await knex('documents').where({ status: 'failed' }).update({ error_code: 'indexing_failed' });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('documents', (t) => {
    t.dropColumn('error_code');
  });
}
