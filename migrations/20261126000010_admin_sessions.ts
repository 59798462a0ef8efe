import type { Knex } from 'knex';

/**
 * Dashboard sessions: the cookie carries only a signed session id, so a
 * logout ends a session at once (and a changed ADMIN_TOKEN, which changes
 * the signing key, ends them all). Operator-wide, so no row-level security.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('admin_sessions', (t) => {
    t.uuid('id').primary();
    t.text('ip');
    t.text('user_agent');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('expires_at', { useTz: true }).notNullable();
    t.timestamp('revoked_at', { useTz: true });
    t.index(['expires_at']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('admin_sessions');
}
