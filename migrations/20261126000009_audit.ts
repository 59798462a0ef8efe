import type { Knex } from 'knex';
import { enableRowLevelSecurity } from './row-level-security';

/**
 * The audit trail: one row per operator or admin-scope mutation, refused
 * ones included. Rows outlive what they describe, the tenant above all, so
 * `tenant_id` has no foreign key (a deletion neither cascades nor blanks it)
 * and the slug is kept beside it for reading after the tenant is gone.
 *
 * Row-level security as on every tenant table: a tenant's admin key reads
 * its tenant's rows; operator-only rows (`tenant_id` null) are seen only
 * across tenants.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('audit_log', (t) => {
    // uuid v7 from the application: time-ordered, the keyset cursor.
    t.uuid('id').primary();
    t.timestamp('at', { useTz: true }).notNullable();
    t.text('actor_kind').notNullable();
    // The API key's id, or the operator's dashboard session id (null for the bare operator token).
    t.text('actor_id');
    t.uuid('tenant_id');
    t.text('tenant_slug');
    t.text('action').notNullable();
    t.text('target');
    t.text('method');
    // The route's pattern, never the raw URL with its query string.
    t.text('path');
    t.integer('status');
    t.text('ip');
    t.text('request_id');
    t.jsonb('details').notNullable().defaultTo('{}');
  });
  await knex.raw(`alter table audit_log add constraint audit_log_actor_kind check (actor_kind in ('operator', 'key'))`);
  // A tenant's view (and row-level security) filters on tenant_id and pages on id.
  await knex.raw('create index audit_log_tenant_id on audit_log (tenant_id, id)');
  await knex.raw('create index audit_log_actor on audit_log (actor_id, id) where actor_id is not null');
  await knex.raw('create index audit_log_target on audit_log (target, id) where target is not null');
  await knex.raw('create index audit_log_at on audit_log (at)');
  await enableRowLevelSecurity(knex, 'audit_log');
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('audit_log');
}
