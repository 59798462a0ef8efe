import type { Knex } from 'knex';
import { enableRowLevelSecurity } from './row-level-security';

/**
 * Each tenant's vocabulary: the words of its indexed titles, headings and
 * chunks, where typo tolerance looks for the word a misspelt query word was
 * meant to be (pg_trgm similarity). The pattern the pg_trgm documentation
 * gives for spelling suggestions with full-text search: a table of the
 * unique words, compared with trigrams. pg_trgm is a trusted extension: a
 * database owner may create it without being a superuser.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw('create extension if not exists pg_trgm');
  await knex.schema.createTable('search_terms', (t) => {
    t.uuid('tenant_id').notNullable().references('tenants.id').onDelete('CASCADE');
    t.text('term').notNullable();
    t.primary(['tenant_id', 'term']);
  });
  await enableRowLevelSecurity(knex, 'search_terms');
  // The words of what is indexed already; cross-tenant, as a migration is.
  await knex.raw(`select set_config('app.all_tenants', 'on', true)`);
  await knex.raw(`
    insert into search_terms (tenant_id, term)
    select distinct tenant_id, term from (
      select c.tenant_id, unnest(tsvector_to_array(to_tsvector('simple', coalesce(c.heading, '') || ' ' || c.content))) as term from chunks c
      union all
      select d.tenant_id, unnest(tsvector_to_array(to_tsvector('simple', d.title))) from documents d where d.status = 'indexed'
    ) words
    where term ~ '^[[:alpha:]]{3,32}$'
    on conflict do nothing`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('search_terms');
}
