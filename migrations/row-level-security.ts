import type { Knex } from 'knex';

/**
 * Guards a tenant-owned table with PostgreSQL itself. FORCE makes the
 * policies apply to the table owner too, so only superusers and BYPASSRLS
 * roles see past them. Two permissive policies, OR'ed by PostgreSQL:
 *
 * - `tenant_isolation`: the rows of the tenant in `app.tenant_id`;
 * - `maintenance`: every row while `app.all_tenants` is `on`, for the few
 *   cross-tenant jobs (src/db/tenant-scope.ts `acrossTenants`).
 *
 * With neither set — a forgotten scope — the table is empty.
 */
export async function enableRowLevelSecurity(knex: Knex, table: string): Promise<void> {
  const currentTenant = `tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid`;
  const allTenants = `current_setting('app.all_tenants', true) = 'on'`;
  await knex.raw(`alter table ?? enable row level security`, [table]);
  await knex.raw(`alter table ?? force row level security`, [table]);
  await knex.raw(`create policy tenant_isolation on ?? using (${currentTenant}) with check (${currentTenant})`, [table]);
  await knex.raw(`create policy maintenance on ?? using (${allTenants}) with check (${allTenants})`, [table]);
}

export async function disableRowLevelSecurity(knex: Knex, table: string): Promise<void> {
  await knex.raw(`drop policy if exists tenant_isolation on ??`, [table]);
  await knex.raw(`drop policy if exists maintenance on ??`, [table]);
  await knex.raw(`alter table ?? no force row level security`, [table]);
  await knex.raw(`alter table ?? disable row level security`, [table]);
}
